package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ModelsDir is where pulled models live: $EXPERTSNIPER_MODELS, else $XDG_DATA_HOME/expertsniper/models,
// else ~/.local/share/expertsniper/models.
func ModelsDir() (string, error) {
	if d := os.Getenv("EXPERTSNIPER_MODELS"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "expertsniper", "models"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the models directory (set EXPERTSNIPER_MODELS): %w", err)
	}
	return filepath.Join(home, ".local", "share", "expertsniper", "models"), nil
}

// LocalModel is one model in the models directory: a GGUF file, or all parts of a split one.
type LocalModel struct {
	Repo  string   // owner/name, or "" for files placed directly in the models directory
	Name  string   // file name without the split suffix, e.g. Qwen3.5-35B-A3B-Q4_K_M.gguf
	Quant string   // from the file name, "" if not recognised
	Paths []string // absolute paths; for split models all parts in order (load the first)
	Size  int64    // bytes of all parts
	// Incomplete is set when parts of a split model are missing.
	Incomplete bool
}

// Ref is how to name this model for `agent -m` and ResolveModel.
func (m LocalModel) Ref() string {
	if m.Repo == "" {
		return m.Name
	}
	return m.Repo + ":" + m.Name
}

// ListLocal lists the complete and split models under dir (a missing dir lists nothing). Files being
// downloaded (.partial) are not models yet and are skipped.
func ListLocal(dir string) ([]LocalModel, error) {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("models directory %s is not a directory (check $EXPERTSNIPER_MODELS)", dir)
	}
	var files []RepoFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() || !strings.HasSuffix(strings.ToLower(d.Name()), ".gguf") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && info.Mode()&fs.ModeSymlink == 0 {
			return nil
		}
		if st, err := os.Stat(p); err == nil {
			info = st // follow symlinks for the size
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, RepoFile{Path: filepath.ToSlash(rel), Size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list models in %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// Group by repository directory (owner/name = the first two path elements) and then as models.
	byRepo := map[string][]RepoFile{}
	for _, f := range files {
		parts := strings.SplitN(f.Path, "/", 3)
		repo, rest := "", f.Path
		if len(parts) == 3 {
			repo, rest = parts[0]+"/"+parts[1], parts[2]
		}
		byRepo[repo] = append(byRepo[repo], RepoFile{Path: rest, Size: f.Size})
	}
	var out []LocalModel
	for repo, rf := range byRepo {
		for _, m := range groupModelsLenient(rf) {
			lm := LocalModel{Repo: repo, Name: path.Base(m.key) + ".gguf", Quant: QuantFromName(path.Base(m.key))}
			for _, f := range m.files {
				lm.Paths = append(lm.Paths, filepath.Join(abs, filepath.FromSlash(repo), filepath.FromSlash(f.Path)))
				lm.Size += f.Size
			}
			if _, _, count, ok := SplitPart(m.files[0].Path); ok && count != len(m.files) {
				lm.Incomplete = true
			}
			out = append(out, lm)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref() < out[j].Ref() })
	return out, nil
}

// groupModelsLenient groups like groupModels but keeps incomplete split models (marked by the caller).
func groupModelsLenient(files []RepoFile) []model {
	byKey := map[string]*model{}
	var keys []string
	for _, f := range files {
		key := strings.TrimSuffix(f.Path, path.Ext(f.Path))
		if base, _, _, ok := SplitPart(f.Path); ok {
			key = base
		}
		if _, ok := byKey[key]; !ok {
			byKey[key] = &model{key: key}
			keys = append(keys, key)
		}
		byKey[key].files = append(byKey[key].files, f)
	}
	sort.Strings(keys)
	out := make([]model, 0, len(keys))
	for _, k := range keys {
		m := byKey[k]
		// Parts left next to their merged form (a merge whose cleanup failed) are the same model:
		// the merged file wins.
		for _, f := range m.files {
			if _, _, _, split := SplitPart(f.Path); !split && len(m.files) > 1 {
				m.files = []RepoFile{f}
				break
			}
		}
		sort.Slice(m.files, func(i, j int) bool { return m.files[i].Path < m.files[j].Path })
		out = append(out, *m)
	}
	return out
}

// ResolveModel turns what a user typed after -m into a GGUF path: an existing file, or a model in the
// models directory named as owner/name[:QUANT|FILE], name[:QUANT] or a file name. Split models resolve
// to their first part (llama.cpp finds the others next to it).
func ResolveModel(name string) (string, error) {
	dir, err := ModelsDir()
	if err != nil {
		return "", err
	}
	return ResolveModelIn(dir, name)
}

// ResolveModelIn is ResolveModel with an explicit models directory.
func ResolveModelIn(dir, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", errors.New("no model given")
	}
	if st, err := os.Stat(name); err == nil {
		if st.IsDir() {
			return "", fmt.Errorf("model %q is a directory, not a GGUF file", name)
		}
		return filepath.Abs(name)
	}
	looksLikePath := strings.HasPrefix(name, ".") || filepath.IsAbs(name) || strings.HasPrefix(name, "~")
	if looksLikePath {
		return "", fmt.Errorf("model file %q does not exist", name)
	}
	models, err := ListLocal(dir)
	if err != nil {
		return "", err
	}
	notFound := func() error {
		return fmt.Errorf("model %q: no such file, and not in %s (see `agent models`; `agent pull OWNER/REPO:QUANT` downloads one)", name, dir)
	}
	repoPart, sel, _ := strings.Cut(name, ":")
	var candidates []LocalModel
	for _, m := range models {
		if m.Incomplete {
			continue
		}
		switch {
		case m.Repo != "" && repoKey(m.Repo) == repoKey(repoPart):
		case m.Repo != "" && repoKey(path.Base(m.Repo)) == repoKey(repoPart):
		case sel == "" && (strings.EqualFold(m.Name, repoPart) || strings.EqualFold(strings.TrimSuffix(m.Name, ".gguf"), repoPart)):
		default:
			continue
		}
		candidates = append(candidates, m)
	}
	if sel != "" {
		var picked []LocalModel
		for _, m := range candidates {
			if strings.EqualFold(m.Name, sel) || hasQuantTag(strings.TrimSuffix(m.Name, ".gguf"), sel) {
				picked = append(picked, m)
				continue
			}
			for _, p := range m.Paths {
				if strings.EqualFold(filepath.Base(p), sel) {
					picked = append(picked, m)
					break
				}
			}
		}
		candidates = picked
	}
	if len(candidates) > 1 {
		// As in SelectFiles: "X-Q4_K_M" beats "X-UD-Q4_K_M" when both carry the tag.
		sort.SliceStable(candidates, func(i, j int) bool { return len(candidates[i].Name) < len(candidates[j].Name) })
		if sel != "" && len(candidates[0].Name) < len(candidates[1].Name) {
			candidates = candidates[:1]
		}
	}
	switch len(candidates) {
	case 0:
		return "", notFound()
	case 1:
		return candidates[0].Paths[0], nil
	}
	refs := make([]string, len(candidates))
	for i, m := range candidates {
		refs[i] = m.Ref()
	}
	return "", fmt.Errorf("model %q is ambiguous; name one of: %s", name, strings.Join(refs, ", "))
}

// repoKey is how a repository name compares: without case, and without the "-GGUF" suffix that
// GGUF repositories conventionally carry, so "Qwen3.5-35B-A3B" names "unsloth/Qwen3.5-35B-A3B-GGUF".
func repoKey(name string) string {
	k := strings.ToLower(name)
	return strings.TrimSuffix(k, "-gguf")
}

// PartialDownload is a download that stopped before completing; `agent pull` resumes it.
type PartialDownload struct {
	Repo string // owner/name, "" if directly in the models directory
	File string // path inside the repository
	Have int64  // bytes on disk
	Size int64  // bytes in all (0 if unknown)
}

// ListPartial lists the unfinished downloads under dir.
func ListPartial(dir string) ([]PartialDownload, error) {
	var out []PartialDownload
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".gguf"+PartialSuffix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, strings.TrimSuffix(p, PartialSuffix))
		if err != nil {
			return err
		}
		pd := PartialDownload{File: filepath.ToSlash(rel), Have: info.Size()}
		if parts := strings.SplitN(pd.File, "/", 3); len(parts) == 3 {
			pd.Repo, pd.File = parts[0]+"/"+parts[1], parts[2]
		}
		var meta partialMeta
		if b, err := os.ReadFile(p + ".json"); err == nil && json.Unmarshal(b, &meta) == nil {
			pd.Size = meta.Size
		}
		out = append(out, pd)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list downloads in %s: %w", dir, err)
	}
	return out, nil
}
