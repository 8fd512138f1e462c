// Command example loads a containerd config file, initializes the "erofs"
// snapshotter plugin registered in plugin.go the way containerd's server
// does, and takes a snapshot through it. Run it as root:
//
//	go run . -config config.toml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
)

func main() {
	configPath := flag.String("config", "config.toml", "containerd config file")
	flag.Parse()
	if err := run(context.Background(), *configPath, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, configPath string, out *os.File) error {
	var config srvconfig.Config
	if err := srvconfig.LoadConfig(ctx, configPath, &config); err != nil {
		return err
	}
	if config.Root == "" {
		config.Root = "/var/lib/containerd"
	}
	for _, reg := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if reg.Type != plugins.SnapshotPlugin || reg.ID != "erofs" {
			continue
		}
		// As containerd's server does for every plugin.
		ic := plugin.NewContext(ctx, plugin.NewPluginSet(), map[string]string{
			plugins.PropertyRootDir: filepath.Join(config.Root, reg.URI()),
		})
		pc, err := config.Decode(ctx, reg.URI(), reg.Config)
		if err != nil {
			return err
		}
		ic.Config = pc
		instance, err := reg.Init(ic).Instance()
		if err != nil {
			return err
		}
		sn := instance.(snapshots.Snapshotter)
		defer sn.Close()
		return demo(ctx, sn, out)
	}
	return fmt.Errorf("plugin io.containerd.snapshotter.v1.erofs is not registered")
}

// demo commits a layer holding one file and reads it back through a view.
func demo(ctx context.Context, sn snapshots.Snapshotter, out *os.File) error {
	mounts, err := sn.Prepare(ctx, "example-layer", "")
	if err != nil {
		return err
	}
	// Without a parent the active snapshot is a bind mount of its upper dir.
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "hello"), []byte("hello from erofs\n"), 0o644); err != nil {
		return err
	}
	if err := sn.Commit(ctx, "example", "example-layer"); err != nil {
		return err
	}
	defer sn.Remove(ctx, "example")
	mounts, err = sn.View(ctx, "example-view", "example")
	if err != nil {
		return err
	}
	defer sn.Remove(ctx, "example-view")
	fmt.Fprintf(out, "view mounts: %+v\n", mounts)
	return sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		fmt.Fprintf(out, "%-9s %s\n", info.Kind, info.Name)
		return nil
	})
}
