package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// recordStore is containerd's view of a snapshotter for forgetOne: Stat
// answers statErr, Remove removeErr, and removals are counted.
type recordStore struct {
	snapshots.Snapshotter
	statErr, removeErr error
	removed            []string
}

func (r *recordStore) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return snapshots.Info{Name: key}, r.statErr
}

func (r *recordStore) Remove(ctx context.Context, key string) error {
	if r.removeErr == nil {
		r.removed = append(r.removed, key)
	}
	return r.removeErr
}

// containerd's record is removed only when containerd cannot find the layer
// in this root and this root has no record of it; anything else, or any
// doubt, leaves it alone.
func TestForgetOneRemovesOnlyRecordsOfLayersThisRootLost(t *testing.T) {
	unavailable := fmt.Errorf("connection refused: %w", errdefs.ErrUnavailable)
	for _, c := range []struct {
		name               string
		statErr, removeErr error
		ours               bool
		want               int
		wantErr            bool
	}{
		{name: "there", statErr: nil},
		{name: "containerd not answering", statErr: unavailable},
		{name: "a bad name (a hostile image's diffID)", statErr: fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument)},
		{name: "committed meanwhile here", statErr: errdefs.ErrNotFound, ours: true},
		{name: "never unpacked", statErr: errdefs.ErrNotFound, removeErr: errdefs.ErrNotFound},
		{name: "lost with its record", statErr: errdefs.ErrNotFound, want: 1},
		{name: "children in containerd", statErr: errdefs.ErrNotFound, removeErr: errdefs.ErrFailedPrecondition, wantErr: true},
	} {
		r := &recordStore{statErr: c.statErr, removeErr: c.removeErr}
		ours := func(context.Context, string) bool { return c.ours }
		n, err := forgetOne(context.Background(), r, "sha256:c", ours)
		if n != c.want || (err != nil) != c.wantErr {
			t.Errorf("%s: removed %d, err %v; want %d, error %v", c.name, n, err, c.want, c.wantErr)
		}
		if len(r.removed) != c.want {
			t.Errorf("%s: containerd's records removed: %v", c.name, r.removed)
		}
	}
}
