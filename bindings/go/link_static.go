//go:build !erofs_dynamic && !erofs_external && !erofs_pkgconfig

package erofs

// The static archive cargo builds, so a containerd fork ships one binary.
// The system libraries are what `cargo rustc --release --lib --crate-type
// staticlib -- --print native-static-libs` reports. Without the archive the
// build stops with the #error below, not a linker's page of flags.

/*
#cgo CFLAGS: -I${SRCDIR}/../../target/release
#cgo LDFLAGS: ${SRCDIR}/../../target/release/liberofs_snapshotter.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
#if defined(__has_include)
#if !__has_include("liberofs_snapshotter.a")
#error "target/release/liberofs_snapshotter.a is missing: build the library first (make build, or cargo build --release, in the repository root), or link another copy with -tags erofs_external and CGO_LDFLAGS (see bindings/go/README.md)"
#endif
#endif
*/
import "C"
