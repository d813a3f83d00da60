package fs

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"syscall"

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
// would otherwise turn a wrapped error into ENOSYS. EIO and ENOSPC are
// logged, with args naming the object.
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
	if errno == syscall.EIO || errno == syscall.ENOSPC {
		log.Error("operation failed", append([]any{"op", op, "err", err}, args...)...)
	}
	return errno
}
