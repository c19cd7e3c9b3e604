package hub

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingProgress keeps the calls a download made, for assertions.
type recordingProgress struct {
	starts  []int64 // have at Start
	added   int64
	resets  int
	retries []string
	done    []error
}

func (p *recordingProgress) Start(_ string, _, have int64) { p.starts = append(p.starts, have) }
func (p *recordingProgress) Add(n int64)                   { p.added += n }
func (p *recordingProgress) Reset(int64)                   { p.resets++ }
func (p *recordingProgress) Retry(err error, _ time.Duration) {
	p.retries = append(p.retries, err.Error())
}
func (p *recordingProgress) Done(err error) { p.done = append(p.done, err) }

func pull(t *testing.T, c *Client, ref, dir string) ([]string, *recordingProgress, error) {
	t.Helper()
	r, err := ParseRef(ref)
	if err != nil {
		t.Fatalf("ParseRef(%q): %v", ref, err)
	}
	rec := &recordingProgress{}
	paths, err := c.Pull(context.Background(), r, dir, func() Progress { return rec })
	return paths, rec, err
}

func assertFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs from the hub's (%d bytes, want %d)", path, len(got), len(want))
	}
}

func assertNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), PartialSuffix) {
			t.Errorf("leftover %s", p)
		}
		return nil
	})
}

func TestPullFollowsRedirectAndVerifiesSHA256(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(1, 300_000)
	h.addRepo("org/Tiny-GGUF", false, map[string]fakeFile{
		"Tiny-Q4_K_M.gguf": {content: model, lfs: true},
		"Tiny-Q8_0.gguf":   {content: randomBytes(2, 1000), lfs: true},
		"README.md":        {content: []byte("# tiny\n")},
	})
	dir := t.TempDir()
	paths, rec, err := pull(t, h.client(), "org/Tiny-GGUF:q4_k_m", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "org", "Tiny-GGUF", "Tiny-Q4_K_M.gguf")
	if len(paths) != 1 || paths[0] != want {
		t.Fatalf("paths = %v, want [%s]", paths, want)
	}
	assertFile(t, want, model)
	assertNoLeftovers(t, dir)
	if rec.added != int64(len(model)) || len(rec.done) != 1 || rec.done[0] != nil {
		t.Fatalf("progress: added %d of %d, done %v", rec.added, len(model), rec.done)
	}
	if _, err := os.Stat(filepath.Join(dir, "org", "Tiny-GGUF", "Tiny-Q8_0.gguf")); err == nil {
		t.Fatal("the other quantization was downloaded too")
	}
	// A second pull finds the file complete and downloads nothing.
	h.ranges = nil
	if _, rec, err = pull(t, h.client(), "org/Tiny-GGUF:Q4_K_M", dir); err != nil {
		t.Fatal(err)
	}
	if len(h.ranges) != 0 || rec.added != 0 {
		t.Fatalf("second pull requested %v and added %d bytes", h.ranges, rec.added)
	}
}

func TestPullResumesAfterDroppedConnections(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(3, 1_000_000)
	f := fakeFile{content: model, lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": f})
	// Three drops in a row, each after some progress: more than Attempts (4) would allow without the
	// progress rule, so this also checks that a connection that keeps delivering is not given up on.
	h.dropAfter[f.sha256()] = []int64{300_000, 200_000, 100_000, 100_000, 100_000}
	dir := t.TempDir()
	paths, rec, err := pull(t, h.client(), "org/M:Q4_0", dir)
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], model)
	assertNoLeftovers(t, dir)
	wantRanges := []string{"M-Q4_0.gguf ", "M-Q4_0.gguf bytes=300000-", "M-Q4_0.gguf bytes=500000-",
		"M-Q4_0.gguf bytes=600000-", "M-Q4_0.gguf bytes=700000-", "M-Q4_0.gguf bytes=800000-"}
	if strings.Join(h.ranges, "|") != strings.Join(wantRanges, "|") {
		t.Fatalf("requests:\n%v\nwant\n%v", h.ranges, wantRanges)
	}
	if len(rec.retries) != 5 {
		t.Fatalf("retries reported: %v", rec.retries)
	}
}

func TestPullResumesPartialFileOfEarlierRun(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(4, 500_000)
	f := fakeFile{content: model, lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q8_0.gguf": f})
	dir := t.TempDir()
	// The first run is cancelled by the user halfway.
	h.stall[f.sha256()] = 1
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recordingProgress{}
	go func() {
		for {
			st, err := os.Stat(filepath.Join(dir, "org", "M", "M-Q8_0.gguf.partial"))
			if err == nil && st.Size() > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := h.client().Pull(ctx, Ref{Repo: "org/M", Quant: "Q8_0"}, dir, func() Progress { return rec })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: err = %v, want context.Canceled", err)
	}
	dest := filepath.Join(dir, "org", "M", "M-Q8_0.gguf")
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("a cancelled download left a file under the final name")
	}
	st, err := os.Stat(dest + PartialSuffix)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no partial file kept after cancel: %v", err)
	}
	partial, err := ListPartial(dir)
	if err != nil || len(partial) != 1 || partial[0] != (PartialDownload{Repo: "org/M", File: "M-Q8_0.gguf", Have: st.Size(), Size: int64(len(model))}) {
		t.Fatalf("ListPartial = %+v, %v", partial, err)
	}
	// The second run asks only for the rest.
	h.ranges = nil
	paths, rec, err := pull(t, h.client(), "org/M:Q8_0", dir)
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], model)
	if len(rec.starts) != 1 || rec.starts[0] != st.Size() {
		t.Fatalf("second run started at %v, want %d", rec.starts, st.Size())
	}
	if len(h.ranges) != 1 || h.ranges[0] != "M-Q8_0.gguf bytes="+itoa(st.Size())+"-" {
		t.Fatalf("second run requested %v", h.ranges)
	}
	assertNoLeftovers(t, dir)
}

func TestServerIgnoringRangeRestartsCleanly(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(5, 400_000)
	f := fakeFile{content: model, lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-F16.gguf": f})
	h.dropAfter[f.sha256()] = []int64{150_000}
	h.ignoreRange[f.sha256()] = true
	dir := t.TempDir()
	paths, rec, err := pull(t, h.client(), "org/M:F16", dir)
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], model)
	if rec.resets != 1 {
		t.Fatalf("resets = %d, want 1 (a 200 to a Range request starts over)", rec.resets)
	}
}

func TestPartialOfAnotherVersionIsDiscarded(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(6, 200_000)
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": {content: model, lfs: true}})
	dir := t.TempDir()
	dest := filepath.Join(dir, "org", "M", "M-Q4_0.gguf")
	os.MkdirAll(filepath.Dir(dest), 0o755)
	// Bytes of an older upload of the same name, with its metadata.
	os.WriteFile(dest+PartialSuffix, randomBytes(7, 100_000), 0o644)
	os.WriteFile(dest+PartialSuffix+".json", []byte(`{"sha256":"`+strings.Repeat("0", 64)+`","size":200000}`), 0o644)
	paths, _, err := pull(t, h.client(), "org/M", dir)
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], model)
	if h.ranges[0] != "M-Q4_0.gguf " {
		t.Fatalf("resumed a partial file of another version: %v", h.ranges)
	}
}

func TestChecksumMismatchLeavesNoFile(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(8, 100_000)
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": {content: model, lfs: true, corrupt: true}})
	dir := t.TempDir()
	_, _, err := pull(t, h.client(), "org/M:Q4_0", dir)
	var ce *ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a ChecksumError", err)
	}
	damaged := bytes.Clone(model)
	damaged[len(damaged)/2] ^= 0xff
	if ce.Want != (fakeFile{content: model}).sha256() || ce.Got != (fakeFile{content: damaged}).sha256() {
		t.Fatalf("checksum error %+v", ce)
	}
	if !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("message %q does not say what failed", err)
	}
	dest := filepath.Join(dir, "org", "M", "M-Q4_0.gguf")
	for _, p := range []string{dest, dest + PartialSuffix, dest + PartialSuffix + ".json"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists after a checksum mismatch", p)
		}
	}
}

func TestFileReplacedOnHubIsRefused(t *testing.T) {
	h := newFakeHub(t)
	f := fakeFile{content: randomBytes(9, 10_000), lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": f})
	h.changed[f.sha256()] = strings.Repeat("cd", 32)
	_, _, err := pull(t, h.client(), "org/M", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "the file changed") {
		t.Fatalf("err = %v, want a refusal naming the changed file", err)
	}
}

func TestSmallNonLFSFileVerifiedByGitOID(t *testing.T) {
	h := newFakeHub(t)
	content := append(append([]byte(nil), emptyGGUFHeader...), "small enough to live in git"...)
	h.addRepo("org/Small", false, map[string]fakeFile{"small.gguf": {content: content}})
	dir := t.TempDir()
	paths, _, err := pull(t, h.client(), "org/Small:small.gguf", dir)
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], content)
}

func TestSplitModelDownloadsAllParts(t *testing.T) {
	h := newFakeHub(t)
	parts := [][]byte{randomBytes(10, 70_000), randomBytes(11, 60_000), randomBytes(12, 5_000)}
	h.addRepo("org/Big-GGUF", false, map[string]fakeFile{
		"Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf": {content: parts[0], lfs: true},
		"Q4_K_M/Big-Q4_K_M-00002-of-00003.gguf": {content: parts[1], lfs: true},
		"Q4_K_M/Big-Q4_K_M-00003-of-00003.gguf": {content: parts[2], lfs: true},
		"Big-Q8_0.gguf":                         {content: randomBytes(13, 100), lfs: true},
		"mmproj-Big-F16.gguf":                   {content: randomBytes(14, 100), lfs: true},
	})
	h.dropAfter[(fakeFile{content: parts[1]}).sha256()] = []int64{30_000}
	dir := t.TempDir()
	paths, _, err := pull(t, h.client(), "org/Big-GGUF:Q4_K_M", dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("paths = %v, want 3 parts", paths)
	}
	for i, p := range paths {
		if want := filepath.Join(dir, "org", "Big-GGUF", "Q4_K_M", "Big-Q4_K_M-0000"+itoa(int64(i+1))+"-of-00003.gguf"); p != want {
			t.Fatalf("part %d at %s, want %s", i, p, want)
		}
		assertFile(t, p, parts[i])
	}
	// Naming one part brings the whole model.
	dir2 := t.TempDir()
	paths, _, err = pull(t, h.client(), "org/Big-GGUF:Big-Q4_K_M-00002-of-00003.gguf", dir2)
	if err != nil || len(paths) != 3 {
		t.Fatalf("pull by part name: %v, %v", paths, err)
	}
	// The models list sees one complete model, and ResolveModel gives its first part.
	models, err := ListLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 1 || models[0].Size != 135_000 || models[0].Quant != "Q4_K_M" || models[0].Incomplete ||
		models[0].Name != "Big-Q4_K_M.gguf" {
		t.Fatalf("ListLocal = %+v", models)
	}
	got, err := ResolveModelIn(dir, "org/Big-GGUF:Q4_K_M")
	if err != nil || got != paths[0] && got != filepath.Join(dir, "org", "Big-GGUF", "Q4_K_M", "Big-Q4_K_M-00001-of-00003.gguf") {
		t.Fatalf("ResolveModel = %q, %v", got, err)
	}
}

func TestErrorsAreClear(t *testing.T) {
	h := newFakeHub(t)
	h.addRepo("org/Private", true, map[string]fakeFile{"P-Q4_0.gguf": {content: randomBytes(15, 1000), lfs: true}})
	h.addRepo("org/Public", false, map[string]fakeFile{"P-Q4_0.gguf": {content: randomBytes(16, 1000), lfs: true}})

	t.Run("unknown repository", func(t *testing.T) {
		_, _, err := pull(t, h.client(), "org/Nope", t.TempDir())
		if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "no repository org/Nope on "+h.server.URL) ||
			!strings.Contains(err.Error(), "HF_TOKEN") || strings.Contains(err.Error(), "/api/") {
			t.Fatalf("err = %v; want the repository's name and the endpoint, not the API's URL", err)
		}
	})
	t.Run("private repository without token", func(t *testing.T) {
		_, _, err := pull(t, h.client(), "org/Private", t.TempDir())
		if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "HTTP 401") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("private repository with HF_TOKEN", func(t *testing.T) {
		t.Setenv("HF_TOKEN", "secret")
		t.Setenv("HF_ENDPOINT", h.server.URL)
		c := NewClientFromEnv()
		c.Backoff = time.Millisecond
		if _, _, err := pull(t, c, "org/Private:Q4_0", t.TempDir()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown quantization", func(t *testing.T) {
		_, _, err := pull(t, h.client(), "org/Public:Q5_K_M", t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "no GGUF file for quantization Q5_K_M; available: P-Q4_0.gguf") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("file missing on the hub (404)", func(t *testing.T) {
		c := h.client()
		dir := t.TempDir()
		err := c.DownloadFile(context.Background(), "org/Public", RepoFile{Path: "gone.gguf", Size: 10, SHA256: strings.Repeat("0", 64)},
			filepath.Join(dir, "gone.gguf"), nil)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "gone.gguf") {
			t.Fatalf("err = %v", err)
		}
		assertNoLeftovers(t, dir)
	})
	t.Run("server errors are retried a bounded number of times", func(t *testing.T) {
		f := h.repos["org/Public"].files["P-Q4_0.gguf"]
		h.status[f.sha256()] = []int{503, 502}
		dir := t.TempDir()
		paths, rec, err := pull(t, h.client(), "org/Public", dir)
		if err != nil {
			t.Fatal(err)
		}
		assertFile(t, paths[0], f.content)
		if len(rec.retries) != 2 {
			t.Fatalf("retries = %v", rec.retries)
		}
		h.status[f.sha256()] = []int{503, 503, 503, 503, 503}
		_, _, err = pull(t, h.client(), "org/Public", t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "gave up after 4 attempts") || !strings.Contains(err.Error(), "HTTP 503") {
			t.Fatalf("err = %v", err)
		}
		h.status[f.sha256()] = nil
	})
}

func TestTokenIsSent(t *testing.T) {
	h := newFakeHub(t)
	h.addRepo("org/Private", true, map[string]fakeFile{"P-Q4_0.gguf": {content: randomBytes(17, 1000), lfs: true}})
	c := h.client()
	c.Token = "secret"
	if _, _, err := pull(t, c, "org/Private", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, a := range h.auths {
		if a != "Bearer secret" {
			t.Fatalf("a request went out with Authorization %q", a)
		}
	}
}

func TestLocalPathRejectsEscapes(t *testing.T) {
	for _, p := range []string{"../x.gguf", "a/../../x.gguf", "/etc/x.gguf", `a\..\x.gguf`, "a//b.gguf", "./x.gguf", ""} {
		if _, err := LocalPath("/models", "org/M", RepoFile{Path: p}); err == nil {
			t.Errorf("LocalPath accepted %q", p)
		}
	}
	got, err := LocalPath("/models", "org/M", RepoFile{Path: "Q4/x.gguf"})
	if err != nil || got != filepath.Join("/models", "org", "M", "Q4", "x.gguf") {
		t.Fatalf("LocalPath = %q, %v", got, err)
	}
}

func itoa(n int64) string { return strconvItoa(n) }

func strconvItoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestStalledConnectionIsRetried(t *testing.T) {
	h := newFakeHub(t)
	model := randomBytes(21, 300_000)
	f := fakeFile{content: model, lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": f})
	h.stall[f.sha256()] = 1 // sends 1 KiB, then nothing
	c := h.client()
	c.StallTimeout = time.Second // long enough that a loaded machine's first 1 KiB arrives in time
	r, _ := ParseRef("org/M")
	rec := &recordingProgress{}
	paths, err := c.Pull(context.Background(), r, t.TempDir(), func() Progress { return rec })
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], model)
	if len(rec.retries) != 1 || !strings.Contains(rec.retries[0], "no data for 1s") {
		t.Fatalf("retries = %v", rec.retries)
	}
	if len(h.ranges) != 2 || h.ranges[1] != "M-Q4_0.gguf bytes=1024-" {
		t.Fatalf("requests = %v, want a resume at 1024", h.ranges)
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	h := newFakeHub(t)
	f := fakeFile{content: randomBytes(22, 5000), lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": f})
	h.status[f.sha256()] = []int{429}
	start := time.Now()
	paths, rec, err := pull(t, h.client(), "org/M", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, paths[0], f.content)
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %s, the server asked for 1s", waited)
	}
	if len(rec.retries) != 1 || !strings.Contains(rec.retries[0], "HTTP 429") {
		t.Fatalf("retries = %v", rec.retries)
	}
}

// TestPermanentNetworkErrorsFailAtOnce: a refused connection, a host name that does not resolve and a
// URL that is not http(s) are not retried (they were, silently, for half a minute).
func TestPermanentNetworkErrorsFailAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	for name, endpoint := range map[string]string{
		"refused":    refused,
		"no scheme":  "127.0.0.1:1",
		"bad scheme": "ftp://example.invalid",
		"no host":    "http://nosuchhost.invalid",
	} {
		t.Run(name, func(t *testing.T) {
			c := NewClient(endpoint, "")
			c.Backoff, c.MaxBackoff = time.Second, time.Second // a retry would show in the time taken
			retries := 0
			c.OnRetry = func(error, time.Duration) { retries++ }
			start := time.Now()
			_, err := c.ListFiles(context.Background(), "org/M")
			if err == nil || retries != 0 {
				t.Fatalf("err = %v after %d retries", err, retries)
			}
			if el := time.Since(start); el > 20*time.Second {
				t.Fatalf("took %s: %v", el, err)
			}
			t.Logf("%s", err)
		})
	}
	if err := CheckEndpoint("127.0.0.1:8080"); err == nil || !strings.Contains(err.Error(), "HF_ENDPOINT") {
		t.Fatalf("CheckEndpoint(127.0.0.1:8080) = %v", err)
	}
	if err := CheckEndpoint("https://huggingface.co"); err != nil {
		t.Fatal(err)
	}
}

// TestStalledHubTimesOutAndSaysSo: a hub that accepts the connection and never answers ends in an
// error after its response timeout (60 s by default; shortened here).
func TestStalledHubTimesOutAndSaysSo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	c := NewClient("http://"+ln.Addr().String(), "")
	c.HTTP.Transport.(*http.Transport).ResponseHeaderTimeout = 200 * time.Millisecond
	c.Backoff, c.MaxBackoff, c.Attempts = time.Millisecond, time.Millisecond, 3
	var retries []string
	c.OnRetry = func(err error, _ time.Duration) { retries = append(retries, err.Error()) }
	start := time.Now()
	_, err = c.ListFiles(context.Background(), "org/M")
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("err = %v", err)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("took %s", el)
	}
	// A server that does not answer within the timeout is not asked again and again: the user hears
	// about it after one timeout, not after Attempts of them.
	if len(retries) != 0 {
		t.Fatalf("retries: %q", retries)
	}
}

// TestDownloadedGGUFIsValidatedBeforeItIsReady: random bytes named .gguf, checksum and all, are not a
// model: the pull fails and leaves nothing.
func TestDownloadedGGUFIsValidatedBeforeItIsReady(t *testing.T) {
	h := newFakeHub(t)
	junk := randomBytes(21, 5000)
	copy(junk, "NOPE")
	h.addRepo("org/Junk-GGUF", false, map[string]fakeFile{"Junk-Q4_0.gguf": {content: junk, lfs: true}})
	dir := t.TempDir()
	_, _, err := pull(t, h.client(), "org/Junk-GGUF:Q4_0", dir)
	if err == nil || !strings.Contains(err.Error(), "not a valid GGUF model") {
		t.Fatalf("err = %v", err)
	}
	assertNoLeftovers(t, dir)
}
