package erofs

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
)

// Config is the library's JSON configuration document with containerd's
// plugin config keys, so a plugin can decode its TOML section straight into
// it. Zero values are the library's defaults.
type Config struct {
	// RootPath is the directory holding metadata.db and snapshots/
	// (containerd's key); Root is accepted as another spelling.
	RootPath string `json:"root_path,omitempty" toml:"root_path"`
	Root     string `json:"root,omitempty" toml:"root"`
	// SetImmutable sets FS_IMMUTABLE_FL on each committed layer blob.
	SetImmutable bool `json:"set_immutable" toml:"set_immutable"`
	// EnableFsverity enables fs-verity on each layer blob and checks it before mounting.
	EnableFsverity bool `json:"enable_fsverity" toml:"enable_fsverity"`
	// SyncCommit fsyncs each blob before its commit is recorded.
	SyncCommit bool `json:"sync_commit" toml:"sync_commit"`
	// MkfsOptions are extra mkfs.erofs arguments, one argv element each.
	MkfsOptions []string `json:"mkfs_options,omitempty" toml:"mkfs_options"`
	// OvlMountOptions are extra overlayfs options, e.g. "redirect_dir=on".
	OvlMountOptions []string `json:"ovl_mount_options,omitempty" toml:"ovl_mount_options"`
	// MkfsPath is the mkfs.erofs program (default: mkfs.erofs on PATH).
	MkfsPath string `json:"mkfs_path,omitempty" toml:"mkfs_path"`
	// EnableTarIndex makes the differ write tar-index images (mkfs.erofs
	// --tar=i, the layer tar appended), as containerd's enable_tar_index.
	EnableTarIndex bool `json:"enable_tar_index" toml:"enable_tar_index"`
	// MaxLayerSize, MaxFileSize and MaxExpansionRatio bound what applying
	// a layer may write: the sum of its file sizes, any one file's size, and
	// the files' bytes per byte of layer data as given (past 64 MiB). Unset
	// (nil) keeps the library's defaults (128 GiB, 64 GiB, 100); 0 removes
	// the bound.
	MaxLayerSize      *uint64 `json:"max_layer_size,omitempty" toml:"max_layer_size"`
	MaxFileSize       *uint64 `json:"max_file_size,omitempty" toml:"max_file_size"`
	MaxExpansionRatio *uint64 `json:"max_expansion_ratio,omitempty" toml:"max_expansion_ratio"`
	// ConvertTimeoutSeconds is how long one conversion (a mkfs.erofs run,
	// for apply or commit) may take before it is killed; 0 keeps the
	// library's default (3600).
	ConvertTimeoutSeconds uint64 `json:"convert_timeout_seconds,omitempty" toml:"convert_timeout_seconds"`
	// LayerContentCaches are read-only directories of pre-converted EROFS
	// layers keyed by diffID (<dir>/sha256/<ab>/<hex>.erofs), as
	// containerd's layer_content_caches: an unpack whose layer is there uses
	// that file and converts nothing. Absolute paths; not with SetImmutable
	// or EnableFsverity. Snapshotter.ExportLayer fills one.
	LayerContentCaches []string `json:"layer_content_caches,omitempty" toml:"layer_content_caches"`
	// DurableBeforeUse (default true when nil) makes every layer of a chain
	// durable before the first snapshot using it is handed out; false
	// flushes nothing (SyncCommit still flushes every commit).
	DurableBeforeUse *bool `json:"durable_before_use,omitempty" toml:"durable_before_use"`
	// EnableDmverity appends a dm-verity hash tree to each applied layer and
	// writes <blob>.dmverity, as containerd's differ's enable_dmverity
	// (needs the dm_verity module).
	EnableDmverity bool `json:"enable_dmverity" toml:"enable_dmverity"`
	// DmverityMode is containerd's dmverity_mode: "auto" (the default:
	// layers with <blob>.dmverity are mounted through dm-verity), "on"
	// (every layer must have one) or "off".
	DmverityMode string `json:"dmverity_mode,omitempty" toml:"dmverity_mode"`
	// DefaultSize is containerd's default_size (block mode): "" or "0"
	// keeps upper directories; a size ("64Mi", "1g", or bytes) gives each
	// container's active snapshot an ext4 image of that size as its writable
	// layer (label containerd.io/snapshot/max-size sets one snapshot's), so
	// a container cannot fill the host's disk. Needs mkfs.ext4 (e2fsprogs).
	DefaultSize string `json:"default_size,omitempty" toml:"default_size"`
}

// document is what erofs_snapshotter_open reads, and the root it names.
func (c Config) document() (string, string, error) {
	root := c.RootPath
	if root == "" {
		root = c.Root
	} else if c.Root != "" && c.Root != c.RootPath {
		return "", "", fmt.Errorf("config: root_path %q and root %q disagree: %w", c.RootPath, c.Root, errdefs.ErrInvalidArgument)
	}
	doc := struct {
		Root                  string   `json:"root"`
		SetImmutable          bool     `json:"set_immutable"`
		EnableFsverity        bool     `json:"enable_fsverity"`
		SyncCommit            bool     `json:"sync_commit"`
		MkfsOptions           []string `json:"mkfs_options,omitempty"`
		OvlMountOptions       []string `json:"ovl_mount_options,omitempty"`
		MkfsPath              string   `json:"mkfs_path,omitempty"`
		EnableTarIndex        bool     `json:"enable_tar_index"`
		MaxLayerSize          *uint64  `json:"max_layer_size,omitempty"`
		MaxFileSize           *uint64  `json:"max_file_size,omitempty"`
		MaxExpansionRatio     *uint64  `json:"max_expansion_ratio,omitempty"`
		ConvertTimeoutSeconds uint64   `json:"convert_timeout_seconds,omitempty"`
		LayerContentCaches    []string `json:"layer_content_caches,omitempty"`
		EnableDmverity        bool     `json:"enable_dmverity"`
		DmverityMode          string   `json:"dmverity_mode,omitempty"`
		DurableBeforeUse      *bool    `json:"durable_before_use,omitempty"`
		DefaultSize           string   `json:"default_size,omitempty"`
	}{root, c.SetImmutable, c.EnableFsverity, c.SyncCommit, c.MkfsOptions, c.OvlMountOptions, c.MkfsPath, c.EnableTarIndex,
		c.MaxLayerSize, c.MaxFileSize, c.MaxExpansionRatio, c.ConvertTimeoutSeconds, c.LayerContentCaches,
		c.EnableDmverity, c.DmverityMode, c.DurableBeforeUse, c.DefaultSize}
	b, err := json.Marshal(doc)
	if err != nil {
		return "", "", fmt.Errorf("config: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return string(b), root, nil
}
