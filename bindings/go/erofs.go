package erofs

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#include <stdlib.h>
#include <string.h>
#include "erofs_snapshotter.h"

// Defined in log.go (cgo export).
extern void erofsGoLog(uintptr_t handle, int32_t level, char *message);

// The handle travels as an integer so no Go pointer is ever given to C.
static void erofs_go_log(void *user_data, int32_t level, const char *message) {
	erofsGoLog((uintptr_t)user_data, level, (char *)message);
}

static int32_t erofs_go_open(const char *config, uintptr_t handle, int32_t max_level,
                             erofs_snapshotter **out, char **err) {
	return erofs_snapshotter_open_with_logger(config, erofs_go_log, (void *)handle,
	                                          max_level, out, err);
}
*/
import "C"

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Snapshotter is a containerd snapshots.Snapshotter (and snapshots.Cleaner)
// backed by the erofs-snapshotter library. It is safe for concurrent use.
type Snapshotter struct {
	// Calls hold mu for reading; Close takes it for writing, so the handle is
	// never freed under a running call.
	mu      sync.RWMutex
	h       *C.erofs_snapshotter
	logger  cgo.Handle // a *logger, until the handle is closed
	cleanup runtime.Cleanup
	root    string
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

// New opens the snapshotter configured by cfg, creating its root if needed.
// Library warnings (and, when ctx's logger is at debug level, one record per
// operation) go to log.G(ctx).
func New(ctx context.Context, cfg Config) (*Snapshotter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	doc, root, err := cfg.document()
	if err != nil {
		return nil, err
	}
	entry := log.G(ctx).WithField("snapshotter", "erofs")
	lg := cgo.NewHandle(&logger{entry: entry})
	cdoc := C.CString(doc)
	defer C.free(unsafe.Pointer(cdoc))
	var h *C.erofs_snapshotter
	var cerr *C.char
	rc := C.erofs_go_open(cdoc, C.uintptr_t(lg), C.int32_t(maxLevel(entry)), &h, &cerr)
	if rc != C.EROFS_OK {
		lg.Delete()
		return nil, newError(int32(rc), takeString(cerr))
	}
	handlesOpen.Add(1)
	s := &Snapshotter{h: h, logger: lg, root: root}
	// A safety net only: Close is the way to release the handle.
	s.cleanup = runtime.AddCleanup(s, closeRaw, raw{h: h, logger: lg})
	return s, nil
}

type raw struct {
	h      *C.erofs_snapshotter
	logger cgo.Handle
}

// handlesOpen counts open C handles (for tests of the cleanup).
var handlesOpen atomic.Int64

func closeRaw(r raw) {
	C.erofs_snapshotter_close(r.h)
	handlesOpen.Add(-1)
	if r.logger != 0 {
		r.logger.Delete()
	}
}

// Root is the snapshotter's root directory as configured.
func (s *Snapshotter) Root() string { return s.root }

// Close releases the handle: it waits for calls in flight and for background
// deletion. Calling it again does nothing; any other call afterwards fails
// with errdefs.ErrFailedPrecondition.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return nil
	}
	s.cleanup.Stop()
	closeRaw(raw{h: s.h, logger: s.logger})
	s.h, s.logger = nil, 0
	runtime.KeepAlive(s)
	return nil
}

var errClosed = fmt.Errorf("erofs snapshotter is closed: %w", errdefs.ErrFailedPrecondition)

// acquire checks ctx and pins the handle until release.
func (s *Snapshotter) acquire(ctx context.Context) (*C.erofs_snapshotter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.h == nil {
		s.mu.RUnlock()
		return nil, errClosed
	}
	return s.h, nil
}

func (s *Snapshotter) release() {
	s.mu.RUnlock()
	runtime.KeepAlive(s)
}

// Stat returns the info of snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	h, err := s.acquire(ctx)
	if err != nil {
		return snapshots.Info{}, err
	}
	var out, cerr *C.char
	ck := newGoCString(key)
	rc := C.erofs_snapshotter_stat(h, ck.ptr(), &out, &cerr)
	s.release()
	runtime.KeepAlive(ck)
	if rc != C.EROFS_OK {
		return snapshots.Info{}, newError(int32(rc), takeString(cerr))
	}
	var info snapshots.Info
	err = withBytes(out, func(b []byte) error { return decodeInfo(b, &info) })
	return info, err
}

// Update sets the labels of info.Name following fieldpaths: none or "labels"
// replaces all labels, "labels.<key>" one label.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	doc, err := json.Marshal(updateDoc{Name: info.Name, Labels: info.Labels})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("encode info: %w", errdefs.ErrInvalidArgument)
	}
	cdoc := C.CString(string(doc))
	defer C.free(unsafe.Pointer(cdoc))
	var cpaths *C.char
	if len(fieldpaths) > 0 {
		if cpaths, err = jsonCString(fieldpaths); err != nil {
			return snapshots.Info{}, err
		}
		defer C.free(unsafe.Pointer(cpaths))
	}
	h, err := s.acquire(ctx)
	if err != nil {
		return snapshots.Info{}, err
	}
	var out, cerr *C.char
	rc := C.erofs_snapshotter_update(h, cdoc, cpaths, &out, &cerr)
	s.release()
	if rc != C.EROFS_OK {
		return snapshots.Info{}, newError(int32(rc), takeString(cerr))
	}
	var updated snapshots.Info
	err = withBytes(out, func(b []byte) error { return decodeInfo(b, &updated) })
	return updated, err
}

type updateDoc struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Usage returns the disk usage of snapshot key: its upper dir while active,
// its layer blob once committed.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	h, err := s.acquire(ctx)
	if err != nil {
		return snapshots.Usage{}, err
	}
	var size, inodes C.int64_t
	var cerr *C.char
	ck := C.CString(key)
	rc := C.erofs_snapshotter_usage(h, ck, &size, &inodes, &cerr)
	s.release()
	C.free(unsafe.Pointer(ck))
	if rc != C.EROFS_OK {
		return snapshots.Usage{}, newError(int32(rc), takeString(cerr))
	}
	return snapshots.Usage{Size: int64(size), Inodes: int64(inodes)}, nil
}

// ExportLayer puts the layer of committed snapshot key into the layer
// content cache directory dir (an absolute path; what another root's
// Config.LayerContentCaches names), by the diffID of its
// "containerd.io/snapshot/diff-id" label (containerd's unpacker sets it),
// and returns the file's path. A root using that cache converts the layer
// no more. The file is written whole and renamed into place.
func (s *Snapshotter) ExportLayer(ctx context.Context, key, dir string) (string, error) {
	h, err := s.acquire(ctx)
	if err != nil {
		return "", err
	}
	var out, cerr *C.char
	ck, cd := C.CString(key), C.CString(dir)
	rc := C.erofs_snapshotter_export_layer(h, ck, cd, &out, &cerr)
	s.release()
	C.free(unsafe.Pointer(ck))
	C.free(unsafe.Pointer(cd))
	if rc != C.EROFS_OK {
		return "", newError(int32(rc), takeString(cerr))
	}
	return takeString(out), nil
}

// Mounts returns the mounts of active snapshot or view key.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	h, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var out, cerr *C.char
	ck := newGoCString(key)
	rc := C.erofs_snapshotter_mounts(h, ck.ptr(), &out, &cerr)
	s.release()
	runtime.KeepAlive(ck)
	return s.mountsResult(rc, out, cerr)
}

// Prepare creates active snapshot key on committed snapshot parent ("" for
// none). Labels come from opts, applied to a snapshots.Info.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, false, key, parent, opts)
}

// View creates read-only snapshot key of committed snapshot parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, true, key, parent, opts)
}

func (s *Snapshotter) create(ctx context.Context, view bool, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	base, err := applyOpts(opts)
	if err != nil {
		return nil, err
	}
	clabels, err := labelsCString(base.Labels)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(clabels))
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	var cp *C.char
	if parent != "" {
		cp = C.CString(parent)
		defer C.free(unsafe.Pointer(cp))
	}
	h, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var out, cerr *C.char
	var rc C.int32_t
	if view {
		rc = C.erofs_snapshotter_view(h, ck, cp, clabels, &out, &cerr)
	} else {
		rc = C.erofs_snapshotter_prepare(h, ck, cp, clabels, &out, &cerr)
	}
	s.release()
	return s.mountsResult(rc, out, cerr)
}

func (s *Snapshotter) mountsResult(rc C.int32_t, out, cerr *C.char) ([]mount.Mount, error) {
	if rc != C.EROFS_OK {
		return nil, newError(int32(rc), takeString(cerr))
	}
	var mounts []mount.Mount
	err := withBytes(out, func(b []byte) error { return decodeMounts(b, &mounts) })
	return mounts, err
}

// Commit converts active snapshot key into committed snapshot name. The upper
// dir must be unmounted. Labels come from opts. A parent given with
// snapshots.WithParent rebases a snapshot prepared without a parent onto it
// (containerd's parallel unpack, snapshots.RebaseCap): from then on its
// chain is the parent's. The parent it was prepared on changes nothing;
// another one is errdefs.ErrInvalidArgument, as in containerd's storage.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	base, err := applyOpts(opts)
	if err != nil {
		return err
	}
	clabels, err := labelsCString(base.Labels)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(clabels))
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	// snapshots.WithParent: a snapshot prepared without a parent is rebased
	// onto it (containerd's parallel unpack; RebaseCap).
	cp := C.CString(base.Parent)
	defer C.free(unsafe.Pointer(cp))
	h, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	var cerr *C.char
	rc := C.erofs_snapshotter_commit_with_parent(h, cn, ck, cp, clabels, &cerr)
	s.release()
	if rc != C.EROFS_OK {
		return newError(int32(rc), takeString(cerr))
	}
	return nil
}

// Remove deletes snapshot key; its files are reclaimed in the background.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	h, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	var cerr *C.char
	ck := C.CString(key)
	rc := C.erofs_snapshotter_remove(h, ck, &cerr)
	s.release()
	C.free(unsafe.Pointer(ck))
	if rc != C.EROFS_OK {
		return newError(int32(rc), takeString(cerr))
	}
	return nil
}

// Walk calls fn for every snapshot matching any of filters (containerd filter
// syntax, evaluated by the library), ordered by name.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	var cf *C.char
	if len(filters) > 0 {
		var err error
		if cf, err = jsonCString(filters); err != nil {
			return err
		}
		defer C.free(unsafe.Pointer(cf))
	}
	h, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	var out, cerr *C.char
	rc := C.erofs_snapshotter_walk(h, cf, &out, &cerr)
	s.release()
	if rc != C.EROFS_OK {
		return newError(int32(rc), takeString(cerr))
	}
	// One info at a time: memory does not grow with the number of snapshots
	// beyond the library's answer itself.
	return withBytes(out, func(b []byte) error {
		return decodeEachInfo(b, func(info snapshots.Info) error { return fn(ctx, info) })
	})
}

// Capabilities are what a containerd plugin of this snapshotter advertises
// (ic.Meta.Capabilities, or capabilities = [...] of a proxy plugin):
// snapshots.RebaseCap ("rebase": Commit honours snapshots.WithParent, so
// containerd unpacks in parallel), "only-remap-ids" (user namespaces only
// through ID-mapped layers, never a chown, as containerd's EROFS
// snapshotter), and "remap-ids" when this kernel mounts EROFS layers and
// overlayfs through ID-mapped mounts (tried once per process). With it, a
// snapshot labelled containerd.io/snapshot/uidmapping and gidmapping gets an
// upper dir owned by the mapped root and mounts with uidmap= and gidmap=
// options, which containerd's mount code (or MountAll) makes ID-mapped.
func (s *Snapshotter) Capabilities(ctx context.Context) ([]string, error) {
	return s.stringList(ctx, "capabilities", func(h *C.erofs_snapshotter, out, cerr **C.char) C.int32_t {
		return C.erofs_snapshotter_capabilities(h, out, cerr)
	})
}

// stringList makes call, a library function that writes a JSON array of
// strings (what names it in an error), on the handle.
func (s *Snapshotter) stringList(ctx context.Context, what string,
	call func(h *C.erofs_snapshotter, out, cerr **C.char) C.int32_t) ([]string, error) {
	h, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var out, cerr *C.char
	rc := call(h, &out, &cerr)
	s.release()
	if rc != C.EROFS_OK {
		return nil, newError(int32(rc), takeString(cerr))
	}
	var list []string
	if err := withBytes(out, func(b []byte) error { return json.Unmarshal(b, &list) }); err != nil {
		return nil, fmt.Errorf("decode %s: %v: %w", what, err, errdefs.ErrInternal)
	}
	return list, nil
}

// Cleanup deletes what no snapshot owns (snapshots.Cleaner).
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	h, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	var cerr *C.char
	rc := C.erofs_snapshotter_cleanup(h, &cerr)
	s.release()
	if rc != C.EROFS_OK {
		return newError(int32(rc), takeString(cerr))
	}
	return nil
}

// MountAll mounts mounts on target with plain mount(2) calls (no containerd
// mount manager needed); on failure nothing stays mounted.
func MountAll(mounts []mount.Mount, target string) error {
	doc, err := json.Marshal(mountDocs(mounts))
	if err != nil {
		return fmt.Errorf("encode mounts: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	cm := C.CString(string(doc))
	defer C.free(unsafe.Pointer(cm))
	ct := C.CString(target)
	defer C.free(unsafe.Pointer(ct))
	var cerr *C.char
	if rc := C.erofs_snapshotter_mount_all(cm, ct, &cerr); rc != C.EROFS_OK {
		return newError(int32(rc), takeString(cerr))
	}
	return nil
}

// UnmountAll unmounts everything stacked on target; detach unmounts lazily.
// A target that is not a mount point is not an error.
func UnmountAll(target string, detach bool) error {
	ct := C.CString(target)
	defer C.free(unsafe.Pointer(ct))
	var flags C.uint32_t
	if detach {
		flags = C.EROFS_UNMOUNT_DETACH
	}
	var cerr *C.char
	if rc := C.erofs_snapshotter_unmount_all(ct, flags, &cerr); rc != C.EROFS_OK {
		return newError(int32(rc), takeString(cerr))
	}
	return nil
}

// Version is the library's version.
func Version() string {
	return C.GoString(C.erofs_snapshotter_version())
}

// stringsOutstanding counts library strings not yet freed (for leak tests).
func stringsOutstanding() int64 {
	return int64(C.erofs_snapshotter_strings_outstanding())
}

// takeString copies a string returned by the library and frees it.
func takeString(p *C.char) string {
	if p == nil {
		return ""
	}
	s := C.GoString(p)
	C.erofs_snapshotter_string_free(p)
	return s
}

// withBytes lends fn the bytes of a string returned by the library, then
// frees it; fn must copy what it keeps.
func withBytes(p *C.char, fn func([]byte) error) error {
	if p == nil {
		return fmt.Errorf("library returned no result: %w", errdefs.ErrInternal)
	}
	defer C.erofs_snapshotter_string_free(p)
	return fn(cStringBytes(p))
}

// minPageSize is the smallest page size of the platforms Go runs on: a read
// within one such page of a readable byte cannot fault.
const minPageSize = 4096

// cStringBytes is the NUL-terminated C string p (without its NUL) as a slice
// over C memory. The NUL is found with the vectorized IndexByte one page at
// a time, never reading past the page that holds it, as C's strlen does:
// a call of C.strlen would cost a cgo transition, on every Stat and Mounts.
func cStringBytes(p *C.char) []byte {
	start := unsafe.Pointer(p)
	n := 0
	for {
		at := unsafe.Add(start, n)
		room := minPageSize - int(uintptr(at)%minPageSize)
		if i := bytes.IndexByte(unsafe.Slice((*byte)(at), room), 0); i >= 0 {
			return unsafe.Slice((*byte)(start), n+i)
		}
		n += room
	}
}

// goCString is a NUL-terminated copy of s in Go memory, which cgo lets a C
// call read (it holds no Go pointers, and the library does not keep it):
// C.CString and C.free would be two more cgo transitions on the hot paths.
type goCString []byte

func newGoCString(s string) goCString {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

func (b goCString) ptr() *C.char { return (*C.char)(unsafe.Pointer(&b[0])) }

func applyOpts(opts []snapshots.Opt) (snapshots.Info, error) {
	var base snapshots.Info
	for _, opt := range opts {
		if err := opt(&base); err != nil {
			return snapshots.Info{}, err
		}
	}
	return base, nil
}

// labelsCString is NULL for no labels; free the result with C.free.
func labelsCString(labels map[string]string) (*C.char, error) {
	if len(labels) == 0 {
		return nil, nil
	}
	return jsonCString(labels)
}

func jsonCString(v any) (*C.char, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %v: %w", v, err, errdefs.ErrInvalidArgument)
	}
	return C.CString(string(b)), nil
}

type mountDoc struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Target  string   `json:"target,omitempty"`
	Options []string `json:"options"`
}

func mountDocs(mounts []mount.Mount) []mountDoc {
	docs := make([]mountDoc, len(mounts))
	for i, m := range mounts {
		docs[i] = mountDoc{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
		if docs[i].Options == nil {
			docs[i].Options = []string{}
		}
	}
	return docs
}
