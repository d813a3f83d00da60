package fs

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/peerdrive/peerdrive/tree"
)

// errnoTable is the one mapping from our errors to what a POSIX caller sees.
// Order matters: the first match wins. A missing or corrupt chunk is EIO,
// never ENOENT.
var errnoTable = []errnoMapping{
	{tree.ErrCorrupt, syscall.EIO},
	{tree.ErrUnavailable, syscall.EIO},
	{tree.ErrNoSpace, syscall.ENOSPC},
	{ErrQuota, syscall.ENOSPC},
	{tree.ErrNotFound, syscall.ENOENT},
	{tree.ErrExist, syscall.EEXIST},
	{tree.ErrNotEmpty, syscall.ENOTEMPTY},
	{tree.ErrNotDir, syscall.ENOTDIR},
	{tree.ErrIsDir, syscall.EISDIR},
	{tree.ErrNoData, syscall.ENODATA},
	{tree.ErrInvalid, syscall.EINVAL},
	{ErrReadOnly, syscall.EROFS},
	{context.Canceled, syscall.EINTR},
	{context.DeadlineExceeded, syscall.EINTR},
}

type errnoMapping struct {
	err   error
	errno syscall.Errno
}

// ErrQuota reports a write past the drive's quota.
var ErrQuota = errors.New("drive quota exceeded")

// ErrReadOnly reports a change to a read-only mount.
var ErrReadOnly = errors.New("read-only drive")

// toErrno maps err to an errno; anything unknown is EIO, since go-fuse
// would otherwise turn a wrapped error into ENOSYS. EIO is logged, with
// args naming the object; ENOSPC once per noSpaceLogEvery (a copy that runs
// into the quota fails every one of its writes: a line each flooded the
// log).
func toErrno(log *slog.Logger, op string, err error, args ...any) syscall.Errno {
	if err == nil {
		return 0
	}
	errno := syscall.EIO
	var e syscall.Errno
	if errors.As(err, &e) {
		errno = e
	} else if i := slices.IndexFunc(errnoTable, func(m errnoMapping) bool { return errors.Is(err, m.err) }); i >= 0 {
		errno = errnoTable[i].errno
	}
	switch errno {
	case syscall.EIO:
		log.Error("operation failed", append([]any{"op", op, "err", err}, args...)...)
	case syscall.ENOSPC:
		if n, ok := noSpaceLog.allow(time.Now()); ok {
			log.Warn("no space: operation refused", append([]any{"op", op, "err", err, "refused_since_last_line", n}, args...)...)
		}
	}
	return errno
}

// noSpaceLogEvery is the least time between two ENOSPC log lines.
const noSpaceLogEvery = 10 * time.Second

var noSpaceLog logLimit

// logLimit lets one line through per noSpaceLogEvery.
type logLimit struct {
	mu      sync.Mutex
	last    time.Time
	dropped int
}

// allow reports whether a line may be logged now, and how many were not
// since the last one.
func (l *logLimit) allow(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < noSpaceLogEvery {
		l.dropped++
		return 0, false
	}
	n := l.dropped
	l.last, l.dropped = now, 0
	return n, true
}
