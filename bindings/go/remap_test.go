package erofs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// TestRemapIDs: a snapshot with containerd's ID-mapping labels, mounted by
// containerd's own mount code (core/mount: what the runc shim runs) and by
// MountAll, shows the layers' files with the mapped host IDs, and its upper
// dir belongs to the container's root; nothing is chowned.
func TestRemapIDs(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	caps, err := s.Capabilities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{snapshots.RebaseCap, "only-remap-ids", "remap-ids"} {
		if !slices.Contains(caps, c) {
			t.Fatalf("capabilities %v lack %q (kernel 6.18 has ID-mapped EROFS mounts)", caps, c)
		}
	}
	for i, name := range []string{"base", "top"} {
		parent := []string{"", "base"}[i]
		mounts, err := s.Prepare(ctx, name+"-a", parent)
		if err != nil {
			t.Fatal(err)
		}
		target := t.TempDir()
		if err := mount.All(mounts, target); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(target, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := mount.UnmountAll(target, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, name, name+"-a"); err != nil {
			t.Fatal(err)
		}
	}
	mapped := snapshots.WithLabels(map[string]string{
		snapshots.LabelSnapshotUIDMapping: "0:100000:65536",
		snapshots.LabelSnapshotGIDMapping: "0:200000:65536",
	})
	mounts, err := s.Prepare(ctx, "ctr", "top", mapped)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(mounts[0].Options, "uidmap=0:100000:65536") ||
		!slices.Contains(mounts[0].Options, "gidmap=0:200000:65536") {
		t.Fatalf("mounts %+v lack uidmap=/gidmap=", mounts)
	}
	owner := func(p string) [2]uint32 {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return [2]uint32{st.Uid, st.Gid}
	}
	for name, mountAll := range map[string]func([]mount.Mount, string) error{
		"containerd's mount.All": mount.All,
		"MountAll":               MountAll,
	} {
		// containerd's mount.All rewrites the options it is given in place
		// (its ID-mapped lower dirs): each gets a copy.
		m := slices.Clone(mounts)
		for i := range m {
			m[i].Options = slices.Clone(m[i].Options)
		}
		target := t.TempDir()
		if err := mountAll(m, target); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, f := range []string{"base", "top"} {
			if got := owner(filepath.Join(target, f)); got != [2]uint32{100000, 200000} {
				t.Errorf("%s: %s owned by %v, want the mapped root", name, f, got)
			}
		}
		if err := mount.UnmountAll(target, 0); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.View(ctx, "plain", "top")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := MountAll(v, target); err != nil {
		t.Fatal(err)
	}
	defer UnmountAll(target, false)
	if got := owner(filepath.Join(target, "base")); got != [2]uint32{0, 0} {
		t.Errorf("the layer itself is owned by %v: chowned?", got)
	}

	bad := snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotUIDMapping: "0:100000"})
	if _, err := s.Prepare(ctx, "bad", "top", bad); !errdefs.IsInvalidArgument(err) {
		t.Errorf("malformed uidmapping: %v, want ErrInvalidArgument", err)
	}
}
