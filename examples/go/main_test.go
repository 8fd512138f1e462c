package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExample(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("needs root: run the tests as root")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.toml")
	doc := "version = 3\nroot = \"" + dir + "/containerd\"\n" +
		"[plugins.\"io.containerd.snapshotter.v1.erofs\"]\n  set_immutable = true\n"
	if err := os.WriteFile(config, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := run(context.Background(), config, out); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(got), "example-view") || !strings.Contains(string(got), "layer.erofs") {
		t.Fatalf("output:\n%s", got)
	}
	// The default root is <root>/<plugin URI>.
	if _, err := os.Stat(filepath.Join(dir, "containerd", "io.containerd.snapshotter.v1.erofs", "metadata.db")); err != nil {
		t.Fatal(err)
	}
}
