package hub

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Ref is what the user asked for: REPO, REPO:QUANT or REPO:FILE.
type Ref struct {
	Repo  string
	Quant string // e.g. Q4_K_M; empty when File is set or nothing was chosen
	File  string // a path inside the repository ending in .gguf
}

func (r Ref) String() string {
	switch {
	case r.File != "":
		return r.Repo + ":" + r.File
	case r.Quant != "":
		return r.Repo + ":" + r.Quant
	}
	return r.Repo
}

// ParseRef parses REPO[:QUANT|FILE]. A suffix ending in .gguf is a file, anything else a quant tag.
func ParseRef(s string) (Ref, error) {
	s = strings.TrimSpace(s)
	// Accept what users paste from the browser: https://huggingface.co/owner/name[:QUANT].
	for _, prefix := range []string{"https://", "http://"} {
		if strings.HasPrefix(s, prefix) {
			rest := strings.TrimPrefix(s, prefix)
			if _, after, ok := strings.Cut(rest, "/"); ok {
				s = after
			}
		}
	}
	// A path to a local file is not a repository: pull would otherwise ask the hub for "etc/passwd".
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "~/") {
		return Ref{}, fmt.Errorf("%q is a file path, not a repository: give OWNER/REPO[:QUANT] as on Hugging Face", s)
	}
	repo, sel, _ := strings.Cut(s, ":")
	repo = strings.TrimRight(repo, "/")
	r := Ref{Repo: repo}
	if err := ValidateRepo(repo); err != nil {
		return Ref{}, err
	}
	switch {
	case sel == "":
	case strings.HasSuffix(strings.ToLower(sel), ".gguf"):
		r.File = sel
	default:
		for _, c := range sel {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
				return Ref{}, fmt.Errorf("quantization %q: invalid character %q (want a tag like Q4_K_M or a file name ending in .gguf)", sel, c)
			}
		}
		r.Quant = sel
	}
	return r, nil
}

var splitPattern = regexp.MustCompile(`^(.*)-(\d{5})-of-(\d{5})\.gguf$`)

// SplitPart reports whether name is part n (1-based) of a split GGUF of count parts, and the name
// without the part suffix.
func SplitPart(name string) (base string, n, count int, ok bool) {
	m := splitPattern.FindStringSubmatch(name)
	if m == nil {
		return "", 0, 0, false
	}
	n, _ = strconv.Atoi(m[2])
	count, _ = strconv.Atoi(m[3])
	if n < 1 || count < 1 || n > count {
		return "", 0, 0, false
	}
	return m[1], n, count, true
}

// model is one downloadable GGUF model: a single file or all parts of a split file, in order.
type model struct {
	key   string // path without the split suffix and extension
	files []RepoFile
}

func (m model) name() string { return path.Base(m.key) }

// groupModels collects the GGUF files of a listing into models (split parts together).
func groupModels(files []RepoFile) ([]model, error) {
	byKey := map[string]*model{}
	counts := map[string]int{}
	var keys []string
	for _, f := range files {
		if !strings.HasSuffix(strings.ToLower(f.Path), ".gguf") {
			continue
		}
		key := strings.TrimSuffix(f.Path, path.Ext(f.Path))
		if base, _, count, ok := SplitPart(f.Path); ok {
			key = base
			if c, seen := counts[key]; seen && c != count {
				return nil, fmt.Errorf("split model %s: parts disagree on the number of parts (%d and %d)", key, c, count)
			}
			counts[key] = count
		}
		m, ok := byKey[key]
		if !ok {
			m = &model{key: key}
			byKey[key] = m
			keys = append(keys, key)
		}
		m.files = append(m.files, f)
	}
	sort.Strings(keys)
	out := make([]model, 0, len(keys))
	for _, k := range keys {
		m := byKey[k]
		sort.Slice(m.files, func(i, j int) bool { return m.files[i].Path < m.files[j].Path })
		if want, split := counts[k]; split && len(m.files) != want {
			return nil, fmt.Errorf("split model %s: the repository has %d of its %d parts", k, len(m.files), want)
		}
		out = append(out, *m)
	}
	return out, nil
}

// hasQuantTag reports whether name contains tag as a whole token (case-insensitive): Q4_K must not
// match Q4_K_M, and Q4_K_M must not match IQ4_K_M.
func hasQuantTag(name, tag string) bool {
	name, tag = strings.ToUpper(name), strings.ToUpper(tag)
	isWord := func(b byte) bool { return b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' }
	for from := 0; ; {
		i := strings.Index(name[from:], tag)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(tag)
		if (i == 0 || !isWord(name[i-1])) && (end == len(name) || !isWord(name[end])) {
			return true
		}
		from = i + 1
	}
}

// isAuxiliary tells model files that are not language models on their own (vision projectors).
func isAuxiliary(m model) bool {
	return strings.HasPrefix(strings.ToLower(m.name()), "mmproj")
}

// SelectFiles picks the files to download for ref from a repository listing: all parts of one
// model, in part order. It explains what is available when the choice is missing or ambiguous.
func SelectFiles(files []RepoFile, ref Ref) ([]RepoFile, error) {
	models, err := groupModels(files)
	if err != nil {
		return nil, err
	}
	if ref.File != "" {
		for _, m := range models {
			for _, f := range m.files {
				if f.Path == ref.File || path.Base(f.Path) == ref.File {
					return m.files, nil // a named split part brings its siblings
				}
			}
		}
		return nil, fmt.Errorf("%s has no file %q; available: %s", ref.Repo, ref.File, describe(models))
	}
	var candidates []model
	for _, m := range models {
		if isAuxiliary(m) {
			continue
		}
		if ref.Quant == "" || hasQuantTag(m.name(), ref.Quant) {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) == 0 {
		if ref.Quant == "" {
			return nil, fmt.Errorf("%s has no GGUF files", ref.Repo)
		}
		return nil, fmt.Errorf("%s has no GGUF file for quantization %s; available: %s", ref.Repo, ref.Quant, describe(models))
	}
	if len(candidates) > 1 && ref.Quant != "" {
		// "X-Q4_K_M" and "X-UD-Q4_K_M" both carry the tag; the plain one is what the user meant.
		sort.SliceStable(candidates, func(i, j int) bool { return len(candidates[i].name()) < len(candidates[j].name()) })
		if len(candidates[0].name()) < len(candidates[1].name()) {
			candidates = candidates[:1]
		}
	}
	if len(candidates) > 1 {
		what := "a quantization"
		if ref.Quant != "" {
			what = "one file"
		}
		return nil, fmt.Errorf("%s has several models; choose %s with REPO:QUANT or REPO:FILE: %s", ref.Repo, what, describe(candidates))
	}
	return candidates[0].files, nil
}

func describe(models []model) string {
	if len(models) == 0 {
		return "no GGUF files"
	}
	names := make([]string, 0, len(models))
	for _, m := range models {
		n := m.key + ".gguf"
		if len(m.files) > 1 {
			n = fmt.Sprintf("%s (%d parts)", m.key, len(m.files))
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

// quantTags are the quantization names llama.cpp writes, longest first so that Q4_K_M wins over Q4_K.
var quantTags = []string{
	"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
	"IQ4_NL", "IQ4_XS", "Q2_K_S", "Q2_K_L", "Q2_K_XL", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q3_K_XL",
	"Q4_K_S", "Q4_K_M", "Q4_K_L", "Q4_K_XL", "Q5_K_S", "Q5_K_M", "Q5_K_L", "Q5_K_XL", "Q6_K_L", "Q6_K_XL",
	"Q8_K_XL", "TQ1_0", "TQ2_0", "MXFP4", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0",
	"Q5_1", "Q8_0", "BF16", "F16", "F32",
}

// QuantFromName guesses the quantization tag from a GGUF file name ("" if none is recognised).
func QuantFromName(name string) string {
	best := ""
	for _, t := range quantTags {
		if len(t) > len(best) && hasQuantTag(name, t) {
			best = t
		}
	}
	return best
}
