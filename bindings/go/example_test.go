package erofs_test

import (
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/platforms"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	erofs "github.com/erofs-snapshotter/erofs-snapshotter/bindings/go"
)

// A containerd fork that registers the snapshotter as plugin "erofs" (see the
// package documentation) registers its differ next to it, reading layers
// from containerd's content store. Pair the two in the transfer service's
// unpack_config (differ = "erofs") and put "erofs" first in the diff
// service's default order; drop containerd's own EROFS differ plugin from the
// fork's builtins, or pick another ID.
func ExampleNewDiffer() {
	registry.Register(&plugin.Registration{
		Type:     plugins.DiffPlugin,
		ID:       "erofs",
		Requires: []plugin.Type{plugins.MetadataPlugin, plugins.SnapshotPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			md, err := ic.GetSingle(plugins.MetadataPlugin)
			if err != nil {
				return nil, err
			}
			sn, err := ic.GetByID(plugins.SnapshotPlugin, "erofs")
			if err != nil {
				return nil, err
			}
			ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
			return erofs.NewDiffer(sn.(*erofs.Snapshotter), md.(*metadata.DB).ContentStore()), nil
		},
	})
}
