package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// manifestFormat is the version of Manifest; a pull refuses a manifest from a newer version.
const manifestFormat = 1

// maxManifestBytes bounds what a pull reads as a manifest (the metadata holds the prompt text).
const maxManifestBytes = 64 << 20

// Model is the model a saved context belongs to: its name for people and, where the store has one,
// a fingerprint of the model file that decides.
type Model struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Same says whether a context made with m can be loaded into o: by fingerprint when both have one,
// by name otherwise. A zero Model (no model loaded, e.g. `agent context pull`) accepts any.
func (m Model) Same(o Model) bool {
	if o == (Model{}) || m == (Model{}) {
		return true
	}
	if m.Fingerprint != "" && o.Fingerprint != "" {
		return m.Fingerprint == o.Fingerprint
	}
	return m.Name == o.Name
}

func (m Model) String() string {
	if m.Fingerprint != "" {
		return fmt.Sprintf("%q (fingerprint %.23s)", m.Name, m.Fingerprint)
	}
	return fmt.Sprintf("%q", m.Name)
}

// Manifest is NAME.json in the remote: what a pull needs to know before and after the download.
type Manifest struct {
	Format      int       `json:"format"`
	Name        string    `json:"name"`
	Model       Model     `json:"model"`
	Tokens      int       `json:"tokens"`
	StateBytes  int64     `json:"state_bytes"`
	StateSHA256 string    `json:"state_sha256"`
	StateKey    string    `json:"state_key"` // the state object's key, under the bucket
	Pushed      time.Time `json:"pushed"`
	// Meta is the local metadata file as the pushing store wrote it (the prompt or messages).
	Meta json.RawMessage `json:"meta"`
}

// Local is one saved context on this machine, as a push reads it.
type Local struct {
	Name      string
	Model     Model
	Tokens    int
	MetaPath  string // the store's metadata file (JSON)
	StatePath string // the engine's state file
}

// Push uploads a saved context: the state (multipart, with progress) under a key of its own, then the
// manifest that names it, then it deletes the previous version's state. Until the manifest is written
// the remote holds the previous version whole, so a push cut off at any point leaves the remote as it
// was (at worst with an unreferenced state, which the next push of the name removes).
func (r *Remote) Push(ctx context.Context, l Local, progress Progress) (Manifest, error) {
	doing := fmt.Sprintf("push context %q to %s", l.Name, r)
	meta, err := os.ReadFile(l.MetaPath)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: read its metadata: %w", doing, err)
	}
	if !json.Valid(meta) {
		return Manifest{}, fmt.Errorf("%s: its metadata %s is not valid JSON", doing, l.MetaPath)
	}
	f, err := os.Open(l.StatePath)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: open its state: %w", doing, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", doing, err)
	}
	size := st.Size()

	// The state is hashed as the uploader reads it, in order, so the file is read once.
	sum := sha256.New()
	body := io.TeeReader(io.LimitReader(f, size), sum)
	tm := transfermanager.New(r.client, func(o *transfermanager.Options) {
		o.PartSizeBytes = r.partSize()
		o.MultipartUploadThreshold = r.partSize()
		o.Concurrency = 4
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.FailTimeout = 30 * time.Second // to abort the multipart upload after a cancel
		o.ObjectProgressListeners.Register(progressListener{progress})
	})
	progress.report(0, size)
	key := r.newStateKey(l.Name)
	_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket:        aws.String(r.bucket),
		Key:           aws.String(key),
		Body:          body,
		ContentLength: aws.Int64(size),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
		return Manifest{}, r.explain(doing, l.Name, err)
	}
	m := Manifest{Format: manifestFormat, Name: l.Name, Model: l.Model, Tokens: l.Tokens, StateBytes: size,
		StateSHA256: hex.EncodeToString(sum.Sum(nil)), StateKey: key, Pushed: time.Now().UTC(), Meta: meta}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: encode the manifest: %w", doing, err)
	}
	_, err = r.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(r.bucket),
		Key:           aws.String(r.manifestKey(l.Name)),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/json"),
	})
	if err != nil {
		return Manifest{}, r.explain(doing+": write the manifest", l.Name, err)
	}
	progress.report(size, size)
	if err := r.removeStates(ctx, l.Name, key); err != nil {
		return m, fmt.Errorf("%s: pushed, but the previous version's state was not removed: %w", doing, err)
	}
	return m, nil
}

// removeStates deletes name's state objects but keep ("" deletes them all).
func (r *Remote) removeStates(ctx context.Context, name, keep string) error {
	p := s3.NewListObjectsV2Paginator(r.client, &s3.ListObjectsV2Input{Bucket: aws.String(r.bucket), Prefix: aws.String(r.prefix + name + ".")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return r.explain("list the states of "+name, name, err)
		}
		for _, obj := range page.Contents {
			key := aws.ToString(obj.Key)
			if key == keep || !r.isStateOf(key, name) {
				continue
			}
			if _, err := r.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(key)}); err != nil {
				return r.explain("delete "+key, name, err)
			}
		}
	}
	return nil
}

// progressListener forwards the transfer manager's byte counts.
type progressListener struct{ p Progress }

func (pl progressListener) OnObjectBytesTransferred(_ context.Context, e *transfermanager.ObjectBytesTransferredEvent) {
	pl.p.report(e.BytesTransferred, e.TotalBytes)
}

// Manifest reads a context's manifest.
func (r *Remote) Manifest(ctx context.Context, name string) (Manifest, error) {
	doing := fmt.Sprintf("read context %q from %s", name, r)
	out, err := r.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(r.manifestKey(name))})
	if err != nil {
		return Manifest{}, r.explain(doing, name, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, maxManifestBytes+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w: %v", doing, ErrUnreachable, err)
	}
	var m Manifest
	switch {
	case len(data) > maxManifestBytes:
		return m, fmt.Errorf("%s: %w: its manifest is larger than %d bytes", doing, ErrCorrupt, maxManifestBytes)
	case json.Unmarshal(data, &m) != nil:
		return m, fmt.Errorf("%s: %w: its manifest is not valid JSON", doing, ErrCorrupt)
	case m.Format > manifestFormat:
		return m, fmt.Errorf("%s: its manifest is format %d, newer than this program's %d: update expertsniper", doing, m.Format, manifestFormat)
	case m.Name != name || m.StateBytes < 0 || len(m.StateSHA256) != 64 || !json.Valid(m.Meta) ||
		!r.isStateOf(m.StateKey, name):
		return m, fmt.Errorf("%s: %w: its manifest is incomplete or names another context", doing, ErrCorrupt)
	}
	return m, nil
}

// Pull downloads a context's state into partPath and verifies it; the caller then moves partPath into
// its store and writes Manifest.Meta as the metadata. A context of another model than want is refused
// before anything is downloaded. An interrupted pull leaves partPath (and a note of what it is part
// of beside it) and the next pull of the same version resumes from there with a ranged GET. Nothing
// but partPath and its note is ever written, so a failed pull cannot damage the saved contexts.
func (r *Remote) Pull(ctx context.Context, name string, want Model, partPath string, progress Progress) (Manifest, error) {
	doing := fmt.Sprintf("pull context %q from %s", name, r)
	m, err := r.Manifest(ctx, name)
	if err != nil {
		return m, err
	}
	if !m.Model.Same(want) {
		return m, fmt.Errorf("%s: %w: it was saved with model %s, and the loaded model is %s", doing, ErrOtherModel, m.Model, want)
	}
	if err := ensureDir(filepath.Dir(partPath)); err != nil {
		return m, fmt.Errorf("%s: %w", doing, err)
	}

	// The note ties a partial download to the version it is part of; another version starts over.
	note := partPath + ".sha256"
	offset := int64(0)
	if prev, err := os.ReadFile(note); err == nil && strings.TrimSpace(string(prev)) == m.StateSHA256 {
		if st, err := os.Stat(partPath); err == nil && st.Size() <= m.StateBytes {
			offset = st.Size()
		}
	}
	if offset == 0 {
		if err := os.WriteFile(note, []byte(m.StateSHA256+"\n"), fileMode); err != nil {
			return m, fmt.Errorf("%s: %w", doing, err)
		}
	}
	f, err := os.OpenFile(partPath, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return m, fmt.Errorf("%s: %w", doing, err)
	}
	defer f.Close()
	if err := f.Truncate(offset); err != nil {
		return m, fmt.Errorf("%s: %w", doing, err)
	}
	// The bytes already here count towards the hash: read them once more.
	sum := sha256.New()
	if _, err := io.Copy(sum, io.LimitReader(f, offset)); err != nil {
		return m, fmt.Errorf("%s: read the partial download: %w", doing, err)
	}
	progress.report(offset, m.StateBytes)
	if offset < m.StateBytes {
		if err := r.download(ctx, doing, name, m.StateKey, f, sum, offset, m.StateBytes, progress); err != nil {
			return m, err
		}
	}
	if err := f.Sync(); err != nil {
		return m, fmt.Errorf("%s: %w", doing, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != m.StateSHA256 {
		// Not worth resuming: the next pull starts over.
		os.Remove(partPath)
		os.Remove(note)
		return m, fmt.Errorf("%s: %w: the state's sha256 is %s, its manifest says %s (push it again from the machine that saved it)",
			doing, ErrCorrupt, got, m.StateSHA256)
	}
	os.Remove(note)
	return m, nil
}

// download appends the state's bytes from offset to f, hashing them as they come.
func (r *Remote) download(ctx context.Context, doing, name, key string, f *os.File, sum hash.Hash, offset, total int64, progress Progress) error {
	in := &s3.GetObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(key)}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := r.client.GetObject(ctx, in)
	if err != nil {
		return r.explain(doing, name, err)
	}
	defer out.Body.Close()
	if out.ContentLength != nil && offset+*out.ContentLength != total {
		return fmt.Errorf("%s: %w: the state object holds %d bytes from %d, its manifest says %d in all",
			doing, ErrCorrupt, *out.ContentLength, offset, total)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	w := &countingWriter{w: io.MultiWriter(f, sum), done: offset, total: total, progress: progress}
	n, err := io.Copy(w, io.LimitReader(out.Body, total-offset+1))
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	case err != nil:
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			return fmt.Errorf("%s: write %s: %w", doing, f.Name(), err)
		}
		return fmt.Errorf("%s: %w: the transfer broke off after %d of %d bytes (%v); pull again to resume",
			doing, ErrUnreachable, offset+n, total, err)
	case offset+n != total:
		return fmt.Errorf("%s: %w: got %d bytes of a state its manifest says is %d", doing, ErrCorrupt, offset+n, total)
	}
	return nil
}

type countingWriter struct {
	w           io.Writer
	done, total int64
	progress    Progress
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.done += int64(n)
	c.progress.report(c.done, c.total)
	return n, err
}

// Entry is one context in the remote, as List shows it.
type Entry struct {
	Manifest
	Modified time.Time
}

// List returns the contexts in the remote, by name (the manifests' metadata left out).
func (r *Remote) List(ctx context.Context) ([]Entry, error) {
	doing := fmt.Sprintf("list %s", r)
	var out []Entry
	p := s3.NewListObjectsV2Paginator(r.client, &s3.ListObjectsV2Input{Bucket: aws.String(r.bucket), Prefix: aws.String(r.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, r.explain(doing, "", err)
		}
		for _, obj := range page.Contents {
			rest := strings.TrimPrefix(aws.ToString(obj.Key), r.prefix)
			name, ok := strings.CutSuffix(rest, ".json")
			if !ok || strings.Contains(name, "/") {
				continue
			}
			m, err := r.Manifest(ctx, name)
			if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) {
				continue // not ours, or removed meanwhile
			}
			if err != nil {
				return nil, err
			}
			m.Meta = nil
			out = append(out, Entry{Manifest: m, Modified: aws.ToTime(obj.LastModified)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes a context from the remote: the manifest first, so that it is never listed without
// its state.
func (r *Remote) Remove(ctx context.Context, name string) error {
	doing := fmt.Sprintf("remove context %q from %s", name, r)
	// S3's DELETE succeeds on a missing key; look first, so that a typo is an error.
	if _, err := r.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(r.manifestKey(name))}); err != nil {
		return r.explain(doing, name, err)
	}
	if _, err := r.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(r.manifestKey(name))}); err != nil {
		return r.explain(doing, name, err)
	}
	if err := r.removeStates(ctx, name, ""); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	return nil
}

// EveryTenth calls show when a transfer starts and each time it passes another tenth of the way
// (tenth 0 to 10), one call at a time: for progress lines that should not flood a log or a terminal.
func EveryTenth(show func(tenth int, done, total int64)) Progress {
	var mu sync.Mutex
	last := -1
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if tenth := int(done * 10 / total); tenth > last {
			last = tenth
			show(tenth, done, total)
		}
	}
}
