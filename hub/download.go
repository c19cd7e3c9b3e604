package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/diskspace"
	"github.com/expertsniper/expertsniper/gguf"
)

// PartialSuffix marks a download in progress; the file gets its final name only once verified.
const PartialSuffix = ".partial"

// ChecksumError means the downloaded bytes do not match the hub's metadata. Nothing is left under
// the final name, and the partial file is removed so that the next attempt starts clean.
type ChecksumError struct {
	File      string
	Algorithm string // "sha256" (LFS) or "git-sha1" (small files)
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s: %s mismatch: the hub says %s, the download has %s (removed; run pull again)",
		e.File, e.Algorithm, e.Want, e.Got)
}

// Progress receives the progress of one file. Implementations need not be safe for concurrent use.
type Progress interface {
	// Start is called once per file; have bytes are already on disk from an earlier attempt.
	Start(file string, total, have int64)
	// Add reports n more bytes written.
	Add(n int64)
	// Reset says that the download starts over at have bytes (the server ignored a Range request).
	Reset(have int64)
	// Retry says that an attempt failed and another follows after wait.
	Retry(err error, wait time.Duration)
	// Done is called when the file is complete and verified (or failed for good: err != nil).
	Done(err error)
}

// partialMeta sits next to a partial file and records which blob the bytes belong to, so that a
// resume never appends bytes of a newer version of the file to an older one.
type partialMeta struct {
	SHA256 string `json:"sha256,omitempty"`
	GitOID string `json:"git_oid,omitempty"`
	Size   int64  `json:"size"`
}

// LocalPath is where file f of repo lands under dir. It rejects paths that would leave dir.
func LocalPath(dir, repo string, f RepoFile) (string, error) {
	if err := ValidateRepo(repo); err != nil {
		return "", err
	}
	p := f.Path
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, `\`) || path.Clean(p) != p {
		return "", fmt.Errorf("%s: unsafe file path %q in the listing", repo, p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." || part == "." || part == "" {
			return "", fmt.Errorf("%s: unsafe file path %q in the listing", repo, p)
		}
	}
	return filepath.Join(dir, filepath.FromSlash(repo), filepath.FromSlash(p)), nil
}

// ResolveURL is where the hub serves the content of a file.
func (c *Client) ResolveURL(repo, file string) string {
	parts := strings.Split(file, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return fmt.Sprintf("%s/%s/resolve/%s/%s", c.Endpoint, repo, Revision, strings.Join(parts, "/"))
}

// Pull downloads the model ref names into dir and returns the local paths of its files (all parts
// of a split model, in order). Files already complete are kept; partial ones are resumed.
func (c *Client) Pull(ctx context.Context, ref Ref, dir string, progress func() Progress) ([]string, error) {
	files, err := c.ListFiles(ctx, ref.Repo)
	if err != nil {
		return nil, err
	}
	chosen, err := SelectFiles(files, ref)
	if err != nil {
		return nil, err
	}
	var dests []string
	var missing int64
	if len(chosen) > 1 {
		// A split model merged by an earlier pull (see MergeSplit) is complete: nothing to fetch.
		if first, err := LocalPath(dir, ref.Repo, chosen[0]); err == nil {
			if merged := MergedPath(first); merged != "" {
				if st, err := os.Stat(merged); err == nil && st.Mode().IsRegular() && st.Size() > 0 {
					return []string{merged}, nil
				}
			}
		}
	}
	for _, f := range chosen {
		dest, err := LocalPath(dir, ref.Repo, f)
		if err != nil {
			return nil, err
		}
		dests = append(dests, dest)
		if st, err := os.Stat(dest); err == nil && st.Size() == f.Size {
			continue
		}
		missing += f.Size
		if st, err := os.Stat(dest + PartialSuffix); err == nil && st.Size() <= f.Size {
			missing -= st.Size()
		}
	}
	if len(dests) > 0 {
		if err := os.MkdirAll(filepath.Dir(dests[0]), 0o755); err != nil {
			return nil, fmt.Errorf("create models directory: %w", err)
		}
		if free, err := diskspace.Free(filepath.Dir(dests[0])); err == nil && free < uint64(missing) {
			return nil, fmt.Errorf("not enough disk space in %s: the download needs %s more, %s is free",
				filepath.Dir(dests[0]), bytesize.Format(missing), bytesize.Format(int64(free)))
		}
	}
	for i, f := range chosen {
		var p Progress = nopProgress{}
		if progress != nil {
			p = progress()
		}
		if err := c.DownloadFile(ctx, ref.Repo, f, dests[i], p); err != nil {
			return nil, err
		}
	}
	return dests, nil
}

// DownloadFile downloads one file to dest, resuming dest+".partial" if it holds an earlier attempt,
// verifies it against the listing's checksum and size, and only then renames it to dest. If dest
// already exists with the right size it is kept.
func (c *Client) DownloadFile(ctx context.Context, repo string, f RepoFile, dest string, p Progress) (err error) {
	if p == nil {
		p = nopProgress{}
	}
	defer func() { p.Done(err) }()
	if st, err := os.Stat(dest); err == nil && st.Mode().IsRegular() && st.Size() == f.Size {
		p.Start(f.Path, f.Size, f.Size)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("download %s: %w", f.Path, err)
	}
	d := &fileDownload{client: c, repo: repo, file: f, dest: dest, partial: dest + PartialSuffix, progress: p}
	return d.run(ctx)
}

type fileDownload struct {
	client   *Client
	repo     string
	file     RepoFile
	dest     string
	partial  string
	progress Progress

	out    *os.File
	onData func() // called whenever bytes arrive (feeds the stall watchdog)
	hasher hash.Hash
	hashed int64 // bytes of the partial file fed to hasher
}

func (d *fileDownload) metaPath() string { return d.partial + ".json" }

func (d *fileDownload) wantMeta() partialMeta {
	return partialMeta{SHA256: d.file.SHA256, GitOID: d.file.GitOID, Size: d.file.Size}
}

func (d *fileDownload) newHasher() hash.Hash {
	if d.file.SHA256 == "" && d.file.GitOID != "" {
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", d.file.Size)
		return h
	}
	return sha256.New()
}

func (d *fileDownload) run(ctx context.Context) (err error) {
	name := d.file.Path
	defer func() {
		// An empty partial file (e.g. after a 404) is no progress worth keeping: leave nothing behind.
		if st, serr := os.Stat(d.partial); err != nil && serr == nil && st.Size() == 0 {
			os.Remove(d.partial)
			os.Remove(d.metaPath())
		}
	}()
	// Lock before looking at the partial file: another pull of the same file may be writing it.
	out, err := os.OpenFile(d.partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("download %s: %w", name, err)
	}
	d.out = out
	defer func() {
		if d.out != nil {
			d.out.Close()
		}
	}()
	if err := lockFile(out); err != nil {
		return fmt.Errorf("download %s: %s is in use (is another pull of it running?): %w", name, d.partial, err)
	}
	// A partial file from another version of this file is worthless: start over.
	var meta partialMeta
	if b, err := os.ReadFile(d.metaPath()); err != nil || json.Unmarshal(b, &meta) != nil || meta != d.wantMeta() {
		if err := out.Truncate(0); err != nil {
			return fmt.Errorf("download %s: truncate stale %s: %w", name, d.partial, err)
		}
	}
	b, _ := json.Marshal(d.wantMeta())
	if err := os.WriteFile(d.metaPath(), b, 0o644); err != nil {
		return fmt.Errorf("download %s: %w", name, err)
	}
	have, err := d.sync()
	if err != nil {
		return err
	}
	d.progress.Start(name, d.file.Size, have)

	c := d.client
	attempts := max(c.Attempts, 1)
	wait := c.Backoff
	failures := 0
	for {
		before := d.hashed
		err := d.attempt(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("download %s: %w", name, ctx.Err())
		}
		if !isTransient(err) {
			return fmt.Errorf("download %s: %w", name, unwrapPermanent(err))
		}
		if d.hashed > before {
			// Progress was made: a flaky connection that keeps delivering should not run out of attempts.
			failures, wait = 0, c.Backoff
		}
		failures++
		if failures >= attempts {
			return fmt.Errorf("download %s: gave up after %d attempts without progress: %w", name, attempts, err)
		}
		pause := max(wait, retryAfter(err))
		d.progress.Retry(err, pause)
		select {
		case <-ctx.Done():
			return fmt.Errorf("download %s: %w", name, ctx.Err())
		case <-time.After(pause):
		}
		wait = min(wait*2, max(c.MaxBackoff, c.Backoff))
	}
	return d.finish()
}

// unwrapPermanent drops the "do not retry" mark before an error is reported.
func unwrapPermanent(err error) error {
	var p permanentError
	if errors.As(err, &p) {
		return p.err
	}
	return err
}

// sync makes the hasher cover exactly the bytes of the partial file, re-reading it if needed
// (after a start, a failed write, or a restart), and returns its size.
func (d *fileDownload) sync() (int64, error) {
	st, err := d.out.Stat()
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", d.file.Path, err)
	}
	size := st.Size()
	if size > d.file.Size {
		if err := d.out.Truncate(0); err != nil {
			return 0, fmt.Errorf("download %s: truncate %s: %w", d.file.Path, d.partial, err)
		}
		size = 0
	}
	if d.hasher != nil && d.hashed == size {
		return size, nil
	}
	d.hasher, d.hashed = d.newHasher(), 0
	if _, err := d.out.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("download %s: %w", d.file.Path, err)
	}
	n, err := io.CopyN(d.hasher, d.out, size)
	if err != nil {
		return 0, fmt.Errorf("download %s: read back %s: %w", d.file.Path, d.partial, err)
	}
	d.hashed = n
	return size, nil
}

// restart empties the partial file.
func (d *fileDownload) restart() error {
	if err := d.out.Truncate(0); err != nil {
		return permanent(fmt.Errorf("truncate %s: %w", d.partial, err))
	}
	d.hasher, d.hashed = d.newHasher(), 0
	d.progress.Reset(0)
	return nil
}

// attempt requests the missing bytes once and appends what arrives.
func (d *fileDownload) attempt(ctx context.Context) error {
	have, err := d.sync()
	if err != nil {
		return permanent(err)
	}
	if have == d.file.Size && d.file.Size > 0 {
		return nil
	}
	u := d.client.ResolveURL(d.repo, d.file.Path)
	// A connection that stops delivering without closing would hang forever: a watchdog ends the
	// attempt after StallTimeout without data, and the next attempt resumes.
	attemptCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	if st := d.client.StallTimeout; st > 0 {
		watchdog := time.AfterFunc(st, func() { stalled.Store(true); cancel() })
		defer watchdog.Stop()
		d.onData = func() { watchdog.Reset(st) }
	} else {
		d.onData = func() {}
	}
	stallErr := func(err error) error {
		if stalled.Load() && ctx.Err() == nil {
			return fmt.Errorf("no data for %s at byte %d of %d: %w", d.client.StallTimeout, d.hashed, d.file.Size, errStalled)
		}
		return err
	}
	req, err := http.NewRequestWithContext(attemptCtx, http.MethodGet, u, nil)
	if err != nil {
		return permanent(err)
	}
	d.client.authorize(req)
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	// The hub's redirect carries the blob's identity; the CDN's answer does not. Watch the hops.
	var linkedEtag, linkedSize string
	httpClient := *d.client.HTTP
	upstream := httpClient.CheckRedirect
	httpClient.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.Response != nil {
			if v := r.Response.Header.Get("X-Linked-Etag"); v != "" {
				linkedEtag = v
			}
			if v := r.Response.Header.Get("X-Linked-Size"); v != "" {
				linkedSize = v
			}
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if upstream != nil {
			return upstream(r, via)
		}
		return nil
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return stallErr(err)
	}
	defer resp.Body.Close()
	if v := resp.Header.Get("X-Linked-Etag"); v != "" && linkedEtag == "" {
		linkedEtag = v
	}
	if v := resp.Header.Get("X-Linked-Size"); v != "" && linkedSize == "" {
		linkedSize = v
	}
	if err := d.checkIdentity(linkedEtag, linkedSize); err != nil {
		return permanent(err)
	}

	switch resp.StatusCode {
	case http.StatusOK:
		if have > 0 {
			// The server ignored the Range header and sends the whole file: start over with it.
			if err := d.restart(); err != nil {
				return err
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != d.file.Size {
			return permanent(fmt.Errorf("server sends %d bytes, the listing says %d", resp.ContentLength, d.file.Size))
		}
	case http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return permanent(err)
		}
		if start != have || (total >= 0 && total != d.file.Size) {
			return permanent(fmt.Errorf("asked for bytes %d- of %d, server sent Content-Range %q",
				have, d.file.Size, resp.Header.Get("Content-Range")))
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// Our partial file does not fit the server's file (it shrank?): start over.
		if err := d.restart(); err != nil {
			return err
		}
		return fmt.Errorf("server rejected range bytes=%d-: %w", have, io.ErrUnexpectedEOF)
	default:
		return statusError(resp, u)
	}

	if _, err := d.out.Seek(d.hashed, io.SeekStart); err != nil {
		return permanent(err)
	}
	buf := make([]byte, 1<<20)
	for d.hashed < d.file.Size {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			d.onData()
			if d.hashed+int64(n) > d.file.Size {
				return permanent(fmt.Errorf("server sent more than the %d bytes the listing gives", d.file.Size))
			}
			if _, werr := d.out.Write(buf[:n]); werr != nil {
				d.hasher = nil // the file's length is now unknown to us; sync re-reads it
				return permanent(fmt.Errorf("write %s: %w", d.partial, werr))
			}
			d.hasher.Write(buf[:n])
			d.hashed += int64(n)
			d.progress.Add(int64(n))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return stallErr(fmt.Errorf("connection lost at byte %d of %d: %w", d.hashed, d.file.Size, rerr))
		}
	}
	if d.hashed < d.file.Size {
		return fmt.Errorf("connection closed at byte %d of %d: %w", d.hashed, d.file.Size, io.ErrUnexpectedEOF)
	}
	return nil
}

// checkIdentity compares the hub's X-Linked-Etag/X-Linked-Size with the listing: if the file was
// replaced between listing and download, appending would mix two versions.
func (d *fileDownload) checkIdentity(etag, size string) error {
	etag = strings.ToLower(strings.Trim(strings.TrimPrefix(strings.TrimSpace(etag), "W/"), `"`))
	if etag != "" && d.file.SHA256 != "" && isHex(etag, 64) && etag != d.file.SHA256 {
		return fmt.Errorf("the hub now serves sha256 %s, the listing said %s (the file changed; run pull again)", etag, d.file.SHA256)
	}
	if size != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(size), 10, 64)
		if err == nil && n != d.file.Size {
			return fmt.Errorf("the hub now serves %d bytes, the listing said %d (the file changed; run pull again)", n, d.file.Size)
		}
	}
	return nil
}

// finish verifies the checksum and moves the file to its final name.
func (d *fileDownload) finish() error {
	name := d.file.Path
	if d.hashed != d.file.Size {
		return fmt.Errorf("download %s: have %d bytes, want %d", name, d.hashed, d.file.Size)
	}
	got := hex.EncodeToString(d.hasher.Sum(nil))
	want, algo := d.file.SHA256, "sha256"
	if want == "" {
		want, algo = d.file.GitOID, "git-sha1"
	}
	if want != "" && got != want {
		d.out.Close()
		d.out = nil
		os.Remove(d.partial)
		os.Remove(d.metaPath())
		return &ChecksumError{File: name, Algorithm: algo, Want: want, Got: got}
	}
	if err := d.out.Sync(); err != nil {
		return fmt.Errorf("download %s: sync %s: %w", name, d.partial, err)
	}
	if err := d.out.Close(); err != nil {
		d.out = nil
		return fmt.Errorf("download %s: close %s: %w", name, d.partial, err)
	}
	d.out = nil
	// A model must be one before it gets its name: a file the hub calls .gguf that does not parse as
	// GGUF (a broken upload, an HTML error page stored as the file) is removed, not reported as ready.
	if strings.EqualFold(filepath.Ext(name), ".gguf") {
		if _, err := gguf.Open(d.partial); err != nil {
			os.Remove(d.partial)
			os.Remove(d.metaPath())
			return fmt.Errorf("download %s: the file the hub serves is not a valid GGUF model (removed): %w", name, err)
		}
	}
	if err := os.Rename(d.partial, d.dest); err != nil {
		return fmt.Errorf("download %s: %w", name, err)
	}
	os.Remove(d.metaPath())
	syncDir(filepath.Dir(d.dest))
	return nil
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync() // best effort: the rename is durable on most filesystems anyway
		f.Close()
	}
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": returned as -1).
func parseContentRange(v string) (start, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", v)
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, bad
	}
	s, e, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, bad
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, bad
	}
	if tot == "*" {
		return start, -1, nil
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	if err != nil || end >= total {
		return 0, 0, bad
	}
	return start, total, nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

type nopProgress struct{}

func (nopProgress) Start(string, int64, int64) {}
func (nopProgress) Add(int64)                  {}
func (nopProgress) Reset(int64)                {}
func (nopProgress) Retry(error, time.Duration) {}
func (nopProgress) Done(error)                 {}
