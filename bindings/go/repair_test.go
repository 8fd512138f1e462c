package erofs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A layer lost in a crash (its blob cut short before it reached the disk)
// is found at open, refused, and made again from the content store where
// containerd keeps the image's blobs, by the diffID its commit recorded.
func TestRepairFromContentStore(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	ctx := namespaces.WithNamespace(context.Background(), "default")
	cs, err := local.NewLabeledStore(filepath.Join(t.TempDir(), "content"), memLabels{})
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, Config{RootPath: root})
	// As containerd's metadata store names them: "<namespace>/<n>/<name>".
	parent := ""
	var blobs []string
	for i, name := range []string{"a", "b"} {
		layer := tarOf(t, tarEntry{name: name, body: name})
		gz := gzipOf(t, layer)
		desc := putBlob(t, cs, ocispec.MediaTypeImageLayerGzip, gz)
		// containerd's unpacker labels the blob with its diffID once applied.
		diffID := digest.FromBytes(layer)
		if _, err := cs.Update(ctx, content.Info{Digest: desc.Digest, Labels: map[string]string{labelUncompressed: diffID.String()}}, "labels."+labelUncompressed); err != nil {
			t.Fatal(err)
		}
		key := "default/" + string(rune('1'+i)) + "/" + name
		labels := snapshots.WithLabels(map[string]string{"containerd.io/snapshot.ref": name, "containerd.io/snapshot/diff-id": diffID.String()})
		if _, err := s.Prepare(ctx, "extract-"+name, parent, labels); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(ctx, "extract-"+name, bytes.NewReader(gz), desc.MediaType, desc.Digest); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, key, "extract-"+name, labels); err != nil {
			t.Fatal(err)
		}
		parent = key
	}
	s.Close()
	matches, _ := filepath.Glob(filepath.Join(root, "snapshots", "*", "layer.erofs"))
	for _, m := range matches {
		blobs = append(blobs, m)
	}
	if len(blobs) != 2 {
		t.Fatalf("blobs %v", blobs)
	}
	// The power cut: the upper layer's blob is empty.
	if err := os.Truncate(blobs[1], 0); err != nil {
		t.Fatal(err)
	}

	s = open(t, Config{RootPath: root})
	lost, err := s.Check(ctx)
	if err != nil || len(lost) != 1 || lost[0] != "default/2/b" {
		t.Fatalf("Check: %v %v", lost, err)
	}
	if _, err := s.View(ctx, "v", "default/2/b"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "was lost") {
		t.Fatalf("View on a lost layer: %v", err)
	}
	// Another layer's tar is refused.
	other := tarOf(t, tarEntry{name: "x", body: "x"})
	if _, err := s.Repair(ctx, "default/2/b", bytes.NewReader(other), "", ""); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Repair with another layer: %v", err)
	}
	repaired, err := s.RepairFrom(ctx, cs)
	if err != nil || len(repaired) != 1 || repaired[0] != "default/2/b" {
		t.Fatalf("RepairFrom: %v %v", repaired, err)
	}
	if lost, err := s.Check(ctx); err != nil || len(lost) != 0 {
		t.Fatalf("Check after repair: %v %v", lost, err)
	}
	if v := readView(t, s, "default/2/b", "a", "b"); v["a"] != "a" || v["b"] != "b" {
		t.Fatalf("view after repair: %v", v)
	}
}

// Without the layer in the content store, the layer stays lost and says why.
func TestRepairFromWithoutTheBlob(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	ctx := namespaces.WithNamespace(context.Background(), "default")
	s := open(t, Config{RootPath: root})
	layer := tarOf(t, tarEntry{name: "a", body: "a"})
	labels := snapshots.WithLabels(map[string]string{"containerd.io/snapshot/diff-id": digest.FromBytes(layer).String()})
	if _, err := s.Prepare(ctx, "x", "", labels); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, "x", bytes.NewReader(layer), "", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "default/1/a", "x", labels); err != nil {
		t.Fatal(err)
	}
	s.Close()
	matches, _ := filepath.Glob(filepath.Join(root, "snapshots", "*", "layer.erofs"))
	if len(matches) != 1 {
		t.Fatal(matches)
	}
	if err := os.Remove(matches[0]); err != nil {
		t.Fatal(err)
	}
	s = open(t, Config{RootPath: root})
	empty := newContentStore(t)
	putBlob(t, empty, ocispec.MediaTypeImageLayerGzip, gzipOf(t, tarOf(t, tarEntry{name: "other"})))
	repaired, err := s.RepairFrom(ctx, empty)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `layer "default/1/a"`) || len(repaired) != 0 {
		t.Fatalf("RepairFrom: %v %v", repaired, err)
	}
	if lost, err := s.Check(ctx); err != nil || len(lost) != 1 {
		t.Fatalf("Check: %v %v", lost, err)
	}
}

// memLabels is a content label store in memory, for a content store whose
// blobs take labels as containerd's does.
type memLabels map[digest.Digest]map[string]string

func (m memLabels) Get(d digest.Digest) (map[string]string, error) { return m[d], nil }

func (m memLabels) Set(d digest.Digest, labels map[string]string) error {
	m[d] = labels
	return nil
}

func (m memLabels) Update(d digest.Digest, update map[string]string) (map[string]string, error) {
	if m[d] == nil {
		m[d] = map[string]string{}
	}
	for k, v := range update {
		if v == "" {
			delete(m[d], k)
		} else {
			m[d][k] = v
		}
	}
	return m[d], nil
}
