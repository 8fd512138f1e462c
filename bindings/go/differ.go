package erofs

/*
#include <stdlib.h>
#include "erofs_snapshotter.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Differ is a containerd diff.Applier and diff.Comparer backed by the
// library's differ: Apply streams a layer from the content store into the
// library's EROFS writer (mkfs.erofs --tar for mkfs_options only it
// implements), writing the active snapshot's layer.erofs, which the next
// Commit installs as is (no files are unpacked into the upper dir).
//
// Apply answers errdefs.ErrNotImplemented, so that containerd's diff service
// moves on to its next differ (e.g. "walking"), for mounts that are not an
// active snapshot of this Snapshotter and for media types the library does
// not read itself: anything but OCI/Docker layer tars (plain, gzip, zstd) and
// EROFS layer blobs, e.g. encrypted layers, which need a stream processor.
// Stream processors registered in this process are not run for the types the
// library reads. Compare is always errdefs.ErrNotImplemented (containerd's
// walking differ computes diffs).
type Differ struct {
	sn    *Snapshotter
	store content.Provider
}

var (
	_ diff.Applier  = (*Differ)(nil)
	_ diff.Comparer = (*Differ)(nil)
)

// NewDiffer returns the differ of s, reading layers from store (a
// content.Store, or any content.Provider).
func NewDiffer(s *Snapshotter, store content.Provider) *Differ {
	return &Differ{sn: s, store: store}
}

// libraryMediaTypes are the layer media types the library reads itself, as
// erofs_snapshotter_media_types lists them (asked once).
var libraryMediaTypes = sync.OnceValues(func() (map[string]bool, error) {
	var out, cerr *C.char
	if rc := C.erofs_snapshotter_media_types(&out, &cerr); rc != C.EROFS_OK {
		return nil, newError(int32(rc), takeString(cerr))
	}
	var types []string
	if err := json.Unmarshal([]byte(takeString(out)), &types); err != nil {
		return nil, fmt.Errorf("decode media types from the library: %v: %w", err, errdefs.ErrInternal)
	}
	set := make(map[string]bool, len(types))
	for _, t := range types {
		set[t] = true
	}
	return set, nil
})

// LibraryAppliesMediaType reports whether the library applies layers of
// mediaType itself (OCI and Docker layer tars, plain, gzip or zstd; EROFS
// layer blobs, plain or +zstd): the library's own list.
func LibraryAppliesMediaType(mediaType string) bool {
	types, err := libraryMediaTypes()
	return err == nil && types[mediaType]
}

// Apply applies the layer desc, read from the content store, to the active
// snapshot whose mounts are given. It returns the uncompressed layer's
// descriptor (Digest is the diffID). The next Commit installs the layer as
// written; files put into the upper dir in between are not part of it (as
// with containerd's EROFS snapshotter and differ).
func (d *Differ) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	var config diff.ApplyConfig
	for _, o := range opts {
		if err := o(ctx, desc, &config); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("failed to apply config opt: %w", err)
		}
	}
	types, err := libraryMediaTypes()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if !types[desc.MediaType] {
		return ocispec.Descriptor{}, fmt.Errorf("erofs differ: media type %q needs a stream processor or another differ: %w",
			desc.MediaType, errdefs.ErrNotImplemented)
	}
	if len(mounts) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("erofs differ: no mounts: %w", errdefs.ErrNotImplemented)
	}
	mdoc, err := json.Marshal(mountDocs(mounts))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode mounts: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	ra, err := d.store.ReaderAt(ctx, desc)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("failed to get reader from content store: %w", err)
	}
	defer ra.Close()

	progress := config.Progress
	if progress == nil {
		progress = func(int64) {}
	}
	progress(0)
	var applied ocispec.Descriptor
	src := source{file: readerAtFile(ra)}
	if src.file == nil {
		src.r = io.NewSectionReader(ra, 0, ra.Size())
		src.progress = progress
	}
	err = src.run(ctx, func(fd int32) error {
		applied, err = d.sn.applyRaw(ctx, opApplyMounts, string(mdoc), fd, desc.MediaType, desc.Digest)
		return err
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if config.SyncFs {
		if err := syncMounts(mounts); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	progress(desc.Size)
	return applied, nil
}

// Compare is errdefs.ErrNotImplemented: containerd's diff service then uses
// its next differ (walking) on these mounts.
func (d *Differ) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("erofs differ does not compute diffs: %w", errdefs.ErrNotImplemented)
}

// Apply applies the layer read from r (a tar, gzip or zstd stream of
// mediaType, or an EROFS blob; mediaType "" detects the compression) to active
// snapshot key, so that the next Commit of key uses it. An *os.File is read
// by the library from its current offset; any other reader is streamed through
// a pipe. A non-empty dgst is verified against the data. The result is the
// uncompressed layer's descriptor (Digest is the diffID).
func (s *Snapshotter) Apply(ctx context.Context, key string, r io.Reader, mediaType string, dgst digest.Digest) (ocispec.Descriptor, error) {
	return s.applyReader(ctx, opApply, key, r, mediaType, dgst)
}

// applyReader makes library call op on key with the layer read from r (an
// *os.File directly, anything else through a pipe).
func (s *Snapshotter) applyReader(ctx context.Context, op applyOp, key string, r io.Reader, mediaType string, dgst digest.Digest) (ocispec.Descriptor, error) {
	var applied ocispec.Descriptor
	src := source{r: r}
	if f, ok := r.(*os.File); ok {
		src = source{file: f}
	}
	err := src.run(ctx, func(fd int32) (err error) {
		applied, err = s.applyRaw(ctx, op, key, fd, mediaType, dgst)
		return err
	})
	return applied, err
}

// applyOp is the library call applyRaw makes.
type applyOp int

const (
	opApply       applyOp = iota // erofs_snapshotter_apply(key)
	opApplyMounts                // erofs_snapshotter_apply_mounts(mounts JSON)
	opRepair                     // erofs_snapshotter_repair(key)
)

type applyOptions struct {
	MediaType string `json:"media_type,omitempty"`
	Digest    string `json:"digest,omitempty"`
}

type appliedDoc struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type"`
}

// applyRaw makes library call op (arg: the key, or the mounts' JSON) on
// descriptor fd.
func (s *Snapshotter) applyRaw(ctx context.Context, op applyOp, arg string, fd int32, mediaType string, dgst digest.Digest) (ocispec.Descriptor, error) {
	odoc, err := json.Marshal(applyOptions{MediaType: mediaType, Digest: dgst.String()})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode apply options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	copts := C.CString(string(odoc))
	defer C.free(unsafe.Pointer(copts))
	carg := C.CString(arg)
	defer C.free(unsafe.Pointer(carg))
	h, err := s.acquire(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var out, cerr *C.char
	var rc C.int32_t
	switch op {
	case opApplyMounts:
		rc = C.erofs_snapshotter_apply_mounts(h, carg, C.int32_t(fd), nil, copts, &out, &cerr)
	case opRepair:
		rc = C.erofs_snapshotter_repair(h, carg, C.int32_t(fd), nil, copts, &out, &cerr)
	default:
		rc = C.erofs_snapshotter_apply(h, carg, C.int32_t(fd), nil, copts, &out, &cerr)
	}
	s.release()
	if rc != C.EROFS_OK {
		return ocispec.Descriptor{}, newError(int32(rc), takeString(cerr))
	}
	var res appliedDoc
	if err := withBytes(out, func(b []byte) error { return json.Unmarshal(b, &res) }); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("decode apply result: %v: %w", err, errdefs.ErrInternal)
	}
	return ocispec.Descriptor{MediaType: res.MediaType, Digest: res.Digest, Size: res.Size}, nil
}

// source is what the library reads a layer from: a file's own descriptor,
// or a pipe that a goroutine fills from r (no temporary copy either way).
type source struct {
	file     *os.File
	r        io.Reader
	progress func(int64) // bytes copied so far (pipe only)
}

// pipeBuffer is large so that a remote content store (one gRPC read per
// buffer) is not called for every 32 KiB.
const pipeBuffer = 1 << 20

func (src source) run(ctx context.Context, fn func(fd int32) error) error {
	if src.file != nil {
		err := fn(int32(src.file.Fd()))
		runtime.KeepAlive(src.file)
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	// A pipe as large as one copy buffer: fewer wake-ups on either side.
	if rc, err := pw.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeBuffer) })
	}
	copied := make(chan error, 1)
	go func() {
		// Closing pw is the end of the layer for the library; on a read
		// error the library sees a truncated layer and the error below wins.
		_, err := io.CopyBuffer(pw, &countingReader{r: src.r, ctx: ctx, progress: src.progress}, make([]byte, pipeBuffer))
		pw.Close()
		copied <- err
	}()
	err = fn(int32(pr.Fd()))
	// The library has stopped reading: a writer still blocked gets EPIPE.
	pr.Close()
	cerr := <-copied
	if cerr != nil && !errors.Is(cerr, syscall.EPIPE) {
		return fmt.Errorf("read layer: %w", cerr)
	}
	return err
}

type countingReader struct {
	r        io.Reader
	ctx      context.Context
	n        int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// readerAtFile is the *os.File behind a ReaderAt of containerd's local
// content store (its Reader() is an io.LimitReader over the blob file, opened
// for this reader at offset 0), or nil.
func readerAtFile(ra content.ReaderAt) *os.File {
	rr, ok := ra.(interface{ Reader() io.Reader })
	if !ok {
		return nil
	}
	lr, ok := rr.Reader().(*io.LimitedReader)
	if !ok {
		return nil
	}
	f, ok := lr.R.(*os.File)
	if !ok {
		return nil
	}
	// The library reads to EOF: only a file that is exactly the blob will do.
	if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != 0 {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != ra.Size() {
		return nil
	}
	return f
}

// syncMounts is diff.WithSyncFs: syncfs(2) on the snapshot's filesystem.
func syncMounts(mounts []mount.Mount) error {
	dir := ""
	for _, m := range mounts {
		if m.Type == "bind" || strings.HasSuffix(m.Type, "bind") {
			dir = m.Source
		}
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				dir = v
			}
		}
	}
	if dir == "" {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
