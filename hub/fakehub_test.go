package hub

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHub behaves like the Hugging Face Hub's file endpoints: a paginated tree API, resolve URLs
// that redirect LFS files to a CDN path (with X-Linked-Etag / X-Linked-Size), and a CDN that honours
// Range. Faults are injected per CDN path.
type fakeHub struct {
	t      *testing.T
	server *httptest.Server

	mu       sync.Mutex
	repos    map[string]*fakeRepo
	pageSize int
	// per blob sha256: faults applied to the next requests
	dropAfter   map[string][]int64 // each request to the blob pops one value: close the connection after that many bytes
	ignoreRange map[string]bool    // answer Range requests with the whole file (200)
	status      map[string][]int   // each request pops one status code to answer with instead
	stall       map[string]int     // the next n requests send a little, then wait for the client to give up
	changed     map[string]string  // X-Linked-Etag to announce instead of the real one
	// what the fake saw
	ranges []string // "path range" per resolve request
	auths  []string
}

type fakeRepo struct {
	private bool // needs the token "secret"
	files   map[string]fakeFile
}

type fakeFile struct {
	content []byte
	lfs     bool
	// corrupt makes the CDN flip a byte in the middle: bytes damaged in transit or storage.
	corrupt bool
}

func (f fakeFile) sha256() string {
	s := sha256.Sum256(f.content)
	return hex.EncodeToString(s[:])
}

func (f fakeFile) gitOID() string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(f.content))
	h.Write(f.content)
	return hex.EncodeToString(h.Sum(nil))
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, repos: map[string]*fakeRepo{}, pageSize: 2,
		dropAfter: map[string][]int64{}, ignoreRange: map[string]bool{}, status: map[string][]int{},
		stall: map[string]int{}, changed: map[string]string{}}
	h.server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.server.Close)
	return h
}

// randomBytes is n bytes of file content for the fake hub. Files named .gguf must parse as GGUF before
// a pull calls them ready, so the content starts with a valid GGUF v3 header (no tensors, no metadata)
// when n allows; the rest is random.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if n >= len(emptyGGUFHeader) {
		copy(b, emptyGGUFHeader)
	}
	return b
}

// emptyGGUFHeader is "GGUF", version 3, 0 tensors, 0 metadata entries.
var emptyGGUFHeader = []byte{'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

func (h *fakeHub) addRepo(name string, private bool, files map[string]fakeFile) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.repos[name] = &fakeRepo{private: private, files: files}
}

func (h *fakeHub) client() *Client {
	c := NewClient(h.server.URL, "")
	c.Backoff = time.Millisecond
	c.MaxBackoff = 5 * time.Millisecond
	c.Attempts = 4
	return c
}

func (h *fakeHub) blob(sha string) (fakeFile, bool) {
	for _, r := range h.repos {
		for _, f := range r.files {
			if f.sha256() == sha {
				return f, true
			}
		}
	}
	return fakeFile{}, false
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.auths = append(h.auths, r.Header.Get("Authorization"))
	h.mu.Unlock()
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/models/"):
		h.serveTree(w, r, strings.TrimPrefix(p, "/api/models/"))
	case strings.HasPrefix(p, "/cdn/"):
		h.serveCDN(w, r, strings.TrimPrefix(p, "/cdn/"))
	default:
		h.serveResolve(w, r, strings.TrimPrefix(p, "/"))
	}
}

// repoFor finds the repository of a path "owner/name/..." and checks access like the hub does:
// unknown and private-without-token both answer 401 with X-Error-Code RepoNotFound.
func (h *fakeHub) repoFor(w http.ResponseWriter, r *http.Request, p string) (*fakeRepo, string, string, bool) {
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 3 {
		http.Error(w, `{"error":"bad path"}`, http.StatusBadRequest)
		return nil, "", "", false
	}
	name := parts[0] + "/" + parts[1]
	h.mu.Lock()
	repo := h.repos[name]
	h.mu.Unlock()
	if repo == nil || (repo.private && r.Header.Get("Authorization") != "Bearer secret") {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		w.Header().Set("X-Error-Message", "Repository not found")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"Repository not found"}`)
		return nil, "", "", false
	}
	return repo, name, parts[2], true
}

func (h *fakeHub) serveTree(w http.ResponseWriter, r *http.Request, p string) {
	repo, _, rest, ok := h.repoFor(w, r, p)
	if !ok {
		return
	}
	if rest != "tree/main" || r.URL.Query().Get("recursive") != "true" {
		http.Error(w, `{"error":"unexpected tree request"}`, http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	var paths []string
	for path := range repo.files {
		paths = append(paths, path)
	}
	h.mu.Unlock()
	sort.Strings(paths)
	// Folders appear in recursive listings too; the client must skip them.
	type lfs struct {
		OID         string `json:"oid"`
		Size        int    `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type entry struct {
		Type string `json:"type"`
		OID  string `json:"oid"`
		Size int    `json:"size"`
		Path string `json:"path"`
		LFS  *lfs   `json:"lfs,omitempty"`
	}
	all := []entry{{Type: "directory", OID: strings.Repeat("d", 40), Path: "sub"}}
	for _, path := range paths {
		f := repo.files[path]
		e := entry{Type: "file", OID: f.gitOID(), Size: len(f.content), Path: path}
		if f.lfs {
			sha := f.sha256()
			e.OID = strings.Repeat("a", 40) // the pointer file's blob id
			e.Size = len(f.content)
			e.LFS = &lfs{OID: sha, Size: len(f.content), PointerSize: 134}
		}
		all = append(all, e)
	}
	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	end := min(cursor+h.pageSize, len(all))
	if end < len(all) {
		next := *r.URL
		q := next.Query()
		q.Set("cursor", strconv.Itoa(end))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, h.server.URL, next.RequestURI()))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(all[cursor:end])
}

func (h *fakeHub) serveResolve(w http.ResponseWriter, r *http.Request, p string) {
	repo, name, rest, ok := h.repoFor(w, r, p)
	if !ok {
		return
	}
	file, found := strings.CutPrefix(rest, "resolve/main/")
	h.mu.Lock()
	f, exists := repo.files[file]
	h.ranges = append(h.ranges, file+" "+r.Header.Get("Range"))
	h.mu.Unlock()
	if !found || !exists {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		w.Header().Set("X-Error-Message", "Entry not found")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if !f.lfs {
		w.Header().Set("ETag", `"`+f.gitOID()+`"`)
		http.ServeContent(w, r, file, time.Time{}, bytes.NewReader(f.content))
		return
	}
	sha := f.sha256()
	h.mu.Lock()
	announced := sha
	if c := h.changed[sha]; c != "" {
		announced = c
	}
	h.mu.Unlock()
	w.Header().Set("X-Linked-Etag", `"`+announced+`"`)
	w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.content)))
	w.Header().Set("X-Repo-Commit", strings.Repeat("c", 40))
	w.Header().Set("Location", "/cdn/"+sha+"?repo="+name)
	w.WriteHeader(http.StatusFound)
}

func (h *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request, sha string) {
	h.mu.Lock()
	f, ok := h.blob(sha)
	var status int
	if s := h.status[sha]; len(s) > 0 {
		status, h.status[sha] = s[0], s[1:]
	}
	drop := int64(-1)
	if d := h.dropAfter[sha]; len(d) > 0 {
		drop, h.dropAfter[sha] = d[0], d[1:]
	}
	ignoreRange, stall := h.ignoreRange[sha], h.stall[sha] > 0
	if stall {
		h.stall[sha]--
	}
	h.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if status != 0 {
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		return
	}
	content := f.content
	if f.corrupt {
		content = bytes.Clone(content)
		content[len(content)/2] ^= 0xff
	}
	start := int64(0)
	if rng := r.Header.Get("Range"); rng != "" && !ignoreRange {
		v, ok := strings.CutPrefix(rng, "bytes=")
		s, _, ok2 := strings.Cut(v, "-")
		n, err := strconv.ParseInt(s, 10, 64)
		if !ok || !ok2 || err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= int64(len(content)) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(content)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(content)-1, len(content)))
		w.Header().Set("Content-Length", strconv.Itoa(len(content)-int(n)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.Header().Set("ETag", `"cdn-`+sha[:8]+`"`)
		w.WriteHeader(http.StatusOK)
	}
	body := content[start:]
	if stall {
		w.Write(body[:min(len(body), 1024)])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	if drop >= 0 && drop < int64(len(body)) {
		// A connection dropped mid-file: send some bytes, then cut the TCP connection.
		w.Write(body[:drop])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			h.t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	w.Write(body)
}
