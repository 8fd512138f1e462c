package main

import (
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	erofs "github.com/erofs-snapshotter/erofs-snapshotter/bindings/go"
)

// The lines a containerd fork adds (e.g. in a file of its builtins package)
// to serve erofs-snapshotter as the snapshotter "erofs". Drop containerd's
// own plugins/snapshots/erofs/plugin import from the builtins, or choose
// another ID: plugin IDs are unique per type.
func init() {
	registry.Register(&plugin.Registration{
		Type:   plugins.SnapshotPlugin,
		ID:     "erofs",
		Config: &erofs.Config{}, // [plugins."io.containerd.snapshotter.v1.erofs"]
		InitFn: func(ic *plugin.InitContext) (any, error) {
			cfg := *ic.Config.(*erofs.Config)
			if cfg.RootPath == "" && cfg.Root == "" {
				cfg.RootPath = ic.Properties[plugins.PropertyRootDir]
			}
			s, err := erofs.New(ic.Context, cfg)
			if err != nil {
				return nil, err
			}
			ic.Meta.Exports[plugins.SnapshotterRootDir] = s.Root()
			// "rebase": Commit honours snapshots.WithParent, so containerd
			// may unpack an image's layers in parallel
			// (max_concurrent_unpacks). "only-remap-ids", and "remap-ids"
			// where the kernel mounts EROFS layers through ID-mapped mounts:
			// pods in user namespaces get them without a chown.
			caps, err := s.Capabilities(ic.Context)
			if err != nil {
				s.Close()
				return nil, err
			}
			ic.Meta.Capabilities = append(ic.Meta.Capabilities, caps...)
			return s, nil
		},
	})
}
