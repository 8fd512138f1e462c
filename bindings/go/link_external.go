//go:build erofs_external

package erofs

// With erofs_external the builder names the library in CGO_LDFLAGS, e.g.
// when this module is vendored away from the repository's target/ directory:
//
//	CGO_LDFLAGS="/opt/erofs/liberofs_snapshotter.a -lgcc_s -lutil -lrt -lpthread -lm -ldl"

import "C"
