package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/expertsniper/expertsniper/remote"
	"github.com/expertsniper/expertsniper/remote/s3test"
)

func TestParseURL(t *testing.T) {
	for raw, want := range map[string]string{
		"s3://contexts":           "contexts|",
		"s3://contexts/":          "contexts|",
		"s3://my.bucket/team/a/":  "my.bucket|team/a/",
		"s3://my-bucket/x":        "my-bucket|x/",
		"s3://UPPER":              "error",
		"http://bucket/x":         "error",
		"s3://bucket/a//b":        "error",
		"s3://bucket/../x":        "error",
		"s3://":                   "error",
		"bucket":                  "error",
		"s3://user@bucket/prefix": "error",
	} {
		b, p, err := remote.ParseURL(raw)
		got := b + "|" + p
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParseURL(%q) = %q (%v), want %q", raw, got, err, want)
		}
	}
}

// fixture is a saved context on disk: random state bytes and a metadata file.
func fixture(t *testing.T, dir, name string, size int) (remote.Local, []byte) {
	t.Helper()
	state := make([]byte, size)
	rand.Read(state)
	l := remote.Local{Name: name, Model: remote.Model{Name: "tiny.gguf", Fingerprint: "f1"}, Tokens: 42,
		MetaPath: filepath.Join(dir, name+".json"), StatePath: filepath.Join(dir, name+".state")}
	if err := os.WriteFile(l.StatePath, state, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.MetaPath, []byte(`{"name":"`+name+`","prompt":"a long document"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return l, state
}

func open(t *testing.T, url string) *remote.Remote {
	t.Helper()
	r, err := remote.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	r.PartSize = remote.MinPartSize
	return r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestPushPullListRemove goes the whole way against a real S3 server: a multipart push with progress,
// the listing, a pull into a fresh directory that verifies, another model refused, removal.
func TestPushPullListRemove(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	ctx := ctxT(t)
	r := open(t, "s3://contexts/team/")
	l, state := fixture(t, t.TempDir(), "manual", 3*remote.MinPartSize+12345) // four parts

	var calls, last atomic.Int64
	m, err := r.Push(ctx, l, func(done, total int64) {
		calls.Add(1)
		last.Store(done)
		if total != int64(len(state)) || done > total {
			t.Errorf("progress %d of %d, want a total of %d", done, total, len(state))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 4 || last.Load() != int64(len(state)) || m.StateBytes != int64(len(state)) || m.Tokens != 42 {
		t.Fatalf("push: %d progress calls ending at %d; manifest %+v", calls.Load(), last.Load(), m)
	}
	// It went as a multipart upload: S3 gives such objects an ETag ending in -PARTS.
	head, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("contexts"), Key: aws.String(m.StateKey)})
	if err != nil || !strings.HasSuffix(strings.Trim(aws.ToString(head.ETag), `"`), "-4") {
		t.Fatalf("state object: %v, ETag %s (want a 4-part upload)", err, aws.ToString(head.ETag))
	}

	// A second push replaces the first: one manifest, one state object.
	if m, err = r.Push(ctx, l, nil); err != nil {
		t.Fatal(err)
	}
	if keys := objectKeys(t, srv, "team/"); len(keys) != 2 || !slices.Contains(keys, "team/manual.json") || !slices.Contains(keys, m.StateKey) {
		t.Fatalf("objects after a second push: %v (state %s)", keys, m.StateKey)
	}

	list, err := r.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "manual" || list[0].StateBytes != int64(len(state)) || list[0].Model.Name != "tiny.gguf" {
		t.Fatalf("list: %v %+v", err, list)
	}

	fresh := t.TempDir()
	part := filepath.Join(fresh, ".manual.state.part")
	got, err := r.Pull(ctx, "manual", remote.Model{Name: "tiny.gguf", Fingerprint: "f1"}, part, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(part)
	var meta bytes.Buffer
	json.Compact(&meta, got.Meta)
	if !bytes.Equal(data, state) || meta.String() != `{"name":"manual","prompt":"a long document"}` {
		t.Fatalf("pulled %d bytes (equal %v), meta %s", len(data), bytes.Equal(data, state), got.Meta)
	}

	// Another model (the fingerprint decides, whatever the names) is refused before any download.
	other := filepath.Join(t.TempDir(), ".manual.state.part")
	_, err = r.Pull(ctx, "manual", remote.Model{Name: "tiny.gguf", Fingerprint: "f2"}, other, nil)
	if !errors.Is(err, remote.ErrOtherModel) || !strings.Contains(err.Error(), `"tiny.gguf" (fingerprint f1)`) || !strings.Contains(err.Error(), "f2") {
		t.Fatalf("other model: %v", err)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("a refused pull wrote %s: %v", other, err)
	}

	if _, err := r.Pull(ctx, "nosuch", remote.Model{}, filepath.Join(fresh, ".x.part"), nil); !errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), `no context "nosuch"`) {
		t.Fatalf("missing object: %v", err)
	}
	if err := r.Remove(ctx, "manual"); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, "manual"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if list, err := r.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("list after remove: %v %+v", err, list)
	}
	if keys := objectKeys(t, srv, ""); len(keys) != 0 {
		t.Fatalf("objects left after remove: %v", keys)
	}
}

func objectKeys(t *testing.T, srv *s3test.Server, prefix string) []string {
	t.Helper()
	out, err := srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("contexts"), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// TestClearErrors: wrong keys, a missing bucket, an endpoint nobody answers on and a tampered object
// each give their own error, and a failed pull leaves nothing under its final name.
func TestClearErrors(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	ctx := ctxT(t)
	dir := t.TempDir()
	l, _ := fixture(t, dir, "doc", 1000)
	r := open(t, "s3://contexts")
	pushed, err := r.Push(ctx, l, nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("shared credentials file and AWS_ENDPOINT_URL_S3", func(t *testing.T) {
		creds := filepath.Join(t.TempDir(), "credentials")
		os.WriteFile(creds, []byte("[ci]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = "+srv.SecretKey+"\n"), 0o600)
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
		t.Setenv("AWS_PROFILE", "ci")
		t.Setenv("AWS_ENDPOINT_URL", "")
		t.Setenv("AWS_ENDPOINT_URL_S3", srv.URL) // the S3-only variable names the endpoint too
		if list, err := open(t, "s3://contexts").List(ctx); err != nil || len(list) != 1 {
			t.Fatalf("list with the keys from the shared credentials file and AWS_ENDPOINT_URL_S3: %v %+v", err, list)
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
		_, err := open(t, "s3://contexts").Push(ctx, l, nil)
		if !errors.Is(err, remote.ErrCredentials) || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") {
			t.Fatalf("push: %v", err)
		}
		_, err = open(t, "s3://contexts").List(ctx)
		if !errors.Is(err, remote.ErrCredentials) {
			t.Fatalf("list: %v", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		_, err := open(t, "s3://no-such-bucket").Push(ctx, l, nil)
		if !errors.Is(err, remote.ErrNoBucket) || !strings.Contains(err.Error(), `no bucket "no-such-bucket"`) {
			t.Fatalf("push: %v", err)
		}
		_, err = open(t, "s3://no-such-bucket").Pull(ctx, "doc", remote.Model{}, filepath.Join(t.TempDir(), "p"), nil)
		if !errors.Is(err, remote.ErrNoBucket) {
			t.Fatalf("pull: %v", err)
		}
	})
	t.Run("endpoint unreachable", func(t *testing.T) {
		t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
		_, err := open(t, "s3://contexts").List(ctx)
		if !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("list: %v", err)
		}
	})
	t.Run("tampered object", func(t *testing.T) {
		evil := bytes.Repeat([]byte{7}, 1000) // same size, other bytes
		if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("contexts"), Key: aws.String(pushed.StateKey),
			Body: bytes.NewReader(evil)}); err != nil {
			t.Fatal(err)
		}
		part := filepath.Join(t.TempDir(), ".doc.state.part")
		_, err := r.Pull(ctx, "doc", remote.Model{}, part, nil)
		if !errors.Is(err, remote.ErrCorrupt) || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("pull: %v", err)
		}
		if _, err := os.Stat(part); !os.IsNotExist(err) {
			t.Fatalf("a corrupt download is kept: %v", err)
		}
		// A damaged manifest is named as such too.
		if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("contexts"), Key: aws.String("doc.json"),
			Body: strings.NewReader("{not json")}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Pull(ctx, "doc", remote.Model{}, part, nil); !errors.Is(err, remote.ErrCorrupt) || !strings.Contains(err.Error(), "manifest") {
			t.Fatalf("pull with a damaged manifest: %v", err)
		}
	})
}

// TestInterruptedTransfers: the server killed during a push leaves the remote's previous version; a
// download cut off half-way resumes from where it stopped (a ranged GET) and verifies.
func TestInterruptedTransfers(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	ctx := ctxT(t)
	dir := t.TempDir()
	size := 6 * remote.MinPartSize
	l, state := fixture(t, dir, "big", size)

	// Through a proxy whose connections are cut once the download is a third done.
	cut := srv.Cut(t)
	t.Setenv("AWS_ENDPOINT_URL", cut.URL)
	r := open(t, "s3://contexts")
	if _, err := r.Push(ctx, l, nil); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(t.TempDir(), ".big.state.part")
	var once atomic.Bool
	_, err := r.Pull(ctx, "big", remote.Model{}, part, func(done, total int64) {
		if done > total/3 && once.CompareAndSwap(false, true) {
			cut.CutAll()
		}
	})
	if !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "pull again to resume") {
		t.Fatalf("cut pull: %v", err)
	}
	st, err := os.Stat(part)
	if err != nil || st.Size() < int64(size)/3 || st.Size() >= int64(size) {
		t.Fatalf("partial download: %v (%d bytes of %d)", err, st.Size(), size)
	}
	var first int64 = -1
	if _, err := r.Pull(ctx, "big", remote.Model{}, part, func(done, total int64) {
		if first < 0 {
			first = done
		}
	}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(part); first != st.Size() || !bytes.Equal(data, state) {
		t.Fatalf("resumed from %d (want %d); equal %v", first, st.Size(), bytes.Equal(data, state))
	}

	// A push of a new version cut off half-way leaves the previous version whole.
	newer := make([]byte, size)
	rand.Read(newer)
	os.WriteFile(l.StatePath, newer, 0o600)
	once.Store(false)
	_, err = r.Push(ctx, l, func(done, total int64) {
		if done > 0 && once.CompareAndSwap(false, true) {
			cut.SetDown(true)
			cut.CutAll()
		}
	})
	if !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("a push to an endpoint that went away: %v", err)
	}
	t.Log(err)
	cut.SetDown(false)
	again := filepath.Join(t.TempDir(), ".big.state.part")
	if _, err := r.Pull(ctx, "big", remote.Model{}, again, nil); err != nil {
		t.Fatalf("pull after a cut push: %v", err)
	}
	if data, _ := os.ReadFile(again); !bytes.Equal(data, state) {
		t.Fatal("after a cut push the remote no longer holds the previous version")
	}
	os.WriteFile(l.StatePath, state, 0o600)

	// The server killed during a push of a new version: a clear error, the local files untouched.
	before, _ := os.ReadFile(l.StatePath)
	r2 := open(t, "s3://contexts")
	var killed atomic.Bool
	_, err = r2.Push(ctx, l, func(done, total int64) {
		if done > 0 && killed.CompareAndSwap(false, true) {
			srv.Kill()
		}
	})
	if err == nil || !(errors.Is(err, remote.ErrUnreachable) || strings.Contains(err.Error(), "connection")) {
		t.Fatalf("push to a killed server: %v", err)
	}
	if after, _ := os.ReadFile(l.StatePath); !bytes.Equal(before, after) {
		t.Fatal("a failed push changed the local state")
	}
	if _, err := r2.Pull(ctx, "big", remote.Model{}, filepath.Join(t.TempDir(), "p"), nil); !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("pull from a killed server: %v", err)
	}
}

// TestServerKilledMidDownload: the pull fails with a clear error, keeps what it got for the next
// pull, and writes nothing else.
func TestServerKilledMidDownload(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	ctx := ctxT(t)
	l, _ := fixture(t, t.TempDir(), "big", 8*remote.MinPartSize)
	r := open(t, "s3://contexts")
	if _, err := r.Push(ctx, l, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	part := filepath.Join(dir, ".big.state.part")
	var killed atomic.Bool
	_, err := r.Pull(ctx, "big", remote.Model{}, part, func(done, total int64) {
		if done > total/8 && killed.CompareAndSwap(false, true) {
			srv.Kill()
		}
	})
	if !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "pull again to resume") {
		t.Fatalf("pull from a server killed half-way: %v", err)
	}
	t.Log(err)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // the part and its note
		t.Fatalf("after the failed pull the directory holds %d files, want the part file and its note", len(entries))
	}
	if st, err := os.Stat(part); err != nil || st.Size() == 0 || st.Size() >= int64(8*remote.MinPartSize) {
		t.Fatalf("partial download: %v", err)
	}
}
