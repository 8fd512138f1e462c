package main

import (
	"context"
	"fmt"
	"strings"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	snapshotproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
)

// gcRefSnapshot is the label containerd's unpacker puts on an image's
// config blob: gcRefSnapshot + <snapshotter> = the chainID of its top layer.
const gcRefSnapshot = "containerd.io/gc.ref.snapshot."

// forgetGone makes containerd forget the layers this root lost with their
// records: a commit whose record had not reached the disk when the power
// went, while containerd had synced its own. While containerd keeps such a
// record it never unpacks the layer again (its Prepare answers "already
// exists" before asking this snapshotter), so every start of the image
// fails. For each image unpacked onto this snapshotter (found by the
// gcRefSnapshot label; the name is the one containerd knows this daemon
// by), each layer of its chain that containerd cannot stat and this root
// has no record of is removed through containerd's snapshots API, from the
// top down: the next run or pull unpacks it again. Layers this root knows
// are never touched. Returns how many records were removed.
func forgetGone(ctx context.Context, conn *grpc.ClientConn, store content.Store, ours func(context.Context, string) bool) (int, error) {
	nss, err := namespacesapi.NewNamespacesClient(conn).List(ctx, &namespacesapi.ListNamespacesRequest{})
	if err != nil {
		return 0, errgrpc.ToNative(err)
	}
	removed := 0
	for _, ns := range nss.Namespaces {
		nctx := namespaces.WithNamespace(ctx, ns.Name)
		imgs, err := imagesapi.NewImagesClient(conn).List(nctx, &imagesapi.ListImagesRequest{})
		if err != nil {
			return removed, errgrpc.ToNative(err)
		}
		for _, img := range imgs.Images {
			if img.Target == nil {
				continue
			}
			target := ocispec.Descriptor{MediaType: img.Target.MediaType, Digest: digest.Digest(img.Target.Digest), Size: img.Target.Size}
			n, err := forgetGoneOfImage(nctx, conn, store, target, ours)
			removed += n
			if err != nil {
				log.G(ctx).WithError(err).WithField("image", img.Name).WithField("namespace", ns.Name).Debug("image not reconciled")
			}
		}
	}
	return removed, nil
}

func forgetGoneOfImage(ctx context.Context, conn *grpc.ClientConn, store content.Store, target ocispec.Descriptor, ours func(context.Context, string) bool) (int, error) {
	config, err := images.Config(ctx, store, target, platforms.Default())
	if err != nil {
		return 0, err
	}
	info, err := store.Info(ctx, config.Digest)
	if err != nil {
		return 0, err
	}
	diffIDs, err := images.RootFS(ctx, store, config)
	if err != nil {
		return 0, err
	}
	chain := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	removed := 0
	for label := range info.Labels {
		name, ok := strings.CutPrefix(label, gcRefSnapshot)
		if !ok {
			continue
		}
		// The image is on snapshotter `name`; it is this daemon when this
		// root holds a layer of the image's chain.
		mine := false
		for _, c := range chain {
			if ours(ctx, c.String()) {
				mine = true
				break
			}
		}
		if !mine {
			continue
		}
		sn := snapshotproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name)
		for i := len(chain) - 1; i >= 0; i-- {
			n, err := forgetOne(ctx, sn, chain[i].String(), ours)
			removed += n
			if err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

// forgetOne removes containerd's record of layer chainID when containerd
// cannot stat it (its backend, this root, does not have it) and this root
// has no record of it: 1 when it did.
func forgetOne(ctx context.Context, sn snapshots.Snapshotter, chainID string, ours func(context.Context, string) bool) (int, error) {
	if _, err := sn.Stat(ctx, chainID); !errdefs.IsNotFound(err) {
		return 0, nil // there (or not answering): nothing to do
	}
	if ours(ctx, chainID) {
		return 0, nil // committed meanwhile
	}
	switch err := sn.Remove(ctx, chainID); {
	case err == nil:
		log.G(ctx).WithField("layer", chainID).Warn("containerd's record of a layer this root lost with its record removed: the next run or pull unpacks it again")
		return 1, nil
	case errdefs.IsNotFound(err):
		return 0, nil // containerd has no record either: never unpacked
	default:
		return 0, fmt.Errorf("remove containerd's record of lost layer %s: %w", chainID, err)
	}
}
