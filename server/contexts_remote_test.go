package server

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/expertsniper/expertsniper/remote"
	"github.com/expertsniper/expertsniper/remote/s3test"
	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

func openRemote(t *testing.T, url string) *remote.Remote {
	t.Helper()
	r, err := remote.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestContextsTravelThroughARemote: a context saved on one server is uploaded, downloaded by another
// server with an empty context directory, and resumes a request there; each failure is a clear JSON
// error that leaves the local contexts as they were.
func TestContextsTravelThroughARemote(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	rem := openRemote(t, "s3://contexts/shared")

	// Machine one saves and uploads.
	ts1 := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.Remote = rem })
	doc := "<|im_start|>system\n" + strings.Repeat("A long manual. ", 100) + "<|im_end|>\n"
	if resp, body := ts1.do(t, "POST", "/v1/context/save", map[string]any{"name": "manual", "prompt": doc}); resp.StatusCode != 200 {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	resp, body := ts1.do(t, "POST", "/v1/context/upload", map[string]any{"name": "manual"})
	up := decode[map[string]any](t, body)
	if resp.StatusCode != 200 || up["uploaded"] != "manual" || len(up["state_sha256"].(string)) != 64 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	_, body = ts1.do(t, "GET", "/v1/context/list?remote=1", nil)
	list := decode[struct{ Data []map[string]any }](t, body).Data
	if len(list) != 1 || list[0]["name"] != "manual" || list[0]["model"] != "fake-moe.gguf" || list[0]["tokens"].(float64) != float64(len(doc)) {
		t.Fatalf("remote list: %s", body)
	}

	// Machine two starts with nothing, downloads, and the next request resumes from it.
	dir2 := t.TempDir()
	ts2 := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.Remote = rem; c.ContextDir = dir2 })
	resp, body = ts2.do(t, "POST", "/v1/context/download", map[string]any{"name": "manual"})
	if resp.StatusCode != 200 || decode[map[string]any](t, body)["downloaded"].(map[string]any)["tokens"].(float64) != float64(len(doc)) {
		t.Fatalf("download: %d %s", resp.StatusCode, body)
	}
	for _, f := range []string{"manual.json", "manual.state"} {
		if st, err := os.Stat(filepath.Join(dir2, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s after the download: %v", f, err)
		}
	}
	chat := map[string]any{"messages": []map[string]string{
		{"role": "system", "content": strings.Repeat("A long manual. ", 100)},
		{"role": "user", "content": "what does it say?"}}, "max_tokens": 3}
	resp, body = ts2.do(t, "POST", "/v1/chat/completions", chat)
	if resp.StatusCode != 200 || resp.Header.Get("X-Context-Resumed") != "manual" {
		t.Fatalf("resume from the downloaded context: %d %q %s", resp.StatusCode, resp.Header.Get("X-Context-Resumed"), body)
	}
	before, _ := os.ReadFile(filepath.Join(dir2, "manual.state"))
	unchanged := func(what string) {
		t.Helper()
		after, err := os.ReadFile(filepath.Join(dir2, "manual.state"))
		if err != nil || !bytes.Equal(before, after) {
			t.Fatalf("%s changed the local context: %v", what, err)
		}
		if _, err := os.Stat(filepath.Join(dir2, "manual.json")); err != nil {
			t.Fatalf("%s removed the local metadata: %v", what, err)
		}
	}

	// Another model refuses it, naming both.
	other := fakeengine.New(1, 1<<16)
	other.SetFingerprint("sha256:another-model")
	ts3 := newTestServer(t, other, func(c *Config) { c.Remote = rem })
	resp, body = ts3.do(t, "POST", "/v1/context/download", map[string]any{"name": "manual"})
	e := expectError(t, resp, body, 409, "invalid_request_error")
	if msg := e["message"].(string); !strings.Contains(msg, "sha256:fake-moe") || !strings.Contains(msg, "sha256:another-model") {
		t.Errorf("the refusal should name both models: %s", msg)
	}

	resp, body = ts2.do(t, "POST", "/v1/context/download", map[string]any{"name": "nosuch"})
	expectError(t, resp, body, 404, "not_found_error")
	resp, body = ts2.do(t, "POST", "/v1/context/upload", map[string]any{"name": "nosuch"})
	expectError(t, resp, body, 404, "not_found_error")
	resp, body = ts2.do(t, "POST", "/v1/context/download", map[string]any{"name": "../x"})
	expectError(t, resp, body, 400, "invalid_request_error")

	// A tampered object: 502, and the local copy stays.
	objs, err := srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("contexts"), Prefix: aws.String("shared/manual.")})
	if err != nil || len(objs.Contents) != 2 {
		t.Fatalf("objects of the context: %v %+v", err, objs)
	}
	stateKey := aws.ToString(objs.Contents[0].Key)
	if !strings.HasSuffix(stateKey, ".state") {
		stateKey = aws.ToString(objs.Contents[1].Key)
	}
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("contexts"),
		Key: aws.String(stateKey), Body: bytes.NewReader(bytes.Repeat([]byte{1}, len(before)))}); err != nil {
		t.Fatal(err)
	}
	resp, body = ts2.do(t, "POST", "/v1/context/download", map[string]any{"name": "manual"})
	if e := expectError(t, resp, body, 502, "server_error"); !strings.Contains(e["message"].(string), "damaged") {
		t.Errorf("tampered: %s", body)
	}
	unchanged("a tampered download")

	// Wrong keys, a missing bucket, an endpoint that does not answer.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	ts4 := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.Remote = openRemote(t, "s3://contexts/shared"); c.ContextDir = dir2 })
	resp, body = ts4.do(t, "POST", "/v1/context/download", map[string]any{"name": "manual"})
	if e := expectError(t, resp, body, 502, "server_error"); !strings.Contains(e["message"].(string), "credentials") {
		t.Errorf("wrong credentials: %s", body)
	}
	resp, body = ts4.do(t, "GET", "/v1/context/list?remote=1", nil)
	expectError(t, resp, body, 502, "server_error")
	unchanged("a download with wrong credentials")
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)

	ts5 := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.Remote = openRemote(t, "s3://missing-bucket"); c.ContextDir = dir2 })
	resp, body = ts5.do(t, "POST", "/v1/context/upload", map[string]any{"name": "manual"})
	if e := expectError(t, resp, body, 502, "server_error"); !strings.Contains(e["message"].(string), `no bucket "missing-bucket"`) {
		t.Errorf("missing bucket: %s", body)
	}

	srv.Kill()
	resp, body = ts2.do(t, "POST", "/v1/context/download", map[string]any{"name": "manual"})
	if e := expectError(t, resp, body, 504, "server_error"); !strings.Contains(e["message"].(string), "cannot be reached") {
		t.Errorf("server gone: %s", body)
	}
	unchanged("a download from a dead server")

	// Without --remote the endpoints say how to configure one.
	ts6 := newTestServer(t, fakeengine.New(1, 1<<16))
	resp, body = ts6.do(t, "POST", "/v1/context/upload", map[string]any{"name": "manual"})
	if e := expectError(t, resp, body, 400, "invalid_request_error"); !strings.Contains(e["message"].(string), "--remote") {
		t.Errorf("no remote: %s", body)
	}
	resp, body = ts6.do(t, "GET", "/v1/context/list?remote=yes", nil)
	expectError(t, resp, body, 400, "invalid_request_error")
}
