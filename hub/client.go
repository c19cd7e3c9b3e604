// Package hub downloads GGUF models from the Hugging Face Hub (or any server that speaks its file
// API) into a local models directory, and resolves model names given to the REPL and the server to
// files in that directory.
//
// The Hub API used here, as huggingface_hub uses it:
//   - GET {endpoint}/api/models/{repo}/tree/main?recursive=true lists files as JSON objects
//     {"type":"file","path":...,"size":...,"oid":<git blob sha1>,"lfs":{"oid":<sha256>,"size":...}},
//     paginated with a Link header (rel="next").
//   - GET {endpoint}/{repo}/resolve/main/{path} answers with a redirect to a CDN for LFS files; the
//     redirect carries X-Linked-Etag (the sha256 in quotes) and X-Linked-Size. Range requests are
//     honoured by the CDN.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultEndpoint is used when HF_ENDPOINT is not set.
const DefaultEndpoint = "https://huggingface.co"

// Revision is the branch files are listed and downloaded from.
const Revision = "main"

// ErrNotFound means the repository, revision or file does not exist.
var ErrNotFound = errors.New("not found")

// ErrAuth means the hub refused access: the repository is private or gated, does not exist (the hub
// answers 401 for unknown repositories too), or the token is wrong.
var ErrAuth = errors.New("repository not found or needs a token (HF_TOKEN)")

// Client talks to one hub endpoint. The zero value is not usable; use NewClient or NewClientFromEnv.
type Client struct {
	Endpoint string       // e.g. https://huggingface.co, without a trailing slash
	Token    string       // sent as a Bearer token when not empty
	HTTP     *http.Client // redirects are followed by the client; its Timeout must be 0 (downloads are long)
	// Attempts bounds how many times one request (or one download, counting resumes) is tried when
	// it fails transiently (network errors, 5xx, 429). At least 1.
	Attempts int
	// Backoff is the wait before the second attempt; it doubles (with jitter) up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// StallTimeout ends a download attempt that receives no data for this long (it is then resumed
	// like a dropped connection). 0 means no limit.
	StallTimeout time.Duration
	// OnRetry, if set, is told about every failed request that is tried again, so that a user sees
	// why nothing happens.
	OnRetry func(err error, wait time.Duration)
}

// NewClient returns a client for endpoint with the default retry policy.
func NewClient(endpoint, token string) *Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// A stalled connection must fail rather than hang forever; a read that makes progress never hits this.
	transport.ResponseHeaderTimeout = 60 * time.Second
	return &Client{
		Endpoint:     strings.TrimRight(endpoint, "/"),
		Token:        token,
		HTTP:         &http.Client{Transport: transport},
		Attempts:     6,
		Backoff:      time.Second,
		MaxBackoff:   30 * time.Second,
		StallTimeout: 60 * time.Second,
	}
}

// NewClientFromEnv reads HF_ENDPOINT (default DefaultEndpoint) and HF_TOKEN.
func NewClientFromEnv() *Client {
	endpoint := os.Getenv("HF_ENDPOINT")
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	return NewClient(endpoint, strings.TrimSpace(os.Getenv("HF_TOKEN")))
}

// RepoFile is one file of a repository as the tree API lists it.
type RepoFile struct {
	Path string // slash-separated path inside the repository
	Size int64
	// SHA256 is the LFS object id (hex), empty for files not stored in LFS.
	SHA256 string
	// GitOID is the git blob id (sha1 of "blob <size>\x00" + content) of files not in LFS.
	GitOID string
}

type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	OID  string `json:"oid"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// ListFiles lists every file of repo at Revision, following pagination.
func (c *Client) ListFiles(ctx context.Context, repo string) ([]RepoFile, error) {
	if err := ValidateRepo(repo); err != nil {
		return nil, err
	}
	next := fmt.Sprintf("%s/api/models/%s/tree/%s?recursive=true", c.Endpoint, repo, Revision)
	var files []RepoFile
	for page := 0; next != ""; page++ {
		if page > 10000 {
			return nil, fmt.Errorf("list %s: more than 10000 pages, giving up", repo)
		}
		var entries []treeEntry
		link, err := c.getJSON(ctx, next, &entries)
		var he *HTTPError
		if errors.As(err, &he) && he.kind != nil {
			return nil, &RepoError{Repo: repo, Endpoint: c.Endpoint, StatusCode: he.StatusCode, kind: he.kind}
		}
		if err != nil {
			return nil, fmt.Errorf("list files of %s: %w", repo, err)
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := RepoFile{Path: e.Path, Size: e.Size}
			if e.LFS != nil {
				f.SHA256 = strings.ToLower(e.LFS.OID)
				if e.LFS.Size > 0 {
					f.Size = e.LFS.Size
				}
			} else {
				f.GitOID = strings.ToLower(e.OID)
			}
			files = append(files, f)
		}
		next, err = nextLink(link, next)
		if err != nil {
			return nil, fmt.Errorf("list files of %s: %w", repo, err)
		}
	}
	return files, nil
}

// getJSON GETs u and decodes a JSON body into out, retrying transient failures. It returns the Link header.
func (c *Client) getJSON(ctx context.Context, u string, out any) (link string, err error) {
	err = c.retry(ctx, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return permanent(err)
		}
		c.authorize(req)
		req.Header.Set("Accept", "application/json")
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return statusError(resp, u)
		}
		// Listings of huge repositories are a few MB at most; anything far larger is not a listing.
		if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(out); err != nil {
			return fmt.Errorf("decode JSON from %s: %w", u, err)
		}
		link = resp.Header.Get("Link")
		return nil
	})
	return link, err
}

func (c *Client) authorize(req *http.Request) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("User-Agent", "expertsniper-agent")
}

// nextLink extracts the rel="next" target of a Link header, resolved against the current URL.
func nextLink(header, current string) (string, error) {
	for _, part := range strings.Split(header, ",") {
		fields := strings.Split(part, ";")
		if len(fields) < 2 {
			continue
		}
		isNext := false
		for _, p := range fields[1:] {
			if strings.ReplaceAll(strings.TrimSpace(p), " ", "") == `rel="next"` {
				isNext = true
			}
		}
		if !isNext {
			continue
		}
		target := strings.Trim(strings.TrimSpace(fields[0]), "<>")
		base, err := url.Parse(current)
		if err != nil {
			return "", err
		}
		ref, err := url.Parse(target)
		if err != nil {
			return "", fmt.Errorf("bad Link header %q: %w", header, err)
		}
		return base.ResolveReference(ref).String(), nil
	}
	return "", nil
}

// RepoError says that a repository cannot be listed: it does not exist, or it is private or gated and
// the token (if any) does not open it. The hub answers the same for both. It matches ErrAuth or
// ErrNotFound.
type RepoError struct {
	Repo, Endpoint string
	StatusCode     int
	kind           error
}

func (e *RepoError) Error() string {
	return fmt.Sprintf("no repository %s on %s (HTTP %d): check the name; if it is private or gated, set HF_TOKEN to a token that can read it",
		e.Repo, e.Endpoint, e.StatusCode)
}

func (e *RepoError) Unwrap() error { return e.kind }

// CheckEndpoint returns an error unless endpoint is an http or https URL with a host: a mistyped
// HF_ENDPOINT fails at once with the variable's name instead of after retries.
func CheckEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("HF_ENDPOINT %q is not an http:// or https:// URL", endpoint)
	}
	return nil
}

// HTTPError is a non-success answer from the hub or its CDN.
type HTTPError struct {
	URL        string
	StatusCode int
	Message    string // the hub's error message (X-Error-Message or a JSON "error"), if any
	// RetryAfter is the server's Retry-After (429, 503), 0 if absent.
	RetryAfter time.Duration
	kind       error // ErrNotFound, ErrAuth or nil
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("GET %s: HTTP %d", e.URL, e.StatusCode)
	if e.kind != nil {
		msg += ": " + e.kind.Error()
	}
	if e.Message != "" {
		msg += " (" + e.Message + ")"
	}
	return msg
}

func (e *HTTPError) Unwrap() error { return e.kind }

// transient reports whether trying again may help.
func (e *HTTPError) transient() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout
}

func statusError(resp *http.Response, u string) error {
	e := &HTTPError{URL: u, StatusCode: resp.StatusCode, Message: resp.Header.Get("X-Error-Message")}
	if e.Message == "" {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var j struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &j) == nil {
			e.Message = j.Error
		}
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		e.kind = ErrAuth
	case resp.StatusCode == http.StatusNotFound:
		e.kind = ErrNotFound
		// The hub says which part is missing in X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound.
		if code := resp.Header.Get("X-Error-Code"); code == "RepoNotFound" || code == "GatedRepo" {
			e.kind = ErrAuth
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(strings.TrimSpace(ra)); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if at, err := http.ParseTime(ra); err == nil {
			e.RetryAfter = max(time.Until(at), 0)
		}
	}
	return e
}

// errStalled means a download attempt received nothing for Client.StallTimeout.
var errStalled = errors.New("connection stalled")

// permanentError marks an error that must not be retried.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return permanentError{err} }

// isTransient decides whether an attempt that failed with err is worth repeating.
func isTransient(err error) bool {
	var p permanentError
	if errors.As(err, &p) {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.transient()
	}
	// Nothing listening, or a host name that does not resolve, will not change in the next minute:
	// saying so at once beats half a minute of silent retries.
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	// *url.Error is a net.Error too, whatever it wraps (an unsupported scheme, a bad URL): only the
	// network errors inside it are worth another attempt.
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	if errors.Is(err, errStalled) {
		return true
	}
	// Connections dropped mid-body surface as these.
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

// retry runs attempt until it succeeds, fails permanently, ctx ends, or Attempts are used up.
func (c *Client) retry(ctx context.Context, attempt func() error) error {
	attempts := max(c.Attempts, 1)
	wait := c.Backoff
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			// Jitter spreads retries of parallel clients; it never shortens the wait below half.
			d := wait/2 + time.Duration(rand.Int64N(int64(wait/2)+1))
			d = max(d, retryAfter(err))
			if c.OnRetry != nil {
				c.OnRetry(err, d)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
			wait = min(wait*2, max(c.MaxBackoff, c.Backoff))
		}
		err = attempt()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !isTransient(err) {
			var p permanentError
			if errors.As(err, &p) {
				return p.err
			}
			return err
		}
	}
	return fmt.Errorf("gave up after %d attempts: %w", attempts, err)
}

// retryAfter is how long the server asked us to wait before trying again (at most 5 minutes).
func retryAfter(err error) time.Duration {
	var he *HTTPError
	if errors.As(err, &he) {
		return min(he.RetryAfter, 5*time.Minute)
	}
	return 0
}

// ValidateRepo checks that repo looks like "owner/name" and cannot escape a URL path or a directory.
func ValidateRepo(repo string) error {
	parts := strings.Split(repo, "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return fmt.Errorf("repository %q: want owner/name, e.g. unsloth/Qwen3.5-35B-A3B-GGUF", repo)
	}
	for _, p := range parts {
		if p == "." || p == ".." {
			return fmt.Errorf("repository %q: invalid name", repo)
		}
		for _, r := range p {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
			if !ok {
				return fmt.Errorf("repository %q: invalid character %q", repo, r)
			}
		}
	}
	return nil
}
