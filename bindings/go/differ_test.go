package erofs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func newContentStore(t testing.TB) content.Store {
	t.Helper()
	cs, err := local.NewStore(filepath.Join(t.TempDir(), "content"))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// putBlob writes data into cs and returns its descriptor.
func putBlob(t testing.TB, cs content.Store, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(context.Background(), cs, desc.Digest.String(), bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	return desc
}

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

// tarOf is a layer tar made by archive/tar (the equivalence test uses GNU tar).
func tarOf(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil && h.Size > 0 {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func zstdOf(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// readView mounts a view of committed snapshot name and returns the
// contents of files (missing files map to "<missing>").
func readView(t testing.TB, s *Snapshotter, name string, files ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	key := "view-" + name
	mounts, err := s.View(ctx, key, name)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Remove(ctx, key)
	target := t.TempDir()
	if err := MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	defer UnmountAll(target, false)
	got := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(target, f))
		switch {
		case errors.Is(err, os.ErrNotExist):
			got[f] = "<missing>"
		case err != nil:
			t.Fatal(err)
		default:
			got[f] = string(b)
		}
	}
	return got
}

// noFile hides the *os.File behind a ReaderAt, so the differ takes the pipe path.
type noFile struct{ content.Provider }

func (p noFile) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ra, err := p.Provider.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	return struct{ content.ReaderAt }{ra}, nil
}

func TestDifferAppliesCompressions(t *testing.T) {
	base := tarOf(t,
		tarEntry{name: "etc/", typ: tar.TypeDir},
		tarEntry{name: "etc/hostname", body: "base\n"},
		tarEntry{name: "data/", typ: tar.TypeDir},
		tarEntry{name: "data/gone", body: "gone"},
		tarEntry{name: "data/kept", body: "kept"},
	)
	top := tarOf(t,
		tarEntry{name: "data/.wh.gone"},
		tarEntry{name: "etc/hostname", body: "top\n"},
		tarEntry{name: "bin/", typ: tar.TypeDir},
		tarEntry{name: "bin/sh", link: "/bin/busybox", typ: tar.TypeSymlink},
	)
	cases := []struct {
		name      string
		mediaType string
		compress  func(testing.TB, []byte) []byte
		pipe      bool
		cfg       Config
	}{
		{"tar", ocispec.MediaTypeImageLayer, nil, false, Config{}},
		{"gzip", ocispec.MediaTypeImageLayerGzip, gzipOf, false, Config{}},
		{"zstd", ocispec.MediaTypeImageLayerZstd, zstdOf, false, Config{}},
		{"docker-gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip", gzipOf, false, Config{}},
		{"gzip-pipe", ocispec.MediaTypeImageLayerGzip, gzipOf, true, Config{}},
		{"zstd-pipe", ocispec.MediaTypeImageLayerZstd, zstdOf, true, Config{}},
		{"gzip-tar-index", ocispec.MediaTypeImageLayerGzip, gzipOf, false, Config{EnableTarIndex: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := open(t, c.cfg)
			cs := newContentStore(t)
			var store content.Provider = cs
			if c.pipe {
				store = noFile{cs}
			}
			d := NewDiffer(s, store)
			ctx := context.Background()
			parent := ""
			for i, layer := range [][]byte{base, top} {
				blob := layer
				if c.compress != nil {
					blob = c.compress(t, layer)
				}
				desc := putBlob(t, cs, c.mediaType, blob)
				ra, err := store.ReaderAt(ctx, desc)
				if err != nil {
					t.Fatal(err)
				}
				if hasFile := readerAtFile(ra) != nil; hasFile == c.pipe {
					t.Fatalf("fd path %v, want %v", hasFile, !c.pipe)
				}
				ra.Close()
				key := fmt.Sprintf("active-%d", i)
				mounts, err := s.Prepare(ctx, key, parent)
				if err != nil {
					t.Fatal(err)
				}
				var progress []int64
				got, err := d.Apply(ctx, desc, mounts, diff.WithProgress(func(_ ocispec.Descriptor, n int64) { progress = append(progress, n) }))
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				want := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
				if got.MediaType != want.MediaType || got.Digest != want.Digest || got.Size != want.Size {
					t.Fatalf("layer %d: applied %+v, want %+v", i, got, want)
				}
				if len(progress) < 2 || progress[0] != 0 || progress[len(progress)-1] != desc.Size {
					t.Fatalf("progress %v, want 0 ... %d", progress, desc.Size)
				}
				name := fmt.Sprintf("layer-%d", i)
				if err := s.Commit(ctx, name, key); err != nil {
					t.Fatal(err)
				}
				parent = name
			}
			got := readView(t, s, parent, "etc/hostname", "data/gone", "data/kept")
			want := map[string]string{"etc/hostname": "top\n", "data/gone": "<missing>", "data/kept": "kept"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("view: %v, want %v", got, want)
			}
		})
	}
}

func TestDifferDeclines(t *testing.T) {
	s := open(t, Config{})
	cs := newContentStore(t)
	d := NewDiffer(s, cs)
	ctx := context.Background()
	layer := tarOf(t, tarEntry{name: "f", body: "x"})
	desc := putBlob(t, cs, ocispec.MediaTypeImageLayer, layer)
	mounts, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	foreign := t.TempDir()
	for name, m := range map[string][]mount.Mount{
		"bind elsewhere":    {{Type: "bind", Source: foreign, Options: []string{"rbind", "rw"}}},
		"overlay elsewhere": {{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + foreign, "upperdir=" + foreign + "/u", "workdir=" + foreign + "/w"}}},
		"no mounts":         nil,
	} {
		if _, err := d.Apply(ctx, desc, m); !errdefs.IsNotImplemented(err) {
			t.Errorf("%s: %v, want ErrNotImplemented", name, err)
		}
	}
	// An encrypted layer needs a stream processor: the next differ's job.
	enc := desc
	enc.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
	if _, err := d.Apply(ctx, enc, mounts); !errdefs.IsNotImplemented(err) {
		t.Errorf("encrypted layer: %v, want ErrNotImplemented", err)
	}
	// Read-only mounts (a view) are a failed precondition, as in containerd's EROFS differ.
	commitEmpty(t, s, "c", "")
	view, err := s.View(ctx, "v", "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Apply(ctx, desc, view); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("read-only mounts: %v, want ErrFailedPrecondition", err)
	}
	if _, err := d.Compare(ctx, mounts, mounts); !errdefs.IsNotImplemented(err) {
		t.Errorf("Compare: %v, want ErrNotImplemented", err)
	}
	// Nothing was applied: the snapshot commits empty.
	if err := s.Commit(ctx, "a-done", "a"); err != nil {
		t.Fatal(err)
	}
	if got := readView(t, s, "a-done", "f"); got["f"] != "<missing>" {
		t.Fatalf("declined applies left content: %v", got)
	}
	for _, mt := range []string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.erofs.layer.v1", "application/vnd.erofs.layer.v1+zstd"} {
		if !LibraryAppliesMediaType(mt) {
			t.Errorf("LibraryAppliesMediaType(%q) is false", mt)
		}
	}
	for _, mt := range []string{"", "application/vnd.erofs.layer.v1+gzip", "application/vnd.oci.image.layer.v1.tar+encrypted"} {
		if LibraryAppliesMediaType(mt) {
			t.Errorf("LibraryAppliesMediaType(%q) is true", mt)
		}
	}
}

// A corrupt layer is an invalid argument and leaves the snapshot active and
// empty: a good layer still applies to it.
func TestDifferCorruptLayer(t *testing.T) {
	s := open(t, Config{})
	cs := newContentStore(t)
	d := NewDiffer(s, cs)
	ctx := context.Background()
	good := tarOf(t, tarEntry{name: "f", body: strings.Repeat("payload ", 4096)})
	gz := gzipOf(t, good)
	bad := bytes.Clone(gz)
	for i := len(bad) / 3; i < len(bad)/2; i++ {
		bad[i] ^= 0x5a
	}
	truncated := gz[:len(gz)/2]
	mounts, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string][]byte{"corrupt": bad, "truncated": truncated, "not gzip": good} {
		desc := putBlob(t, cs, ocispec.MediaTypeImageLayerGzip, blob)
		for _, store := range []content.Provider{cs, noFile{cs}} {
			_, err := NewDiffer(s, store).Apply(ctx, desc, mounts)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s layer: %v, want ErrInvalidArgument", name, err)
			}
			info, err := s.Stat(ctx, "a")
			if err != nil || info.Kind != snapshots.KindActive {
				t.Fatalf("after the %s layer: %+v, %v", name, info, err)
			}
		}
	}
	// A wrong digest through the direct API.
	if _, err := s.Apply(ctx, "a", bytes.NewReader(gz), ocispec.MediaTypeImageLayerGzip, digest.FromString("other")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("digest mismatch: %v, want ErrInvalidArgument", err)
	}
	desc := putBlob(t, cs, ocispec.MediaTypeImageLayerGzip, gz)
	if _, err := d.Apply(ctx, desc, mounts); err != nil {
		t.Fatalf("good layer after bad ones: %v", err)
	}
	if err := s.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	if got := readView(t, s, "c", "f"); got["f"] != strings.Repeat("payload ", 4096) {
		t.Fatalf("view after recovery: %d bytes", len(got["f"]))
	}
}

// failingProvider's readers fail after half the blob, as a broken remote
// content store would.
type failingProvider struct{ content.Provider }

var errRead = errors.New("content store went away")

func (p failingProvider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ra, err := p.Provider.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	return &failingReaderAt{ReaderAt: ra}, nil
}

type failingReaderAt struct{ content.ReaderAt }

func (r *failingReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > r.Size()/2 {
		return 0, errRead
	}
	return r.ReaderAt.ReadAt(b, off)
}

// The content store's error, not the library's view of a truncated layer, is
// what Apply returns when reading the blob fails.
func TestDifferReadError(t *testing.T) {
	s := open(t, Config{})
	cs := newContentStore(t)
	ctx := context.Background()
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	layer := tarOf(t, tarEntry{name: "big", body: string(big)})
	desc := putBlob(t, cs, ocispec.MediaTypeImageLayer, layer)
	mounts, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewDiffer(s, failingProvider{cs}).Apply(ctx, desc, mounts); !errors.Is(err, errRead) {
		t.Fatalf("apply with a failing reader: %v, want %v", err, errRead)
	}
	if info, err := s.Stat(ctx, "a"); err != nil || info.Kind != snapshots.KindActive {
		t.Fatalf("after the failed read: %+v, %v", info, err)
	}
}

// Snapshotter.Apply reads a file from its current offset, or any reader
// through a pipe.
func TestSnapshotterApply(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	layer := tarOf(t, tarEntry{name: "hello", body: "world"})
	gz := gzipOf(t, layer)
	f, err := os.CreateTemp(t.TempDir(), "layer")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("skip me")
	f.Write(gz)
	if _, err := f.Seek(int64(len("skip me")), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	for i, src := range []io.Reader{f, bytes.NewReader(gz), io.MultiReader(bytes.NewReader(gz[:10]), bytes.NewReader(gz[10:]))} {
		key := fmt.Sprintf("a%d", i)
		if _, err := s.Prepare(ctx, key, ""); err != nil {
			t.Fatal(err)
		}
		// Media type "" detects the compression.
		got, err := s.Apply(ctx, key, src, "", digest.FromBytes(gz))
		if err != nil {
			t.Fatalf("source %d: %v", i, err)
		}
		if got.Digest != digest.FromBytes(layer) || got.Size != int64(len(layer)) {
			t.Fatalf("source %d: %+v", i, got)
		}
		if err := s.Commit(ctx, "c"+key, key); err != nil {
			t.Fatal(err)
		}
		if v := readView(t, s, "c"+key, "hello"); v["hello"] != "world" {
			t.Fatalf("source %d: view %v", i, v)
		}
	}
	if _, err := s.Apply(ctx, "missing", bytes.NewReader(gz), "", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("apply to a missing key: %v", err)
	}
}

// Applies run concurrently on one handle (each its own snapshot).
func TestDifferConcurrent(t *testing.T) {
	s := open(t, Config{})
	cs := newContentStore(t)
	d := NewDiffer(s, noFile{cs})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		layer := tarOf(t, tarEntry{name: "n", body: fmt.Sprint(i)})
		desc := putBlob(t, cs, ocispec.MediaTypeImageLayerGzip, gzipOf(t, layer))
		key := fmt.Sprintf("a%d", i)
		mounts, err := s.Prepare(ctx, key, "")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.Apply(ctx, desc, mounts); err != nil {
				errs <- err
				return
			}
			errs <- s.Commit(ctx, "c"+key, key)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		if v := readView(t, s, fmt.Sprintf("ca%d", i), "n"); v["n"] != fmt.Sprint(i) {
			t.Fatalf("snapshot %d: %v", i, v)
		}
	}
}

func TestApplyStringsAreFreed(t *testing.T) {
	s := open(t, Config{})
	cs := newContentStore(t)
	d := NewDiffer(s, cs)
	ctx := context.Background()
	desc := putBlob(t, cs, ocispec.MediaTypeImageLayer, tarOf(t, tarEntry{name: "f", body: "x"}))
	mounts, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	before := stringsOutstanding()
	for i := 0; i < 3; i++ {
		d.Apply(ctx, desc, mounts)
		d.Apply(ctx, desc, []mount.Mount{{Type: "bind", Source: "/tmp"}})
		s.Apply(ctx, "missing", bytes.NewReader(nil), "", "")
		s.Apply(ctx, "a", bytes.NewReader([]byte("garbage")), ocispec.MediaTypeImageLayerGzip, "")
	}
	if after := stringsOutstanding(); after != before {
		t.Fatalf("%d library strings were not freed", after-before)
	}
}

// The apply limits of the configuration reach the library: nil keeps its
// default, a value sets the bound, 0 removes it.
func TestApplyLimits(t *testing.T) {
	ctx := context.Background()
	layer := tarOf(t, tarEntry{name: "big", body: strings.Repeat("b", 4096)})
	one := uint64(1024)
	s := open(t, Config{MaxFileSize: &one})
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	_, err := s.Apply(ctx, "a", bytes.NewReader(layer), ocispec.MediaTypeImageLayer, "")
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"big"`) || !strings.Contains(err.Error(), "max_file_size (1024 bytes)") {
		t.Fatalf("a file past max_file_size: %v", err)
	}
	none := uint64(0)
	s = open(t, Config{MaxFileSize: &none, MaxLayerSize: &none, MaxExpansionRatio: &none, ConvertTimeoutSeconds: 60})
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, "a", bytes.NewReader(layer), ocispec.MediaTypeImageLayer, ""); err != nil {
		t.Fatalf("without limits: %v", err)
	}
}
