package main

import (
	"context"
	"fmt"
	"log"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// newTap returns a snapshotter that forwards every call to the snapshots
// service on the unix socket upstream (the real daemon), and logs the calls
// that create or commit snapshots with their parents:
//
//	tap: Prepare key="..." parent="..." err=<nil> d=1.2ms
//	tap: Commit name="..." key="..." parent="..." err=<nil> d=3.4ms
//
// so a test can see what containerd asked of the daemon (a parallel unpack
// prepares every layer without a parent and commits it with one).
func newTap(upstream string) (snapshots.Snapshotter, error) {
	// The namespace containerd sent travels in the incoming request's
	// metadata; the upstream call needs it in its own.
	withNamespace := func(ctx context.Context) context.Context {
		if ns, ok := namespaces.Namespace(ctx); ok {
			return namespaces.WithNamespace(ctx, ns)
		}
		return ctx
	}
	conn, err := grpc.NewClient("unix://"+upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withNamespace(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withNamespace(ctx), desc, cc, method, opts...)
		}))
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	return tap{proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "")}, nil
}

type tap struct{ snapshots.Snapshotter }

func parentOf(opts []snapshots.Opt) string {
	var info snapshots.Info
	for _, o := range opts {
		_ = o(&info)
	}
	return info.Parent
}

func (t tap) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	start := time.Now()
	m, err := t.Snapshotter.Prepare(ctx, key, parent, opts...)
	log.Printf("tap: Prepare key=%q parent=%q err=%v d=%v", key, parent, err, time.Since(start))
	return m, err
}

func (t tap) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	start := time.Now()
	m, err := t.Snapshotter.View(ctx, key, parent, opts...)
	log.Printf("tap: View key=%q parent=%q err=%v d=%v", key, parent, err, time.Since(start))
	return m, err
}

func (t tap) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	start := time.Now()
	err := t.Snapshotter.Commit(ctx, name, key, opts...)
	log.Printf("tap: Commit name=%q key=%q parent=%q err=%v d=%v", name, key, parentOf(opts), err, time.Since(start))
	return err
}

func (t tap) Cleanup(ctx context.Context) error {
	if c, ok := t.Snapshotter.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}
