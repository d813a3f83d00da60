package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/peerdrive/peerdrive/tree"
)

// errnoTable is the one mapping from our errors to what a POSIX caller sees.
// Order matters: the first match wins. A missing or corrupt chunk is EIO,
// never ENOENT.
var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{tree.ErrCorrupt, syscall.EIO},
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

// ErrQuota reports a write past the drive's quota.
var ErrQuota = errors.New("drive quota exceeded")

// ErrReadOnly reports a change to a read-only mount.
var ErrReadOnly = errors.New("read-only drive")

// toErrno maps err to an errno; anything unknown is EIO and logged, since
// go-fuse would otherwise turn a wrapped error into ENOSYS.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			if e.errno == syscall.EIO || e.errno == syscall.ENOSPC {
				log.Error("operation failed", "op", op, "err", err)
			}
			return e.errno
		}
	}
	log.Error("operation failed", "op", op, "err", err)
	return syscall.EIO
}
