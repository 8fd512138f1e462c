package erofs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/pelletier/go-toml/v2"
	"github.com/sirupsen/logrus"
)

func open(t testing.TB, cfg Config) *Snapshotter {
	t.Helper()
	requireRoot(t)
	if cfg.RootPath == "" && cfg.Root == "" {
		cfg.RootPath = filepath.Join(t.TempDir(), "root")
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// commitEmpty prepares key on parent and commits it as name.
func commitEmpty(t testing.TB, s snapshots.Snapshotter, name, parent string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Prepare(ctx, name+"-active", parent); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, name, name+"-active"); err != nil {
		t.Fatal(err)
	}
}

func TestStatusMapping(t *testing.T) {
	checks := map[int32]func(error) bool{
		StatusInvalidArgument:    errdefs.IsInvalidArgument,
		StatusNotFound:           errdefs.IsNotFound,
		StatusAlreadyExists:      errdefs.IsAlreadyExists,
		StatusFailedPrecondition: errdefs.IsFailedPrecondition,
		StatusUnavailable:        errdefs.IsUnavailable,
		StatusNotImplemented:     errdefs.IsNotImplemented,
		StatusInternal:           errdefs.IsInternal,
		StatusPanic:              errdefs.IsInternal,
	}
	for code, is := range checks {
		err := newError(code, "the message")
		if !is(err) {
			t.Errorf("status %d: %v does not match its errdefs class", code, err)
		}
		if err.Error() != "the message" {
			t.Errorf("status %d: message %q", code, err.Error())
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("status %d: errors.As gave %+v", code, e)
		}
	}
	if !errdefs.IsUnknown(newError(99, "")) {
		t.Error("an unknown status is not errdefs.ErrUnknown")
	}
}

func TestErrorsFromTheLibrary(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	commitEmpty(t, s, "base", "")
	if _, err := s.Prepare(ctx, "child", "base"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		err  error
		is   func(error) bool
	}{
		{"stat missing", func() error { _, err := s.Stat(ctx, "missing"); return err }(), errdefs.IsNotFound},
		{"prepare twice", func() error { _, err := s.Prepare(ctx, "child", ""); return err }(), errdefs.IsAlreadyExists},
		{"prepare on missing parent", func() error { _, err := s.Prepare(ctx, "x", "missing"); return err }(), errdefs.IsNotFound},
		{"remove a parent", s.Remove(ctx, "base"), errdefs.IsFailedPrecondition},
		{"mounts of committed", func() error { _, err := s.Mounts(ctx, "base"); return err }(), errdefs.IsFailedPrecondition},
		{"commit committed", s.Commit(ctx, "again", "base"), errdefs.IsFailedPrecondition},
		{"empty key", func() error { _, err := s.Prepare(ctx, "", ""); return err }(), errdefs.IsInvalidArgument},
		{"bad filter", s.Walk(ctx, func(context.Context, snapshots.Info) error { return nil }, "kind=="), errdefs.IsInvalidArgument},
		{"bad field path", func() error {
			_, err := s.Update(ctx, snapshots.Info{Name: "base"}, "parent")
			return err
		}(), errdefs.IsInvalidArgument},
		{"rebase onto another parent", s.Commit(ctx, "c", "child", snapshots.WithParent("other")), errdefs.IsInvalidArgument},
		{"bad config", func() error {
			_, err := New(ctx, Config{RootPath: "relative"})
			return err
		}(), errdefs.IsInvalidArgument},
	} {
		if c.err == nil || !c.is(c.err) {
			t.Errorf("%s: got %v", c.what, c.err)
		}
	}
	// The snapshot's own parent is not a rebase.
	if err := s.Commit(ctx, "c", "child", snapshots.WithParent("base")); err != nil {
		t.Fatal(err)
	}
}

func TestOptsAndLabels(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	labels := map[string]string{"a": "1", "containerd.io/snapshot/x": "y"}
	if _, err := s.Prepare(ctx, "k", "", snapshots.WithLabels(labels), snapshots.WithLabels(map[string]string{"b": "2"})); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshots.KindActive || info.Name != "k" || len(info.Labels) != 3 || info.Labels["b"] != "2" {
		t.Fatalf("info %+v", info)
	}
	if info.Created.IsZero() || info.Created.After(time.Now()) || info.Updated.Before(info.Created) {
		t.Fatalf("times %v %v", info.Created, info.Updated)
	}
	failing := func(*snapshots.Info) error { return errdefs.ErrInvalidArgument }
	if _, err := s.Prepare(ctx, "k2", "", failing); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("a failing opt: %v", err)
	}

	info, err = s.Update(ctx, snapshots.Info{Name: "k", Labels: map[string]string{"a": "changed"}}, "labels.a", "labels.b")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels["a"] != "changed" || len(info.Labels) != 2 {
		t.Fatalf("update by field path: %v", info.Labels)
	}
	info, err = s.Update(ctx, snapshots.Info{Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels != nil {
		t.Fatalf("replacing with no labels left %v", info.Labels)
	}
}

func TestWalkPassesFilters(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	commitEmpty(t, s, "c1", "")
	if _, err := s.Prepare(ctx, "a1", "c1", snapshots.WithLabels(map[string]string{"x": "y"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, "v1", "c1"); err != nil {
		t.Fatal(err)
	}
	walk := func(filters ...string) []string {
		var names []string
		err := s.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			names = append(names, info.Name)
			return nil
		}, filters...)
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	for _, c := range []struct {
		filters []string
		want    string
	}{
		{nil, "a1,c1,v1"},
		{[]string{"kind==committed"}, "c1"},
		{[]string{`labels."x"==y`}, "a1"},
		{[]string{"kind==view", "parent==c1,kind==active"}, "a1,v1"},
	} {
		if got := strings.Join(walk(c.filters...), ","); got != c.want {
			t.Errorf("walk %q: got %s, want %s", c.filters, got, c.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.Walk(ctx, func(context.Context, snapshots.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("walk did not stop on the callback's error: %v after %d", err, n)
	}
}

func TestUsage(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	mounts, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("mounts %+v", mounts)
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "f"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := s.Usage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if u.Size < 8192 || u.Inodes < 1 {
		t.Fatalf("usage %+v", u)
	}
}

func TestMountAllWithoutContainerd(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	mounts, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	mounts, err = s.View(ctx, "v", "c")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "hello"))
	if uerr := UnmountAll(target, false); uerr != nil {
		t.Fatal(uerr)
	}
	if err != nil || string(got) != "hi" {
		t.Fatalf("read through the view: %q, %v", got, err)
	}
}

// TestRebase is containerd's parallel unpack (snapshots.RebaseCap): layers
// prepared without a parent, committed in order WithParent(the one below).
func TestRebase(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	files := []string{"bottom", "middle", "top"}
	for i, f := range files { // prepared and written before any commit
		mounts, err := s.Prepare(ctx, "extract-"+f, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mounts[0].Source, f), []byte{byte('0' + i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	parent := ""
	for _, f := range files {
		if err := s.Commit(ctx, f, "extract-"+f, snapshots.WithParent(parent)); err != nil {
			t.Fatal(err)
		}
		info, err := s.Stat(ctx, f)
		if err != nil || info.Parent != parent {
			t.Fatalf("stat %s: %+v, %v; want parent %q", f, info, err, parent)
		}
		parent = f
	}
	mounts, err := s.View(ctx, "v", "top")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	defer UnmountAll(target, false)
	for i, f := range files {
		got, err := os.ReadFile(filepath.Join(target, f))
		if err != nil || string(got) != string(rune('0'+i)) {
			t.Errorf("%s through the view: %q, %v", f, got, err)
		}
	}
	if err := s.Remove(ctx, "middle"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove a rebased parent: %v, want ErrFailedPrecondition", err)
	}
	if _, err := s.Prepare(ctx, "late", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "late-c", "late", snapshots.WithParent("nope")); !errdefs.IsNotFound(err) {
		t.Errorf("rebase onto a missing parent: %v, want ErrNotFound", err)
	}
	if err := s.Commit(ctx, "late-c", "late", snapshots.WithParent("v")); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("rebase onto a view: %v, want ErrFailedPrecondition", err)
	}
}

// TestLayerContentCache: a layer exported by one root is used by another
// whose LayerContentCaches names the cache, with nothing converted; the
// mounts are read only, which containerd's unpacker takes as staged.
func TestLayerContentCache(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()
	labels := snapshots.WithLabels(map[string]string{
		"containerd.io/snapshot.ref":     "chain",
		"containerd.io/snapshot/diff-id": "sha256:" + strings.Repeat("ab", 32),
	})
	first := open(t, Config{})
	mounts, err := first.Prepare(ctx, "x", "", labels)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(ctx, "chain", "x", labels); err != nil {
		t.Fatal(err)
	}
	path, err := first.ExportLayer(ctx, "chain", cache)
	if err != nil || path != filepath.Join(cache, "sha256", "ab", strings.Repeat("ab", 32)+".erofs") {
		t.Fatalf("ExportLayer: %q, %v", path, err)
	}
	if _, err := first.ExportLayer(ctx, "nope", cache); !errdefs.IsNotFound(err) {
		t.Errorf("ExportLayer of a missing key: %v", err)
	}

	second := open(t, Config{LayerContentCaches: []string{cache}})
	mounts, err = second.Prepare(ctx, "x", "", labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "erofs" || mounts[0].Source != path || !mounts[0].ReadOnly() {
		t.Fatalf("a cached layer's mounts: %+v", mounts)
	}
	if err := second.Commit(ctx, "chain", "x", labels); err != nil {
		t.Fatal(err)
	}
	if _, err := second.View(ctx, "v", "chain"); err != nil {
		t.Fatal(err)
	}
	blobs, _ := filepath.Glob(filepath.Join(second.Root(), "snapshots", "*", "layer.erofs"))
	if len(blobs) != 0 {
		t.Errorf("the second root wrote layers: %v", blobs)
	}
	if _, err := New(ctx, Config{RootPath: t.TempDir(), LayerContentCaches: []string{cache}, SetImmutable: true}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("set_immutable with layer_content_caches: %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	s := open(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Prepare(ctx, "a", ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("prepare: %v", err)
	}
	if _, err := s.Stat(context.Background(), "a"); !errdefs.IsNotFound(err) {
		t.Fatalf("a canceled prepare reached the library: %v", err)
	}
	if err := s.Walk(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("walk: %v", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	// Calls racing with Close either finish first or see a closed snapshotter.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1_000_000; j++ {
				_, err := s.Stat(ctx, "a")
				if errdefs.IsFailedPrecondition(err) {
					return // closed
				}
				if err != nil {
					t.Errorf("stat during close: %v", err)
					return
				}
			}
			t.Error("never saw the snapshotter closed")
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Stat(ctx, "a"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("stat after close: %v", err)
	}
	if err := s.Cleanup(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("cleanup after close: %v", err)
	}
}

// A Snapshotter dropped without Close is closed by its cleanup: the root can
// be opened again and the log handle is released.
func TestCleanupSafetyNet(t *testing.T) {
	requireRoot(t)
	root := filepath.Join(t.TempDir(), "root")
	before := handlesOpen.Load()
	func() {
		s, err := New(context.Background(), Config{RootPath: root})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prepare(context.Background(), "a", ""); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for handlesOpen.Load() != before {
		if time.Now().After(deadline) {
			t.Fatalf("%d handles still open after GC", handlesOpen.Load()-before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	s := open(t, Config{RootPath: root})
	if _, err := s.Stat(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
}

// Every string the library returns is freed, on success and on error.
func TestStringsAreFreed(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	before := stringsOutstanding()
	commitEmpty(t, s, "c", "")
	for i := 0; i < 3; i++ {
		s.Prepare(ctx, "a", "c", snapshots.WithLabels(map[string]string{"l": "v"}))
		s.View(ctx, "v", "c")
		s.Mounts(ctx, "a")
		s.Mounts(ctx, "c")
		s.Stat(ctx, "a")
		s.Stat(ctx, "missing")
		s.Usage(ctx, "a")
		s.Usage(ctx, "missing")
		s.Update(ctx, snapshots.Info{Name: "a", Labels: map[string]string{"x": "y"}}, "labels.x")
		s.Update(ctx, snapshots.Info{Name: "missing"})
		s.Walk(ctx, func(context.Context, snapshots.Info) error { return nil })
		s.Walk(ctx, nil, "bad==")
		s.Commit(ctx, "c", "a")
		s.Remove(ctx, "missing")
		s.Cleanup(ctx)
		MountAll(nil, "/nonexistent")
		UnmountAll("/nonexistent-target", false)
		New(ctx, Config{RootPath: "relative"})
	}
	if after := stringsOutstanding(); after != before {
		t.Fatalf("%d library strings were not freed", after-before)
	}
}

type captured struct {
	mu      sync.Mutex
	entries []*logrus.Entry
}

func (c *captured) Levels() []logrus.Level { return logrus.AllLevels }
func (c *captured) Fire(e *logrus.Entry) error {
	c.mu.Lock()
	c.entries = append(c.entries, e)
	c.mu.Unlock()
	return nil
}

// Library records reach log.G(ctx) of the context given to New.
func TestLogsGoToContainerdLogger(t *testing.T) {
	requireRoot(t)
	for _, level := range []logrus.Level{logrus.DebugLevel, logrus.WarnLevel} {
		l := logrus.New()
		l.SetOutput(&bytes.Buffer{})
		l.SetLevel(level)
		hook := &captured{}
		l.AddHook(hook)
		ctx := log.WithLogger(context.Background(), logrus.NewEntry(l).WithField("test", t.Name()))
		s, err := New(ctx, Config{RootPath: filepath.Join(t.TempDir(), "root")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prepare(ctx, "logged-key", ""); err != nil {
			t.Fatal(err)
		}
		s.Close()
		var found bool
		for _, e := range hook.entries {
			if strings.Contains(e.Message, "logged-key") && e.Level == logrus.DebugLevel && e.Data["snapshotter"] == "erofs" {
				found = true
			}
		}
		if found != (level == logrus.DebugLevel) {
			t.Errorf("logger at %v: operation record found=%v in %d entries", level, found, len(hook.entries))
		}
	}
}

func TestConfig(t *testing.T) {
	var cfg Config
	doc := `
root_path = "/var/lib/erofs"
set_immutable = true
enable_fsverity = false
mkfs_options = ["-zlz4"]
ovl_mount_options = ["redirect_dir=on"]
enable_tar_index = true
enable_dmverity = true
dmverity_mode = "on"
default_size = "16Mi"
`
	if err := toml.NewDecoder(strings.NewReader(doc)).DisallowUnknownFields().Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	got, root, err := cfg.document()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"root":"/var/lib/erofs","set_immutable":true,"enable_fsverity":false,"sync_commit":false,"mkfs_options":["-zlz4"],"ovl_mount_options":["redirect_dir=on"],"enable_tar_index":true,"enable_dmverity":true,"dmverity_mode":"on","default_size":"16Mi"}`
	if got != want || root != "/var/lib/erofs" {
		t.Fatalf("document\n got %s\nwant %s", got, want)
	}
	if _, root, _ := (Config{Root: "/r"}).document(); root != "/r" {
		t.Fatalf("root spelling: %q", root)
	}
	if _, _, err := (Config{Root: "/a", RootPath: "/b"}).document(); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("disagreeing roots: %v", err)
	}
}

func TestVersion(t *testing.T) {
	if v := Version(); v == "" || strings.ContainsAny(v, " \n") {
		t.Fatalf("version %q", v)
	}
}

// A real library warning (IMMUTABLE_FL cannot be set on ramfs) reaches
// log.G(ctx) at warning level.
func TestWarningReachesLogger(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Fatalf("cannot mount ramfs (needed to make IMMUTABLE_FL fail): %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	l := logrus.New()
	l.SetOutput(&bytes.Buffer{})
	l.SetLevel(logrus.InfoLevel)
	hook := &captured{}
	l.AddHook(hook)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(l))
	s, err := New(ctx, Config{RootPath: filepath.Join(dir, "root"), SetImmutable: true})
	if err != nil {
		t.Fatal(err)
	}
	commitEmpty(t, s, "c", "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for _, e := range hook.entries {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "IMMUTABLE_FL") {
			return
		}
	}
	t.Fatalf("no IMMUTABLE_FL warning among %d entries", len(hook.entries))
}
