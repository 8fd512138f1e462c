package erofs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The two ways a build goes wrong for a new user say what to do.
func TestBuildErrorsSayWhatToDo(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	build := func(env ...string) string {
		t.Helper()
		cmd := exec.Command(goBin, "build", "-o", os.DevNull, ".")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("go build with %v succeeded", env)
		}
		return string(out)
	}
	if out := build("CGO_ENABLED=0"); !strings.Contains(out, "needs_cgo__build_with_CGO_ENABLED_1") {
		t.Errorf("without cgo:\n%s", out)
	}
	// The archive looked for beside a copy of the package with no target/.
	dir := t.TempDir()
	pkg := filepath.Join(dir, "bindings", "go")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		b, err := os.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "include"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := os.ReadFile("../../include/erofs_snapshotter.h")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "include", "erofs_snapshotter.h"), h, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "build", "-o", os.DevNull, ".")
	cmd.Dir = pkg
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "liberofs_snapshotter.a is missing: build the library first") {
		t.Errorf("without the archive (err %v):\n%s", err, out)
	}
}
