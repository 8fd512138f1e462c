package erofs

/*
#include "erofs_snapshotter.h"
*/
import "C"

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Status codes of the C ABI (EROFS_OK and EROFS_ERR_*), as the header
// defines them.
const (
	StatusOK                 = C.EROFS_OK
	StatusInvalidArgument    = C.EROFS_ERR_INVALID_ARGUMENT
	StatusNotFound           = C.EROFS_ERR_NOT_FOUND
	StatusAlreadyExists      = C.EROFS_ERR_ALREADY_EXISTS
	StatusFailedPrecondition = C.EROFS_ERR_FAILED_PRECONDITION
	StatusUnavailable        = C.EROFS_ERR_UNAVAILABLE
	StatusNotImplemented     = C.EROFS_ERR_NOT_IMPLEMENTED
	StatusInternal           = C.EROFS_ERR_INTERNAL
	StatusPanic              = C.EROFS_ERR_PANIC
)

// The one place status codes become containerd errors.
var statusErrors = map[int32]error{
	StatusInvalidArgument:    errdefs.ErrInvalidArgument,
	StatusNotFound:           errdefs.ErrNotFound,
	StatusAlreadyExists:      errdefs.ErrAlreadyExists,
	StatusFailedPrecondition: errdefs.ErrFailedPrecondition,
	StatusUnavailable:        errdefs.ErrUnavailable,
	StatusNotImplemented:     errdefs.ErrNotImplemented,
	StatusInternal:           errdefs.ErrInternal,
	StatusPanic:              errdefs.ErrInternal, // a library bug caught at the boundary
}

// Error is a failure reported by the library. errors.Is (and so
// errdefs.IsNotFound and friends) matches the errdefs error of its Code.
type Error struct {
	Code    int32  // EROFS_ERR_* status
	Message string // the library's one-line message
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the errdefs error of the status code.
func (e *Error) Unwrap() error {
	if err, ok := statusErrors[e.Code]; ok {
		return err
	}
	return errdefs.ErrUnknown
}

func newError(code int32, message string) error {
	if message == "" {
		message = fmt.Sprintf("erofs-snapshotter: status %d", code)
	}
	return &Error{Code: code, Message: message}
}
