package erofs

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	ctrderofs "github.com/containerd/containerd/v2/plugins/snapshots/erofs"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("needs root (mounts, mkfs.erofs, IMMUTABLE_FL): run the tests as root")
	}
}

func ours(cfg Config) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		cfg := cfg
		cfg.RootPath = root
		s, err := New(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return s, func() error {
			if err := s.Close(); err != nil {
				return err
			}
			// Block layers stay mounted when the handle closes (a container
			// may be writing): those of the snapshots the suite left go
			// with its root.
			if err := detachUnder(root); err != nil {
				return err
			}
			// Blobs the suite did not remove keep IMMUTABLE_FL, which
			// would stop the suite from deleting its temporary directory.
			return clearImmutable(root)
		}, nil
	}
}

// detachUnder lazily unmounts every mount point below dir.
func detachUnder(dir string) error {
	return detachMatching(func(p string) bool { return strings.HasPrefix(p, dir+"/") })
}

func detachMatching(match func(string) bool) error {
	table, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(table), "\n") {
		if f := strings.Fields(line); len(f) > 4 && match(f[4]) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return fmt.Errorf("unmount %s: %w", points[i], err)
		}
	}
	return nil
}

const fsImmutableFL = 0x10 // FS_IMMUTABLE_FL, linux/fs.h

func clearImmutable(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err != nil || flags&fsImmutableFL == 0 {
			return nil // no flags on this filesystem, or not immutable
		}
		return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL))
	})
}

// The name "erofs" makes containerd's suite treat us as the overlay-based
// snapshotter we are (no directory rename across layers in Rename).
func TestSuite(t *testing.T) {
	requireRoot(t)
	testsuite.SnapshotterSuite(t, "erofs", ours(Config{}))
}

func TestSuiteImmutable(t *testing.T) {
	requireRoot(t)
	testsuite.SnapshotterSuite(t, "erofs", ours(Config{SetImmutable: true}))
}

// A name the suite does not special-case: Rename also renames a directory
// from a lower layer, which overlayfs allows with redirect_dir=on.
func TestSuiteRedirectDir(t *testing.T) {
	requireRoot(t)
	testsuite.SnapshotterSuite(t, "erofs-redirect-dir", ours(Config{OvlMountOptions: []string{"redirect_dir=on"}}))
}

// Block mode, as containerd's TestErofsWithQuota: every container's
// writable layer an ext4 image of 16 MiB.
func TestSuiteBlockMode(t *testing.T) {
	requireRoot(t)
	testsuite.SnapshotterSuite(t, "erofs", ours(Config{DefaultSize: "16Mi"}))
}

// remapped gives every Prepare and View containerd's ID-mapping labels, as
// CRI does for a pod in a user namespace.
type remapped struct {
	snapshots.Snapshotter
	labels map[string]string
}

func (r remapped) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return r.Snapshotter.Prepare(ctx, key, parent, append(opts, snapshots.WithLabels(r.labels))...)
}

func (r remapped) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return r.Snapshotter.View(ctx, key, parent, append(opts, snapshots.WithLabels(r.labels))...)
}

// remap-ids: every snapshot ID-mapped (an identity map of the IDs the
// suite's files use, so its checks of owners hold), its mounts made by
// containerd's mount code through ID-mapped mounts.
func TestSuiteRemapIDs(t *testing.T) {
	requireRoot(t)
	// containerd's mount.All leaves its temporary ID-mapped tree mounted
	// when unmounting it is busy (it logs "failed to unmount idmapped
	// directory"; seen in 128LayersMount, where the long lowerdir is
	// mounted from inside that tree): detached here.
	t.Cleanup(func() {
		prefix := filepath.Join(os.TempDir(), "ovl-idmapped")
		if err := detachMatching(func(p string) bool { return strings.HasPrefix(p, prefix) }); err != nil {
			t.Error(err)
		}
	})
	testsuite.SnapshotterSuite(t, "erofs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		s, closer, err := ours(Config{})(ctx, root)
		if err != nil {
			return nil, nil, err
		}
		return remapped{s, map[string]string{
			snapshots.LabelSnapshotUIDMapping: "0:0:65536",
			snapshots.LabelSnapshotGIDMapping: "0:0:65536",
		}}, closer, nil
	})
}

// containerd's own EROFS snapshotter through the same suite on this machine,
// so the output shows what it skips or fails here (EROFS_SKIP_CONTAINERD=1
// leaves it out).
func TestContainerdErofsSuite(t *testing.T) {
	requireRoot(t)
	if os.Getenv("EROFS_SKIP_CONTAINERD") != "" {
		t.Skip("EROFS_SKIP_CONTAINERD is set")
	}
	testsuite.SnapshotterSuite(t, "erofs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		s, err := ctrderofs.NewSnapshotter(root)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}
