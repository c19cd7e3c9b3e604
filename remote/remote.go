// Package remote keeps saved contexts in S3-compatible storage (AWS S3, Cloudflare R2, MinIO, rclone),
// so that a context evaluated on one machine is resumed on another.
//
// A saved context travels as two objects under the remote's prefix: NAME.ID.state, the engine's state
// file byte for byte (ID is new for each push), and NAME.json, a manifest holding the local metadata
// file, the model the state belongs to, the state's key, size and sha256. A push writes the state first and the manifest last; a
// pull reads the manifest first, so it knows the model before it downloads anything and what the
// downloaded bytes must hash to before they get their final name.
//
// The package works at the file level: a saved context is a metadata file and a state file, and the
// stores that own them (the server's contexts, the REPL's sessions) move a pulled state into place
// themselves.
package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// EnvRemote is the environment variable that names the remote when --remote is not given.
const EnvRemote = "EXPERTSNIPER_REMOTE"

// DefaultPartSize is the size of one part of a multipart upload: large enough that a 4 GB state is a
// few hundred requests, small enough that the parts in flight stay a few tens of MB of memory.
const DefaultPartSize = 16 << 20

// MinPartSize is S3's smallest part (every part but the last).
const MinPartSize = 5 << 20

// Remote is one bucket and prefix of an S3-compatible store.
type Remote struct {
	client *s3.Client
	bucket string
	prefix string // "" or ending in "/"
	// endpoint is shown in errors: the configured endpoint, or "AWS S3".
	endpoint string

	// PartSize is the multipart upload's part size (DefaultPartSize when 0; at least MinPartSize).
	PartSize int64
}

// bucketPattern is S3's rule for bucket names (R2 and MinIO follow it too).
var bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// ParseURL splits s3://BUCKET[/PREFIX] into the bucket and a prefix that is empty or ends in "/".
func ParseURL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("remote %q: want s3://BUCKET or s3://BUCKET/PREFIX", raw)
	}
	if !bucketPattern.MatchString(u.Host) {
		return "", "", fmt.Errorf("remote %q: bucket %q is not a valid S3 bucket name (3 to 63 lower-case letters, digits, '.' and '-')", raw, u.Host)
	}
	prefix = strings.Trim(u.Path, "/")
	for _, part := range strings.Split(prefix, "/") {
		if prefix != "" && (part == "" || part == "." || part == "..") {
			return "", "", fmt.Errorf("remote %q: the prefix %q has an empty, '.' or '..' element", raw, prefix)
		}
	}
	if prefix != "" {
		prefix += "/"
	}
	return u.Host, prefix, nil
}

// Open connects to the remote named by rawURL (s3://BUCKET[/PREFIX]). The endpoint, region and
// credentials come from where every S3 client takes them: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL,
// AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared config and
// credentials files. Nothing is contacted until the first transfer.
func Open(ctx context.Context, rawURL string) (*Remote, error) {
	bucket, prefix, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the S3 configuration for %s: %w", rawURL, err)
	}
	if cfg.Region == "" {
		// R2 and MinIO accept any region; AWS itself answers with a redirect that names the right one.
		cfg.Region = "us-east-1"
	}
	r := &Remote{bucket: bucket, prefix: prefix, endpoint: "AWS S3"}
	r.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if o.BaseEndpoint != nil {
			// Endpoints other than AWS's own (MinIO, rclone, R2 by account URL) address buckets by path.
			o.UsePathStyle = true
			r.endpoint = *o.BaseEndpoint
		}
		// Only the checksums S3 requires: third-party servers do not all accept the newer trailing
		// checksums, and the state's own sha256 is verified end to end anyway.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return r, nil
}

// String is the remote as the user wrote it.
func (r *Remote) String() string {
	return "s3://" + r.bucket + "/" + r.prefix
}

func (r *Remote) manifestKey(name string) string { return r.prefix + name + ".json" }

// newStateKey is where a push puts a state: NAME.ID.state, a key of its own for each push, so that
// the manifest (written last) switches from the previous state to the new one in one PUT, and a push
// cut off at any point leaves the previous version whole.
func (r *Remote) newStateKey(name string) string {
	var id [8]byte
	rand.Read(id[:])
	return r.prefix + name + "." + hex.EncodeToString(id[:]) + ".state"
}

// isStateOf says whether key (a key under the prefix) is one of name's state objects.
func (r *Remote) isStateOf(key, name string) bool {
	rest, ok := strings.CutPrefix(key, r.prefix+name+".")
	id, ok2 := strings.CutSuffix(rest, ".state")
	return ok && ok2 && stateIDPattern.MatchString(id)
}

var stateIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

func (r *Remote) partSize() int64 {
	switch {
	case r.PartSize == 0:
		return DefaultPartSize
	case r.PartSize < MinPartSize:
		return MinPartSize
	}
	return r.PartSize
}

// Progress is told how many of a transfer's bytes are done; it is called from the transfer's
// goroutines and must be quick.
type Progress func(done, total int64)

func (p Progress) report(done, total int64) {
	if p != nil {
		p(done, total)
	}
}

// fileMode is the mode of every file a pull writes: saved contexts hold the user's prompts.
const fileMode os.FileMode = 0o600

// dirMode is the mode of a directory a pull creates.
const dirMode os.FileMode = 0o700

// ensureDir creates dir (private) if it is missing.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create %q: %w", dir, err)
	}
	return nil
}

// ErrNoRemote is what a command that needs a remote says when none is configured.
var ErrNoRemote = errors.New("no remote is configured: give --remote s3://BUCKET[/PREFIX], set " + EnvRemote + ", or set \"remote\" in config.json")

// Sub is the part of the remote under PREFIX/dir/ (the REPL keeps its sessions apart from the
// server's contexts this way).
func (r *Remote) Sub(dir string) *Remote {
	sub := *r
	sub.prefix = r.prefix + strings.Trim(dir, "/") + "/"
	return &sub
}
