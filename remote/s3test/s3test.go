// Package s3test starts a real S3-compatible server on loopback for tests: moto's server (Debian's
// python3-moto, which ./build.sh tools installs in the build root), with request signing enforced, an
// IAM user whose keys the tests use, and a bucket. The server is a separate process, so that a test
// can kill it in the middle of a transfer.
//
// Debian's rclone is built without `rclone serve s3`, and the S3 servers on the Go proxy
// (gofakes3) do not check signatures, so neither could test wrong credentials; moto does.
package s3test

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is one moto server with a user and a bucket.
type Server struct {
	URL       string // http://127.0.0.1:PORT
	Bucket    string
	AccessKey string
	SecretKey string

	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs moto_server on a free loopback port and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatal("moto_server is not installed; the remote's tests run a real S3 server on loopback. " +
			"Install it (apt-get install python3-moto python3-flask-cors; ./build.sh tools does it in the build root)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Bucket: "contexts", done: make(chan struct{})}
	s.cmd = exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	s.cmd.Env = append(os.Environ(), "MOTO_ALLOW_NONEXISTENT_REGION=true")
	logf, err := os.CreateTemp(t.TempDir(), "moto-*.log")
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.Kill(); logf.Close() })

	deadline := time.Now().Add(60 * time.Second) // Python starts slowly on a loaded machine
	for {
		resp, err := http.Get(s.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("moto_server exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not answer on %s within 60 s: %v", s.URL, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.setUp(t)
	return s
}

// setUp makes the IAM user and its keys while moto still lets anyone in, then turns signing checks
// on for good and creates the bucket with the user's keys.
func (s *Server) setUp(t testing.TB) {
	t.Helper()
	const user = "expertsniper-test"
	s.iam(t, url.Values{"Action": {"CreateUser"}, "UserName": {user}})
	var keys struct {
		AccessKeyID     string `xml:"CreateAccessKeyResult>AccessKey>AccessKeyId"`
		SecretAccessKey string `xml:"CreateAccessKeyResult>AccessKey>SecretAccessKey"`
	}
	if err := xml.Unmarshal(s.iam(t, url.Values{"Action": {"CreateAccessKey"}, "UserName": {user}}), &keys); err != nil || keys.AccessKeyID == "" {
		t.Fatalf("moto: create an access key: %v", err)
	}
	s.AccessKey, s.SecretKey = keys.AccessKeyID, keys.SecretAccessKey
	s.iam(t, url.Values{"Action": {"PutUserPolicy"}, "UserName": {user}, "PolicyName": {"all-of-s3"},
		"PolicyDocument": {`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`}})
	resp, err := http.Post(s.URL+"/moto-api/reset-auth", "text/plain", strings.NewReader("0"))
	if err != nil {
		t.Fatalf("moto: turn signing checks on: %v", err)
	}
	resp.Body.Close()
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("moto: create bucket %q: %v", s.Bucket, err)
	}
}

// iam sends an IAM query (unsigned: moto does not check until reset-auth).
func (s *Server) iam(t testing.TB, form url.Values) []byte {
	t.Helper()
	form.Set("Version", "2010-05-08")
	req, _ := http.NewRequest("POST", s.URL+"/", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// moto picks the service from the credential scope.
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("moto: IAM %s: %v", form.Get("Action"), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("moto: IAM %s: %d %s", form.Get("Action"), resp.StatusCode, body)
	}
	return body
}

// Client is an S3 client with the user's keys, for a test to look at or tamper with objects.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// Env is the environment a client of this server takes its endpoint and keys from, as
// KEY=VALUE pairs; the shared config files are pointed at nothing so the user's do not interfere.
func (s *Server) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.URL,
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// SetEnv sets Env for the rest of the test (in this process).
func (s *Server) SetEnv(t testing.TB) {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
}

// Kill ends the server at once (SIGKILL), as a crash or a pulled cable would.
func (s *Server) Kill() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	<-s.done
}

// Cutter is a loopback TCP proxy in front of a server whose connections a test can cut, as a network
// that drops does; the server behind it keeps its objects (moto keeps them in memory only, so a killed
// moto cannot be restarted with them).
type Cutter struct {
	URL    string
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	closed bool // refuse new connections (SetDown)
}

// Cut starts a proxy to s, closed when the test ends.
func (s *Server) Cut(t testing.TB) *Cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := strings.TrimPrefix(s.URL, "http://")
	c := &Cutter{URL: "http://" + ln.Addr().String(), ln: ln}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			down := c.closed
			c.mu.Unlock()
			if down {
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); c.CutAll() })
	return c
}

// SetDown makes the proxy close new connections at once (down) or pass them on again: an endpoint
// that is gone, so that the client's retries fail too.
func (c *Cutter) SetDown(down bool) {
	c.mu.Lock()
	c.closed = down
	c.mu.Unlock()
}

// CutAll closes every connection through the proxy; new ones are still accepted unless SetDown.
func (c *Cutter) CutAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}
