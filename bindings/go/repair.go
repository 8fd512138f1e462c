package erofs

/*
#include <stdlib.h>
#include "erofs_snapshotter.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Check checks the blob of every committed layer against what its commit
// recorded (its length; its fs-verity digest where one was recorded) and
// returns the keys of every lost layer, in key order: found now (each
// logged as a warning naming it) or before and not yet repaired. A lost
// layer is never mounted: Prepare or View on a chain that holds one is
// errdefs.ErrFailedPrecondition, naming it, until Repair (or RepairFrom)
// makes it again. The first New after each boot checks the layers not yet
// known to be on disk (the only ones a power cut can take), Cleanup all of
// them.
func (s *Snapshotter) Check(ctx context.Context) ([]string, error) {
	return s.stringList(ctx, "lost layers", func(h *C.erofs_snapshotter, out, cerr **C.char) C.int32_t {
		return C.erofs_snapshotter_check(h, out, cerr)
	})
}

// Repair makes lost layer key (see Check) again from its OCI layer, read
// from r as Apply reads one: converted on the layer's parent, checked
// against the diffID its commit recorded (label
// containerd.io/snapshot/diff-id, which containerd's unpacker sets) when
// there is one, sealed as a commit seals a layer, flushed, and put in place
// of the lost blob; the snapshot keeps its key, labels and children.
// Anything but a lost committed layer is errdefs.ErrFailedPrecondition;
// another layer than the one committed is errdefs.ErrInvalidArgument. On
// failure the layer stays lost.
func (s *Snapshotter) Repair(ctx context.Context, key string, r io.Reader, mediaType string, dgst digest.Digest) (ocispec.Descriptor, error) {
	return s.applyReader(ctx, opRepair, key, r, mediaType, dgst)
}

// LayerStore is what RepairFrom reads layers from: containerd's content
// store (content.Store is one), whose unpacker labels each layer blob with
// its diffID (containerd.io/uncompressed).
type LayerStore interface {
	content.Provider
	Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error
}

// labelUncompressed is the content label containerd's unpacker sets on a
// layer blob once applied: the diffID of its uncompressed tar.
const labelUncompressed = "containerd.io/uncompressed"

// RepairFrom repairs every lost layer (see Check) whose blob is still in
// store: found by the diffID the layer's commit recorded (label
// containerd.io/snapshot/diff-id) among the blobs containerd labeled with
// it, in the namespace the snapshot's key names (containerd's metadata
// store names snapshots "<namespace>/<n>/<name>"; otherwise ctx's). It
// returns the keys repaired, and the reasons for the layers it could not
// repair (no diffID, no blob, a failed repair; joined, each naming its
// layer), which stay lost, are logged, and are tried again next time. containerd keeps its record of a lost layer, so it never
// unpacks that layer again by itself: this is how a node heals. The proxy
// daemon calls it at start and after each Cleanup.
func (s *Snapshotter) RepairFrom(ctx context.Context, store LayerStore) ([]string, error) {
	lost, err := s.Check(ctx)
	if err != nil {
		return nil, err
	}
	var (
		repaired []string
		failed   []error
	)
	for _, key := range lost {
		l := log.G(ctx).WithField("key", key)
		if err := s.repairOne(ctx, store, key); err != nil {
			l.WithError(err).Warn("lost layer not repaired")
			failed = append(failed, fmt.Errorf("layer %q: %w", key, err))
			continue
		}
		l.Info("lost layer repaired from the content store")
		repaired = append(repaired, key)
	}
	return repaired, errors.Join(failed...)
}

func (s *Snapshotter) repairOne(ctx context.Context, store LayerStore, key string) error {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return err
	}
	diffID := info.Labels["containerd.io/snapshot/diff-id"]
	if diffID == "" {
		return fmt.Errorf("no containerd.io/snapshot/diff-id label: which layer it was is not known; remove the image and pull it again: %w", errdefs.ErrNotFound)
	}
	if ns, _, ok := strings.Cut(key, "/"); ok && strings.Contains(key[len(ns)+1:], "/") {
		ctx = namespaces.WithNamespace(ctx, ns)
	}
	var found *content.Info
	filter := fmt.Sprintf("labels.%q==%s", labelUncompressed, diffID)
	err = store.Walk(ctx, func(i content.Info) error {
		if found == nil && i.Labels[labelUncompressed] == diffID {
			found = &i
		}
		return nil
	}, filter)
	if err != nil {
		return fmt.Errorf("look for the layer %s in the content store: %w", diffID, err)
	}
	if found == nil {
		// The compressed blob may be gone, and the uncompressed one is a
		// blob of its own only when the image shipped it so.
		ra, err := store.ReaderAt(ctx, ocispec.Descriptor{Digest: digest.Digest(diffID)})
		if err != nil {
			return fmt.Errorf("layer %s is not in the content store: remove the image (and its containers) and pull it again: %w", diffID, errdefs.ErrNotFound)
		}
		found = &content.Info{Digest: digest.Digest(diffID), Size: ra.Size()}
		ra.Close()
	}
	ra, err := store.ReaderAt(ctx, ocispec.Descriptor{Digest: found.Digest, Size: found.Size})
	if err != nil {
		return fmt.Errorf("read layer blob %s: %w", found.Digest, err)
	}
	defer ra.Close()
	_, err = s.Repair(ctx, key, io.NewSectionReader(ra, 0, ra.Size()), "", found.Digest)
	return err
}
