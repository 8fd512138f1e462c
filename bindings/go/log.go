package erofs

/*
#include <stdint.h>
*/
import "C"

import (
	"runtime/cgo"

	"github.com/containerd/log"
)

// Library log levels (EROFS_LOG_*).
const (
	levelError = 1
	levelWarn  = 2
	levelInfo  = 3
	levelDebug = 4
)

type logger struct {
	entry *log.Entry
}

// maxLevel asks the library for no more than the host logger prints, so
// per-operation debug records cost nothing unless debug logging is on.
func maxLevel(entry *log.Entry) int32 {
	switch l := entry.Logger.GetLevel(); {
	case l >= log.DebugLevel:
		return levelDebug
	case l >= log.InfoLevel:
		return levelInfo
	case l >= log.WarnLevel:
		return levelWarn
	default:
		return levelError
	}
}

// erofsGoLog receives the library's log records, from any thread, until
// erofs_snapshotter_close returns; handle is the cgo.Handle of a *logger.
//
//export erofsGoLog
func erofsGoLog(handle C.uintptr_t, level C.int32_t, message *C.char) {
	l, ok := cgo.Handle(handle).Value().(*logger)
	if !ok {
		return
	}
	msg := C.GoString(message)
	switch level {
	case levelError:
		l.entry.Error(msg)
	case levelWarn:
		l.entry.Warn(msg)
	case levelInfo:
		l.entry.Info(msg)
	default:
		l.entry.Debug(msg)
	}
}
