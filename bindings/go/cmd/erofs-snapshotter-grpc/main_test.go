package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	diffproxy "github.com/containerd/containerd/v2/core/diff/proxy"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/containerd/v2/plugins/services/content/contentserver"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	erofs "github.com/erofs-snapshotter/erofs-snapshotter/bindings/go"
)

// The test binary doubles as the daemon, so the tests run the real
// command line, signals and exit status without a separate build.
const asDaemon = "EROFS_SNAPSHOTTER_GRPC_TEST_DAEMON"

func TestMain(m *testing.M) {
	if os.Getenv(asDaemon) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("needs root (the daemon mounts and runs mkfs.erofs): run the tests as root")
	}
}

// syncBuffer collects the daemon's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type daemon struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	socket string
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's, once done is closed
}

// spawnDaemon starts the daemon without waiting for its socket.
func spawnDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asDaemon+"=1")
	d := &daemon{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	for i, a := range args {
		if a == "--socket" {
			d.socket = args[i+1]
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		if !d.exitedNow() {
			cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon %d output:\n%s", cmd.Process.Pid, d.out)
		}
	})
	return d
}

func (d *daemon) exitedNow() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitServing waits until the daemon's socket accepts connections.
func (d *daemon) waitServing(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return
		}
		select {
		case <-d.done:
			t.Fatalf("daemon exited before serving: %v\n%s", d.err, d.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not serve on %s within 20 s\n%s", d.socket, d.out)
		}
	}
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := spawnDaemon(t, args...)
	d.waitServing(t)
	return d
}

// stop sends SIGTERM and returns the exit error (nil: status 0).
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit within 30 s of SIGTERM")
		return nil
	}
}

// fakeContainerd serves containerd's content API over a local store, as
// containerd's own socket does, and refuses requests without a namespace.
type fakeContainerd struct {
	store      content.Store
	mu         sync.Mutex
	namespaces map[string]int
	// Reads of this blob hang until the client gives up; stalled is
	// closed when the first one starts.
	stall   digest.Digest
	stalled chan struct{}
	release chan struct{} // closing it lets stalled reads go on
	once    sync.Once
}

// stallingStream holds Read requests for f.stall until the call ends.
type stallingStream struct {
	grpc.ServerStream
	f *fakeContainerd
}

func (s stallingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if r, ok := m.(*contentapi.ReadContentRequest); ok && s.f.stall != "" && r.Digest == s.f.stall.String() {
		s.f.once.Do(func() { close(s.f.stalled) })
		select {
		case <-s.f.release:
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
	return nil
}

func startContainerd(t *testing.T, socket string) *fakeContainerd {
	t.Helper()
	cs, err := local.NewStore(filepath.Join(t.TempDir(), "content"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeContainerd{store: cs, namespaces: map[string]int{}, stalled: make(chan struct{}), release: make(chan struct{})}
	check := func(ctx context.Context) error {
		ns, err := namespaces.NamespaceRequired(ctx)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.namespaces[ns]++
		f.mu.Unlock()
		return nil
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context()); err != nil {
				return err
			}
			return h(srv, stallingStream{ss, f})
		}),
	)
	contentapi.RegisterContentServer(srv, contentserver.New(cs))
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return f
}

func (f *fakeContainerd) put(t *testing.T, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(context.Background(), f.store, desc.Digest.String(), bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	return desc
}

func layerTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if strings.HasSuffix(name, "/") {
			h = &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	tw.Close()
	return b.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

type differ interface {
	diff.Applier
	diff.Comparer
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The daemon through containerd's own proxy clients: snapshots and diff on
// one socket, layers read back from a (fake) containerd content store in the
// caller's namespace; SIGTERM stops it cleanly.
func TestDaemon(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	ctrd := startContainerd(t, filepath.Join(dir, "ctrd.sock"))
	root := filepath.Join(dir, "root")
	d := startDaemon(t, "--socket", filepath.Join(dir, "sn.sock"), "--root", root,
		"--containerd-address", filepath.Join(dir, "ctrd.sock"), "--log-level", "debug", "--shutdown-timeout", "20s",
		"--metrics-address", "127.0.0.1:0")

	conn := dial(t, d.socket)
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "erofs-ours")
	df := diffproxy.NewDiffApplier(diffapi.NewDiffClient(conn)).(differ)
	ctx := namespaces.WithNamespace(context.Background(), "e2e-ns")

	base := layerTar(t, map[string]string{"etc/": "", "etc/os-release": "ID=test\n", "data/gone": "x"})
	top := layerTar(t, map[string]string{"data/.wh.gone": "", "app/run.sh": "#!/bin/sh\n"})
	layers := []ocispec.Descriptor{
		ctrd.put(t, ocispec.MediaTypeImageLayerGzip, gz(t, base)),
		ctrd.put(t, ocispec.MediaTypeImageLayer, top),
	}
	diffIDs := []digest.Digest{digest.FromBytes(base), digest.FromBytes(top)}
	parent := ""
	for i, desc := range layers {
		key := fmt.Sprintf("extract-%d", i)
		mounts, err := sn.Prepare(ctx, key, parent)
		if err != nil {
			t.Fatal(err)
		}
		var progress []int64
		applied, err := df.Apply(ctx, desc, mounts, diff.WithProgress(func(_ ocispec.Descriptor, n int64) { progress = append(progress, n) }))
		if err != nil {
			t.Fatalf("apply layer %d: %v", i, err)
		}
		if applied.Digest != diffIDs[i] || applied.MediaType != ocispec.MediaTypeImageLayer {
			t.Fatalf("layer %d: applied %+v, want diffID %s", i, applied, diffIDs[i])
		}
		if fmt.Sprint(progress) != fmt.Sprint([]int64{0, desc.Size}) {
			t.Fatalf("progress %v", progress)
		}
		name := fmt.Sprintf("layer-%d", i)
		if err := sn.Commit(ctx, name, key); err != nil {
			t.Fatal(err)
		}
		parent = name
	}
	// The blobs were written by the differ, not by mkfs.erofs on the upper dir.
	if blobs, _ := filepath.Glob(filepath.Join(root, "snapshots", "*", "layer.erofs")); len(blobs) != 2 {
		t.Fatalf("want 2 layer.erofs blobs, got %v", blobs)
	}
	if ctrd.namespaces["e2e-ns"] == 0 || len(ctrd.namespaces) != 1 {
		t.Fatalf("content requests by namespace: %v", ctrd.namespaces)
	}

	mounts, err := sn.View(ctx, "view", parent)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := erofs.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	osRelease, rerr := os.ReadFile(filepath.Join(target, "etc/os-release"))
	_, gone := os.Stat(filepath.Join(target, "data/gone"))
	if err := erofs.UnmountAll(target, false); err != nil {
		t.Fatal(err)
	}
	if rerr != nil || string(osRelease) != "ID=test\n" || !errors.Is(gone, os.ErrNotExist) {
		t.Fatalf("view: os-release %q (%v), data/gone %v", osRelease, rerr, gone)
	}

	// Errors keep their class across the two gRPC hops.
	active, err := sn.Prepare(ctx, "active", parent)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := df.Compare(ctx, mounts, active); !errdefs.IsNotImplemented(err) {
		t.Errorf("Compare: %v, want ErrNotImplemented", err)
	}
	foreign := []mount.Mount{{Type: "bind", Source: t.TempDir(), Options: []string{"rbind", "rw"}}}
	if _, err := df.Apply(ctx, layers[1], foreign); !errdefs.IsNotImplemented(err) {
		t.Errorf("foreign mounts: %v, want ErrNotImplemented", err)
	}
	if _, err := df.Apply(ctx, layers[1], mounts); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("read-only mounts: %v, want ErrFailedPrecondition", err)
	}
	corrupt := gz(t, top)
	corrupt = corrupt[:len(corrupt)-12]
	if _, err := df.Apply(ctx, ctrd.put(t, ocispec.MediaTypeImageLayerGzip, corrupt), active); !errdefs.IsInvalidArgument(err) {
		t.Errorf("truncated layer: %v, want ErrInvalidArgument", err)
	}
	missing := layers[0]
	missing.Digest = digest.FromString("not in the store")
	if _, err := df.Apply(ctx, missing, active); !errdefs.IsNotFound(err) {
		t.Errorf("blob not in containerd's store: %v, want ErrNotFound", err)
	}
	if _, err := df.Apply(context.Background(), layers[1], active); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("no namespace: %v, want ErrFailedPrecondition", err)
	}
	if info, err := sn.Stat(ctx, "active"); err != nil || info.Kind != snapshots.KindActive {
		t.Fatalf("after the failed applies: %+v, %v", info, err)
	}

	// Remove everything; Cleanup (what containerd's GC calls) empties the root.
	for _, k := range []string{"active", "view", "layer-1", "layer-0"} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := sn.(snapshots.Cleaner).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}

	// What was served, as Prometheus scrapes it.
	scraped := scrape(t, d)
	for _, want := range []string{
		`erofs_snapshotter_layers_applied_total 2`,
		fmt.Sprintf(`erofs_snapshotter_applied_bytes_total %d`, layers[0].Size+layers[1].Size),
		`erofs_snapshotter_requests_total{operation="Prepare",code="OK"} 3`,
		`erofs_snapshotter_requests_total{operation="Apply",code="Unimplemented"} 1`,
		`erofs_snapshotter_errors_total{operation="Apply",kind="not_implemented"} 1`,
		`erofs_snapshotter_errors_total{operation="Apply",kind="failed_precondition"}`,
		`erofs_snapshotter_request_duration_seconds_count{operation="Commit"} 2`,
		`erofs_snapshotter_request_duration_seconds_bucket{operation="Commit",le="+Inf"} 2`,
		`erofs_snapshotter_trash_entries `,
		`erofs_snapshotter_build_info{version="` + version + `"`,
	} {
		if !strings.Contains(scraped, want) {
			t.Errorf("metrics lack %q:\n%s", want, scraped)
		}
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if _, err := os.Lstat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after SIGTERM: %v", err)
	}
	for _, dir := range []string{"snapshots", "trash"} {
		if left, _ := os.ReadDir(filepath.Join(root, dir)); len(left) > 0 {
			t.Errorf("%s/ not empty after Remove, Cleanup and Close: %d entries", dir, len(left))
		}
	}
	out := d.out.String()
	for _, want := range []string{
		"serving snapshots and diff APIs",
		"snapshotter=erofs",                // the library's records, through log.G
		"method=/containerd.services.diff", // a request log
		"layer applied",
		"cleanup done",
		"signal=terminated",
		"socket removed",
		"snapshotter closed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("daemon log lacks %q", want)
		}
	}
}

// A socket that someone serves on is not taken over; a stale one is.
func TestSocketInUse(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "sn.sock")
	d := startDaemon(t, "--socket", socket, "--root", filepath.Join(dir, "root"))
	cmd := exec.Command(os.Args[0], "--socket", socket, "--root", filepath.Join(dir, "root2"))
	cmd.Env = append(os.Environ(), asDaemon+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another daemon holds it") {
		t.Fatalf("second daemon on a live socket: %v\n%s", err, out)
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	// A stale socket file (nobody listening) is replaced.
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	d = startDaemon(t, "--socket", socket, "--root", filepath.Join(dir, "root"))
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
}

// withUmask runs f (which starts daemons: they inherit it) under umask mask.
func withUmask(mask int, f func()) {
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	f()
}

// walk lists the snapshots through the socket: an answer from a daemon.
func walk(t *testing.T, socket string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "ns"), 10*time.Second)
	defer cancel()
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(dial(t, socket)), "erofs-ours")
	return sn.Walk(ctx, func(context.Context, snapshots.Info) error { return nil })
}

func lstat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(&os.PathError{Op: "lstat", Path: path, Err: err})
	}
	return &st
}

// wantAnotherDaemon checks that d exited with status 1, saying that another
// daemon holds its socket.
func wantAnotherDaemon(t *testing.T, d *daemon) {
	t.Helper()
	var ee *exec.ExitError
	out := d.out.String()
	if !errors.As(d.err, &ee) || ee.ExitCode() != 1 ||
		!strings.Contains(out, "another daemon holds it") || !strings.Contains(out, d.socket) {
		t.Errorf("daemon %d: exit %v, want status 1 and \"%s: another daemon holds it\"; output:\n%s",
			d.cmd.Process.Pid, d.err, d.socket, out)
	}
}

// Daemons started together on one socket: one serves, the others exit
// saying another daemon holds the socket, and leave the winner's socket
// alone (it still answers, and SIGTERM stops the winner cleanly).
func TestConcurrentDaemons(t *testing.T) {
	requireRoot(t)
	const rounds, n = 3, 4
	for round := range rounds {
		dir := t.TempDir()
		socket := filepath.Join(dir, "sn.sock")
		ds := make([]*daemon, n)
		for i := range ds {
			ds[i] = spawnDaemon(t, "--socket", socket, "--root", filepath.Join(dir, fmt.Sprintf("root%d", i)))
		}
		// Until all but one have exited and the socket answers.
		deadline := time.Now().Add(20 * time.Second)
		var running []*daemon
		for {
			running = running[:0]
			for _, d := range ds {
				if !d.exitedNow() {
					running = append(running, d)
				}
			}
			if len(running) <= 1 {
				if c, err := net.Dial("unix", socket); err == nil || len(running) == 0 {
					if c != nil {
						c.Close()
					}
					break
				}
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(running) != 1 {
			t.Fatalf("round %d: %d of %d daemons still running after 20 s, want 1", round, len(running), n)
		}
		for _, d := range ds {
			if d != running[0] {
				wantAnotherDaemon(t, d)
			}
		}
		if err := walk(t, socket); err != nil {
			t.Fatalf("round %d: the winner's socket does not answer: %v", round, err)
		}
		if err := running[0].stop(t); err != nil {
			t.Fatalf("round %d: winner's exit after SIGTERM: %v", round, err)
		}
		if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: socket still there after the winner stopped: %v", round, err)
		}
	}
}

// A live daemon that does not accept connections for a while (here stopped,
// its accept queue full, so connecting fails at once as to a dead socket)
// keeps its socket: a second daemon does not take it over.
func TestSocketOfBusyDaemon(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "sn.sock")
	d := startDaemon(t, "--socket", socket, "--root", filepath.Join(dir, "root"))
	ino := lstat(t, socket).Ino
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	cont := func() {
		d.cmd.Process.Signal(syscall.SIGCONT)
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer cont()
	for {
		c, err := net.DialTimeout("unix", socket, time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
		if len(conns) > 1<<16 {
			t.Fatal("the stopped daemon's accept queue does not fill up")
		}
	}
	second := spawnDaemon(t, "--socket", socket, "--root", filepath.Join(dir, "root2"))
	// Until it exits, or replaces the socket.
	deadline := time.Now().Add(20 * time.Second)
	for !second.exitedNow() && time.Now().Before(deadline) {
		var st syscall.Stat_t
		if err := syscall.Lstat(socket, &st); err != nil || st.Ino != ino {
			t.Errorf("the second daemon removed or replaced the busy daemon's socket (lstat: %v)", err)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !second.exitedNow() {
		t.Fatal("the second daemon is still running")
	}
	wantAnotherDaemon(t, second)
	cont()
	if st := lstat(t, socket); st.Ino != ino {
		t.Fatalf("socket replaced: inode %d, was %d", st.Ino, ino)
	}
	if err := walk(t, socket); err != nil {
		t.Fatalf("the first daemon's socket does not answer: %v", err)
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
}

// inotifyEvents returns the events read so far on fd: name and mask.
func inotifyEvents(t *testing.T, fd int) (events []string) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EAGAIN) {
			return events
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			kind := fmt.Sprintf("%#x", ev.Mask)
			switch {
			case ev.Mask&syscall.IN_CREATE != 0:
				kind = "create"
			case ev.Mask&syscall.IN_ATTRIB != 0:
				kind = "attrib"
			}
			events = append(events, name+":"+kind)
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// Under umask 0, the socket is born 0600: its mode as soon as it exists
// (stat in a loop from before the daemon starts) is 0600 and no attribute
// change follows its creation (inotify: no chmod after listen). A directory
// the daemon creates for it is 0700, the lock file 0600.
func TestSocketPermissions(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "sn.sock")
	in, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(in)
	if _, err := syscall.InotifyAddWatch(in, dir, syscall.IN_CREATE|syscall.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	firstMode := make(chan uint32, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		var st syscall.Stat_t
		for {
			if syscall.Lstat(socket, &st) == nil {
				firstMode <- st.Mode
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	var d *daemon
	withUmask(0, func() { d = spawnDaemon(t, "--socket", socket, "--root", filepath.Join(dir, "root")) })
	d.waitServing(t)
	if m := <-firstMode; m != syscall.S_IFSOCK|0o600 {
		t.Errorf("socket mode as soon as it existed: %#o, want %#o", m, syscall.S_IFSOCK|0o600)
	}
	events := inotifyEvents(t, in)
	if !slices.Contains(events, "sn.sock:create") {
		t.Errorf("no creation event for the socket: %v", events)
	}
	if slices.Contains(events, "sn.sock:attrib") {
		t.Errorf("the socket's attributes changed after its creation (a chmod after listen): %v", events)
	}
	if m := lstat(t, socket).Mode; m != syscall.S_IFSOCK|0o600 {
		t.Errorf("socket mode: %#o, want %#o", m, syscall.S_IFSOCK|0o600)
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}

	// In a directory the daemon creates.
	socket = filepath.Join(dir, "run", "sn.sock")
	withUmask(0, func() { d = spawnDaemon(t, "--socket", socket, "--root", filepath.Join(dir, "root")) })
	d.waitServing(t)
	for path, want := range map[string]uint32{
		filepath.Dir(socket): syscall.S_IFDIR | 0o700,
		socket:               syscall.S_IFSOCK | 0o600,
		socket + ".lock":     syscall.S_IFREG | 0o600,
	} {
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil || st.Mode != want {
			t.Errorf("%s: mode %#o (%v), want %#o", path, st.Mode, err, want)
		}
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
}

// A daemon killed with SIGKILL leaves its socket (and its lock file,
// unlocked by its death): the next daemon takes the lock, replaces the stale
// socket and serves; SIGTERM removes the socket, not the lock file.
func TestStaleSocketAfterKill(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "sn.sock")
	root := filepath.Join(dir, "root")
	d := startDaemon(t, "--socket", socket, "--root", root)
	d.cmd.Process.Kill()
	<-d.done
	if lstat(t, socket).Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		t.Fatal("the killed daemon's socket is not a socket")
	}
	if c, err := net.Dial("unix", socket); err == nil {
		c.Close()
		t.Fatal("the killed daemon's socket answers")
	}
	d = startDaemon(t, "--socket", socket, "--root", root)
	if err := walk(t, socket); err != nil {
		t.Fatalf("the new daemon's socket does not answer: %v", err)
	}
	lock, err := os.Open(socket + ".lock")
	if err != nil {
		t.Fatalf("the new daemon's lock file: %v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock of the serving daemon's lock file: %v, want EWOULDBLOCK", err)
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after SIGTERM: %v", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("lock file still locked after the daemon exited: %v", err)
	}
}

func TestVersionFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	if rc := run([]string{"--version"}, &out, &errOut); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "erofs-snapshotter-grpc "+version) ||
		lines[1] != "liberofs_snapshotter "+erofs.Version() {
		t.Fatalf("--version printed %q", out.String())
	}
}

func TestHelpSaysWhatToPaste(t *testing.T) {
	var out bytes.Buffer
	if rc := run([]string{"--help"}, &out, &out); rc != 0 {
		t.Fatalf("--help: exit %d", rc)
	}
	for _, want := range []string{"Usage: erofs-snapshotter-grpc", "[proxy_plugins.erofs]", `type = "snapshot"`,
		`type = "diff"`, "remap-ids", defaultConfig, "-default-size", "-root"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(file, []byte(`
address = "/run/x.sock"
containerd_address = "/run/c.sock"
log_level = "debug"
root = "/var/lib/from-file"
set_immutable = true
enable_fsverity = true
sync_commit = true
enable_tar_index = true
mkfs_options = ["-zlz4"]
ovl_mount_options = ["redirect_dir=on"]
mkfs_path = "/usr/bin/mkfs.erofs"
`), 0o600)
	cfg, _, err := parse([]string{"--config", file}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Address: "/run/x.sock", ContainerdAddress: "/run/c.sock", LogLevel: "debug", LogFormat: "text", ShutdownTimeout: "10s",
		Config: erofs.Config{Root: "/var/lib/from-file", SetImmutable: true, EnableFsverity: true, SyncCommit: true, EnableTarIndex: true,
			MkfsOptions: []string{"-zlz4"}, OvlMountOptions: []string{"redirect_dir=on"}, MkfsPath: "/usr/bin/mkfs.erofs"}}
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", want) {
		t.Fatalf("from the file:\n got %+v\nwant %+v", cfg, want)
	}
	// Flags win, including a false boolean over the file's true.
	cfg, _, err = parse([]string{"--config", file, "--socket", "/s", "--root", "/r", "--set-immutable=false",
		"--mkfs-option", "-Eall-fragments", "--mkfs-option", "-T0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "/s" || cfg.RootPath != "/r" || cfg.Root != "" || cfg.SetImmutable ||
		fmt.Sprint(cfg.MkfsOptions) != "[-Eall-fragments -T0]" || !cfg.EnableTarIndex {
		t.Fatalf("flags over the file: %+v", cfg)
	}
	cfg, _, err = parse([]string{"--durable-before-use=false"}, io.Discard)
	if err != nil || cfg.DurableBeforeUse == nil || *cfg.DurableBeforeUse {
		t.Fatalf("--durable-before-use=false: %+v, %v", cfg.Config, err)
	}
	// containerd's dm-verity keys, from the file and from flags.
	os.WriteFile(file, []byte("enable_dmverity = true\ndmverity_mode = \"on\"\n"), 0o600)
	cfg, _, err = parse([]string{"--config", file}, io.Discard)
	if err != nil || !cfg.EnableDmverity || cfg.DmverityMode != "on" {
		t.Fatalf("dm-verity keys from the file: %+v, %v", cfg.Config, err)
	}
	cfg, _, err = parse([]string{"--config", file, "--enable-dmverity=false", "--dmverity-mode", "off"}, io.Discard)
	if err != nil || cfg.EnableDmverity || cfg.DmverityMode != "off" {
		t.Fatalf("dm-verity flags over the file: %+v, %v", cfg.Config, err)
	}
	// The apply limits, from the file and from flags (0: no limit).
	os.WriteFile(file, []byte("max_layer_size = 1000\nmax_file_size = 0\nmax_expansion_ratio = 7\nconvert_timeout_seconds = 60\n"), 0o600)
	cfg, _, err = parse([]string{"--config", file, "--max-expansion-ratio", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxLayerSize == nil || *cfg.MaxLayerSize != 1000 || cfg.MaxFileSize == nil || *cfg.MaxFileSize != 0 ||
		cfg.MaxExpansionRatio == nil || *cfg.MaxExpansionRatio != 0 || cfg.ConvertTimeoutSeconds != 60 {
		t.Fatalf("limits: %+v", cfg.Config)
	}
	// Block mode: containerd's default_size, from the file and from a flag.
	os.WriteFile(file, []byte("default_size = \"64Mi\"\n"), 0o600)
	cfg, _, err = parse([]string{"--config", file}, io.Discard)
	if err != nil || cfg.DefaultSize != "64Mi" {
		t.Fatalf("default_size from the file: %+v, %v", cfg.Config, err)
	}
	cfg, _, err = parse([]string{"--config", file, "--default-size", "1g"}, io.Discard)
	if err != nil || cfg.DefaultSize != "1g" {
		t.Fatalf("--default-size over the file: %+v, %v", cfg.Config, err)
	}
	// A file named on the command line must exist; the default one need not.
	if _, _, err = parse([]string{"--config", file + ".missing"}, io.Discard); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing --config file: %v", err)
	}
	cfg, _, err = parse(nil, io.Discard)
	if err != nil || cfg.Address != defaultSocket || cfg.RootPath != defaultRoot || cfg.ContainerdAddress != defaultContainerd {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	os.WriteFile(file, []byte("roots = \"/typo\"\n"), 0o600)
	if _, _, err := parse([]string{"--config", file}, io.Discard); err == nil || !strings.Contains(err.Error(), "roots") {
		t.Fatalf("unknown key: %v", err)
	}
	var errOut bytes.Buffer
	if rc := run([]string{"--config", file}, io.Discard, &errOut); rc != 2 || !strings.Contains(errOut.String(), "roots") {
		t.Fatalf("unknown key: exit %d, %q", rc, errOut.String())
	}
}

// remoteBlob answers sequential reads from one stream and any other read
// correctly too.
func TestRemoteBlob(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "ctrd.sock")
	ctrd := startContainerd(t, socket)
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	desc := ctrd.put(t, ocispec.MediaTypeImageLayer, data)
	conn := dial(t, socket)
	p := newProvider(conn)
	if _, err := p.ReaderAt(context.Background(), desc); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("no namespace: %v", err)
	}
	ctx := namespaces.WithNamespace(context.Background(), "ns")
	ra, err := p.ReaderAt(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if ra.Size() != int64(len(data)) {
		t.Fatalf("size %d", ra.Size())
	}
	got, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("sequential read: %d bytes, %v", len(got), err)
	}
	for _, r := range [][2]int64{{5 << 20, 10}, {100, 1000}, {0, 1 << 20}, {1100, 5}, {int64(len(data)) - 10, 10}, {int64(len(data)) - 5, 10}} {
		b := make([]byte, r[1])
		n, err := ra.ReadAt(b, r[0])
		want := []byte{}
		if r[0] < int64(len(data)) {
			want = data[r[0]:min(r[0]+r[1], int64(len(data)))]
		}
		if !bytes.Equal(b[:n], want) || (n < len(b)) != (err == io.EOF) {
			t.Fatalf("ReadAt(%d, %d): %d bytes, %v", r[1], r[0], n, err)
		}
	}
	missing := desc
	missing.Digest = digest.FromString("missing")
	if _, err := p.ReaderAt(ctx, missing); !errdefs.IsNotFound(err) {
		t.Fatalf("missing blob: %v", err)
	}
}

// SIGTERM while an apply waits for its layer. Graceful: the apply finishes
// (the layer arrives within --shutdown-timeout), then the daemon closes the
// handle and exits 0. Cut off: after --shutdown-timeout the request is
// canceled, the daemon exits 0, and the snapshot is left active and usable.
func TestShutdownDuringApply(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) { shutdownDuringApply(t, graceful) })
	}
}

func shutdownDuringApply(t *testing.T, graceful bool) {
	requireRoot(t)
	dir := t.TempDir()
	ctrd := startContainerd(t, filepath.Join(dir, "ctrd.sock"))
	layer := layerTar(t, map[string]string{"f": "x"})
	desc := ctrd.put(t, ocispec.MediaTypeImageLayer, layer)
	ctrd.stall = desc.Digest
	root := filepath.Join(dir, "root")
	timeout := "1s"
	if graceful {
		timeout = "30s"
	}
	d := startDaemon(t, "--socket", filepath.Join(dir, "sn.sock"), "--root", root,
		"--containerd-address", filepath.Join(dir, "ctrd.sock"), "--shutdown-timeout", timeout)
	conn := dial(t, d.socket)
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "erofs-ours")
	df := diffproxy.NewDiffApplier(diffapi.NewDiffClient(conn)).(differ)
	ctx := namespaces.WithNamespace(context.Background(), "ns")
	mounts, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		desc ocispec.Descriptor
		err  error
	}
	applied := make(chan result, 1)
	go func() {
		desc, err := df.Apply(ctx, desc, mounts)
		applied <- result{desc, err}
	}()
	select {
	case <-ctrd.stalled:
	case r := <-applied:
		t.Fatalf("apply returned before reading the layer: %v", r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not read the layer within 20 s")
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if graceful {
		time.Sleep(300 * time.Millisecond)
		close(ctrd.release)
	}
	start := time.Now()
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("exit: %v", d.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit within 30 s of SIGTERM")
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	r := <-applied
	if graceful {
		if r.err != nil || r.desc.Digest != digest.FromBytes(layer) {
			t.Fatalf("apply in flight at SIGTERM: %+v, %v", r.desc, r.err)
		}
	} else {
		if r.err == nil {
			t.Fatal("the cut-off apply succeeded")
		}
		if !strings.Contains(d.out.String(), "shutdown timeout") {
			t.Error("no log of the cut-off request")
		}
	}
	if _, err := os.Lstat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left: %v", err)
	}
	s, err := erofs.New(context.Background(), erofs.Config{RootPath: root})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if info, err := s.Stat(context.Background(), "a"); err != nil || info.Kind != snapshots.KindActive {
		t.Fatalf("after the apply: %+v, %v", info, err)
	}
	if err := s.Commit(context.Background(), "c", "a"); err != nil {
		t.Fatalf("commit after the apply: %v", err)
	}
	mounts, err = s.View(context.Background(), "v", "c")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := erofs.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	_, ferr := os.Stat(filepath.Join(target, "f"))
	erofs.UnmountAll(target, false)
	if graceful != (ferr == nil) {
		t.Fatalf("layer file present %v, want %v", ferr == nil, graceful)
	}
}

// scrape reads the daemon's /metrics at the address it logged.
func scrape(t *testing.T, d *daemon) string {
	t.Helper()
	out := d.out.String()
	i := strings.Index(out, "address=\"http://")
	if i < 0 {
		t.Fatalf("the daemon did not log its metrics address:\n%s", out)
	}
	url := out[i+len(`address="`):]
	url = url[:strings.IndexByte(url, '"')]
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET %s: %d %q %v", url, resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	return string(b)
}
