// Command dmverityformat formats an EROFS layer blob with a dm-verity hash
// tree exactly as containerd 2.4's EROFS differ does (enable_dmverity):
// containerd/v2 internal/dmverity.FormatLayer with DefaultDmverityOptions,
// whose steps are repeated here (an internal package cannot be imported)
// over the same library, github.com/containerd/go-dmverity. The VM tests
// use it to show that a layer converted by containerd mounts here.
//
//	dmverityformat BLOB
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/go-dmverity/pkg/utils"
	"github.com/containerd/go-dmverity/pkg/verity"
	"github.com/google/uuid"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dmverityformat BLOB")
		os.Exit(2)
	}
	if err := formatLayer(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "dmverityformat:", err)
		os.Exit(1)
	}
}

// formatLayer is containerd's FormatLayer(ctx, blob, DefaultDmverityOptions()).
func formatLayer(blob string) error {
	fi, err := os.Stat(blob)
	if err != nil {
		return err
	}
	const blockSize = 4096
	dataBlocks := (fi.Size() + blockSize - 1) / blockSize
	hashOffset := uint64(dataBlocks * blockSize)

	params := verity.DefaultParams()
	params.HashName = "sha256"
	params.DataBlockSize = blockSize
	params.HashBlockSize = blockSize
	params.DataBlocks = uint64(dataBlocks)
	params.HashAreaOffset = hashOffset
	params.HashType = 1
	salt, saltSize, err := utils.ApplySalt("0000000000000000000000000000000000000000000000000000000000000000", 256)
	if err != nil {
		return err
	}
	params.Salt, params.SaltSize = salt, saltSize
	id, err := utils.ApplyUUID(uuid.NewString(), false, false, nil)
	if err != nil {
		return err
	}
	params.UUID = id

	treeSize, err := verity.GetHashTreeSize(&verity.Params{
		HashName: "sha256", DataBlockSize: blockSize, HashBlockSize: blockSize,
		DataBlocks: uint64(dataBlocks), HashType: 1,
	})
	if err != nil {
		return err
	}
	sbSize := utils.AlignUp(uint64(verity.SuperblockSize), blockSize)
	if err := os.Truncate(blob, int64(hashOffset+sbSize+treeSize)); err != nil {
		return err
	}
	root, err := verity.Create(&params, blob, blob)
	if err != nil {
		return err
	}
	meta, err := json.MarshalIndent(struct {
		RootHash   string `json:"roothash"`
		HashOffset uint64 `json:"hashoffset"`
	}{fmt.Sprintf("%x", root), hashOffset}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(blob+".dmverity", meta, 0o644)
}
