//go:build !erofs_dynamic && !erofs_external

package erofs

// The static archive cargo builds, so a containerd fork ships one binary.
// The system libraries are what `cargo rustc --release --lib --crate-type
// staticlib -- --print native-static-libs` reports.

/*
#cgo LDFLAGS: ${SRCDIR}/../../target/release/liberofs_snapshotter.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
*/
import "C"
