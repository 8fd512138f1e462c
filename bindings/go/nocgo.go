//go:build !cgo

package erofs

// This package binds the C library liberofs_snapshotter through cgo; built
// without cgo it would have nothing to offer (its users would see
// "undefined: erofs.Snapshotter"). The undefined name below stops the build
// with the reason instead.
var _ = erofs_snapshotter_needs_cgo__build_with_CGO_ENABLED_1_and_a_C_compiler
