// fakeproxy: a stand-in for the erofs-snapshotter gRPC daemon, so that the
// e2e harness's proxy mode (and the benchmark's) can be exercised before the
// real daemon exists. It serves one of containerd's own snapshotters over
// containerd's snapshots gRPC API on a unix socket, with the command line the
// harness expects from the real daemon:
//
//	fakeproxy --socket PATH --root DIR [--snapshotter erofs|overlayfs] [--set-immutable] [--cleanup-delay D]
//
// With --tap UPSTREAM instead of --root, it serves no snapshotter of its own
// but forwards every call to the snapshots service on the unix socket
// UPSTREAM, logging each Prepare, View and Commit with its parent (tap.go).
//
// SIGTERM or SIGINT: stop serving, close the snapshotter, remove the socket, exit 0.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/erofs"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	socket := flag.String("socket", "", "unix socket to serve on")
	root := flag.String("root", "", "snapshotter root directory")
	kind := flag.String("snapshotter", "erofs", "containerd snapshotter to serve: erofs or overlayfs")
	immutable := flag.Bool("set-immutable", false, "erofs: set FS_IMMUTABLE_FL on layer blobs")
	cleanupDelay := flag.Duration("cleanup-delay", 0, "make each Cleanup take this long (to reproduce GC races)")
	upstream := flag.String("tap", "", "forward to the snapshots service on this unix socket, logging Prepare, View and Commit")
	flag.Parse()
	if *socket == "" || (*root == "") == (*upstream == "") {
		log.Fatal("--socket and one of --root and --tap are required")
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	var sn snapshots.Snapshotter
	var err error
	switch {
	case *upstream != "":
		sn, err = newTap(*upstream)
	case *kind == "erofs":
		var opts []erofs.Opt
		if *immutable {
			opts = append(opts, erofs.WithImmutable())
		}
		sn, err = erofs.NewSnapshotter(*root, opts...)
	case *kind == "overlayfs":
		sn, err = overlay.NewSnapshotter(*root)
	default:
		log.Fatalf("unknown --snapshotter %q", *kind)
	}
	if err != nil {
		log.Fatalf("snapshotter: %v", err)
	}

	_ = os.Remove(*socket)
	l, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	if *cleanupDelay > 0 {
		sn = slowCleaner{sn, *cleanupDelay}
	}
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sig
		log.Printf("%v: stopping", s)
		srv.GracefulStop() // closes the listener, which removes the socket file
	}()

	if *upstream != "" {
		log.Printf("serving a tap to %s on %s", *upstream, *socket)
	} else {
		log.Printf("serving %s snapshotter, root %s, on %s", *kind, *root, *socket)
	}
	if err := srv.Serve(l); err != nil {
		log.Fatalf("serve: %v", err)
	}
	if err := sn.Close(); err != nil {
		log.Printf("close: %v", err)
	}
	_ = os.Remove(*socket)
	log.Print("stopped")
}

type slowCleaner struct {
	snapshots.Snapshotter
	delay time.Duration
}

func (s slowCleaner) Cleanup(ctx context.Context) error {
	log.Printf("cleanup: sleeping %v", s.delay)
	time.Sleep(s.delay)
	if c, ok := s.Snapshotter.(snapshots.Cleaner); ok {
		return c.Cleanup(ctx)
	}
	return nil
}
