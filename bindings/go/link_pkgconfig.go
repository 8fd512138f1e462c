//go:build erofs_pkgconfig && !erofs_external

package erofs

// With erofs_pkgconfig the library is the installed one (make install),
// found with pkg-config (PKG_CONFIG_PATH for a non-standard prefix): no
// path into a build tree is linked in, and no rpath.

/*
#cgo pkg-config: erofs-snapshotter
*/
import "C"
