package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdProtocols runs the daemon as systemd runs erofs-snapshotter.service
// with erofs-snapshotter.socket: the listening socket passed as fd 3
// (LISTEN_PID, LISTEN_FDS), readiness sent to $NOTIFY_SOCKET (Type=notify).
func TestSystemdProtocols(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "erofs.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	lf, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	notifyPath := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// LISTEN_PID must be the daemon's own pid: set by the shell it execs from.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, os.Args[0],
		"--socket", socket, "--root", filepath.Join(dir, "root"), "--containerd-address", filepath.Join(dir, "none.sock"))
	cmd.Env = append(os.Environ(), asDaemon+"=1", "NOTIFY_SOCKET="+notifyPath)
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon output:\n%s", out)
		}
	}()

	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	n, err := nc.Read(buf)
	if err != nil {
		t.Fatalf("no readiness notification: %v", err)
	}
	if msg := string(buf[:n]); !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("notification %q, want READY=1 first", msg)
	}
	// Ready means serving, on the socket systemd made.
	if err := walk(t, socket); err != nil {
		t.Fatalf("walk through the passed socket: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n, err = nc.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Fatalf("at stop: %q, %v", buf[:n], err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit on SIGTERM")
	}
	// The socket is systemd's: left in place for the next activation.
	if _, err := os.Lstat(socket); err != nil {
		t.Fatalf("the passed socket was removed: %v", err)
	}
}

// TestUnitFiles checks packaging/systemd with systemd's own parser
// (systemd-analyze verify: no warning, no error), ExecStart pointed at this
// test binary (verify wants it to exist).
func TestUnitFiles(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze (package systemd) is needed to check the unit files: %v", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"erofs-snapshotter.service", "erofs-snapshotter.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "packaging", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/local/bin/erofs-snapshotter-grpc", os.Args[0])
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", "--man=no", "./erofs-snapshotter.socket", "./erofs-snapshotter.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
