//go:build erofs_dynamic && !erofs_external && !erofs_pkgconfig

package erofs

// The shared library cargo builds, found at run time through the rpath.

/*
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -Wl,-rpath,${SRCDIR}/../../target/release -lerofs_snapshotter
*/
import "C"
