// Package erofs is the Go binding of erofs-snapshotter: a containerd v2
// snapshots.Snapshotter (and snapshots.Cleaner) backed by the Rust library
// through its C ABI (include/erofs_snapshotter.h).
//
// A containerd fork serves it as a snapshotter plugin configured from its
// TOML file ([plugins."io.containerd.snapshotter.v1.erofs"], keys as in
// Config) with:
//
//	registry.Register(&plugin.Registration{
//		Type:   plugins.SnapshotPlugin,
//		ID:     "erofs",
//		Config: &erofs.Config{},
//		InitFn: func(ic *plugin.InitContext) (any, error) {
//			cfg := *ic.Config.(*erofs.Config)
//			if cfg.RootPath == "" && cfg.Root == "" {
//				cfg.RootPath = ic.Properties[plugins.PropertyRootDir]
//			}
//			s, err := erofs.New(ic.Context, cfg)
//			if err != nil {
//				return nil, err
//			}
//			ic.Meta.Exports[plugins.SnapshotterRootDir] = s.Root()
//			// rebase (parallel unpack), only-remap-ids, and remap-ids
//			// where the kernel has ID-mapped mounts of EROFS layers.
//			caps, err := s.Capabilities(ic.Context)
//			if err != nil {
//				return nil, err
//			}
//			ic.Meta.Capabilities = append(ic.Meta.Capabilities, caps...)
//			return s, nil
//		},
//	})
//
// (examples/go in the repository runs exactly this.)
//
// Semantics worth knowing:
//   - Errors carry the library's message and match errdefs classes
//     (errdefs.IsNotFound and friends); see Error.
//   - Every method checks ctx before calling into the library; a call that
//     has started runs to completion.
//   - Close is idempotent and waits for calls in flight; calls after it fail
//     with errdefs.ErrFailedPrecondition.
//   - Commit honours snapshots.WithParent as containerd's storage does: a
//     snapshot prepared without a parent is rebased onto it (parallel
//     unpack), so the plugin advertises snapshots.RebaseCap.
//   - Mounts are concrete (bind, erofs file-backed image, overlay with the
//     layers already mounted by the library): plain mount(2) or mount.All
//     handles them, no mount manager needed. A snapshot with containerd's
//     ID-mapping labels has uidmap= and gidmap= options, which mount.All
//     and MountAll make into ID-mapped mounts (remap-ids).
//   - Library warnings (and, with a debug-level logger, one record per
//     operation) go to log.G(ctx) of the context given to New.
//   - NewDiffer is the matching containerd diff.Applier (and a Comparer that
//     is always errdefs.ErrNotImplemented): it streams a layer from a content
//     store into the active snapshot's layer.erofs (the library's EROFS writer), which
//     the next Commit installs; it declines (errdefs.ErrNotImplemented)
//     foreign mounts and media types that need a stream processor, so
//     containerd falls back to its walking differ. Snapshotter.Apply does the
//     same from any io.Reader.
//
// cmd/erofs-snapshotter-grpc serves both to an unmodified containerd as
// snapshot and diff proxy plugins on one unix socket.
//
// Linking: by default the static archive target/release/liberofs_snapshotter.a
// of this repository (built by `cargo build --release`); with the build tag
// erofs_dynamic the shared library, found at run time through an rpath; with
// erofs_external whatever CGO_CFLAGS and CGO_LDFLAGS name (vendored builds).
package erofs
