package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/tree"
)

var errorsIs = errors.Is

func wrapCorrupt(err error) error { return fmt.Errorf("%w: %v", tree.ErrCorrupt, err) }

const maxXattrValue = 64 << 10 // as Linux's XATTR_SIZE_MAX

// xattrNamespace reports whether Linux knows the namespace of attr: user,
// trusted, security, and of system only the POSIX ACLs. Filesystems refuse
// the others with EOPNOTSUPP; the kernel passes them on to FUSE.
func xattrNamespace(attr string) bool {
	for _, ns := range []string{"user.", "trusted.", "security."} {
		if strings.HasPrefix(attr, ns) {
			return true
		}
	}
	return attr == aclAccess || attr == aclDefault
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !xattrNamespace(attr) {
		return 0, syscall.EOPNOTSUPP
	}
	v, err := n.fsys.tree.GetXattr(meta(ctx), n.ino(), attr)
	if err != nil {
		return 0, n.errno("getxattr", err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	if len(attr) > 255 {
		return syscall.ERANGE
	}
	if !xattrNamespace(attr) {
		return syscall.EOPNOTSUPP
	}
	if len(data) > maxXattrValue {
		return syscall.E2BIG
	}
	if attr == aclAccess {
		return n.setAccessACL(meta(ctx), data)
	}
	if err := n.fsys.tree.SetXattr(meta(ctx), n.ino(), attr, append([]byte(nil), data...), flags); err != nil {
		return n.errno("setxattr", err)
	}
	if attr == xattrCapability {
		// The next write must drop it again (killPrivs).
		if st := n.fsys.existing(n.ino()); st != nil {
			st.mu.Lock()
			st.capChecked = false
			st.mu.Unlock()
		}
	}
	return 0
}

// setAccessACL sets the access ACL and the mode from it, as Linux does: an
// ACL that says no more than the mode is not kept (posix_acl_update_mode).
// The kernel ignores XATTR_CREATE and XATTR_REPLACE for ACLs.
func (n *node) setAccessACL(ctx context.Context, data []byte) syscall.Errno {
	a, err := parseACL(data)
	if err != nil {
		return syscall.EINVAL
	}
	_, err = n.fsys.tree.SetAttrXattr(ctx, n.ino(), aclAccess, func(in *peerdrive.Inode, _ []byte, _ bool) ([]byte, bool, error) {
		mode, equiv := a.equivMode(in.Mode)
		in.Mode = mode
		in.Ctime = tree.Now()
		if equiv || len(a) == 0 {
			return nil, false, nil
		}
		return append([]byte(nil), data...), true, nil
	})
	if err != nil {
		return n.errno("setxattr", err)
	}
	return 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	if !xattrNamespace(attr) {
		return syscall.EOPNOTSUPP
	}
	err := n.fsys.tree.RemoveXattr(meta(ctx), n.ino(), attr)
	if errors.Is(err, tree.ErrNoData) && (attr == aclAccess || attr == aclDefault) {
		return 0 // removing an ACL that is not there succeeds, as on ext4 and tmpfs
	}
	if err != nil {
		return n.errno("removexattr", err)
	}
	return 0
}

// Listxattr lists the attribute names. Linux shows trusted.* names only to
// a caller with CAP_SYS_ADMIN (ext4 and tmpfs filter them in their list
// handlers); the kernel passes listxattr(2) to FUSE as it is, so the
// filtering is ours. Reading them is already refused by the kernel.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.fsys.tree.ListXattr(meta(ctx), n.ino())
	if err != nil {
		return 0, n.errno("listxattr", err)
	}
	if slices.ContainsFunc(names, isTrusted) && !sysAdmin(ctx) {
		names = slices.DeleteFunc(names, isTrusted)
	}
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	b := dest[:0]
	for _, s := range names {
		b = append(b, s...)
		b = append(b, 0)
	}
	return uint32(size), 0
}

func isTrusted(name string) bool { return strings.HasPrefix(name, "trusted.") }

// capSysAdmin is CAP_SYS_ADMIN's bit in a capability set.
const capSysAdmin = 1 << 21

// sysAdmin reports whether the caller of the request of ctx has
// CAP_SYS_ADMIN in its effective set, read from /proc as FUSE does not
// carry it. The caller is blocked in the system call while we answer, so
// its thread ID names it. If its status cannot be read, root counts as
// privileged, as without capabilities dropped.
func sysAdmin(ctx context.Context) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	if c.Pid != 0 {
		if b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(c.Pid), 10) + "/status"); err == nil {
			for line := range strings.Lines(string(b)) {
				if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
					caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
					if err == nil {
						return caps&capSysAdmin != 0
					}
				}
			}
		}
	}
	return c.Uid == 0
}

// fallocate modes (linux/falloc.h).
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

// Allocate supports plain preallocation (which extends the size: space is
// not reserved, since chunks are written when data is), KEEP_SIZE, and
// punching or zeroing ranges.
func (n *node) Allocate(ctx context.Context, fh gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	ctx = meta(ctx)
	ino := n.ino()
	in, err := n.fsys.tree.Inode(ctx, ino)
	if err != nil {
		return n.errno("fallocate", err)
	}
	end := off + size
	switch mode &^ fallocKeepSize {
	case 0, fallocPunchHole, fallocZeroRange:
		// Like any change of the data by an unprivileged caller (see
		// killPrivs), it clears set-user-ID; the kernel does not flag
		// fallocate, so a caller other than root counts as unprivileged.
		if c, ok := fuse.FromContext(ctx); ok && c.Uid != 0 && in.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
			n.fsys.killSuidSgidOf(ino)
		}
	}
	switch mode &^ fallocKeepSize {
	case 0:
		if mode&fallocKeepSize != 0 || end <= in.Size {
			// Nothing to write, but ext4 and tmpfs still mark the file
			// modified, as for any fallocate that succeeds.
			n.fsys.modified(ino)
			return 0
		}
		if err := n.fsys.checkQuota(int64(end - in.Size)); err != nil {
			return n.errno("fallocate", err)
		}
		if _, err := n.fsys.truncate(ctx, ino, end); err != nil {
			return n.errno("fallocate", err)
		}
		return 0
	case fallocPunchHole, fallocZeroRange:
		if mode == fallocPunchHole { // punching requires KEEP_SIZE
			return syscall.EOPNOTSUPP
		}
		changed := false
		if off < in.Size {
			if err := n.fsys.zeroRange(ctx, ino, off, min(end, in.Size)); err != nil {
				return n.errno("fallocate", err)
			}
			changed = true
		}
		if mode&fallocKeepSize == 0 && end > in.Size {
			if _, err := n.fsys.truncate(ctx, ino, end); err != nil {
				return n.errno("fallocate", err)
			}
			changed = true
		}
		if !changed {
			n.fsys.modified(ino) // a range past the end: times only, as on ext4
		}
		return 0
	}
	return syscall.EOPNOTSUPP
}

const (
	seekData = 3
	seekHole = 4
)

// Lseek answers SEEK_DATA and SEEK_HOLE at chunk granularity: a chunk that
// was never written, or was all zeros, is a hole.
func (n *node) Lseek(ctx context.Context, fh gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	ctx = meta(ctx)
	ino := n.ino()
	if st := n.fsys.existing(ino); st != nil {
		if err := n.fsys.flushFile(ctx, st); err != nil {
			return 0, n.errno("lseek", err)
		}
	}
	in, err := n.fsys.tree.Inode(ctx, ino)
	if err != nil {
		return 0, n.errno("lseek", err)
	}
	if off >= in.Size {
		return 0, syscall.ENXIO
	}
	idxs, refs, err := n.fsys.tree.ChunkRefs(ctx, ino, int64(off/chunkSize))
	if err != nil {
		return 0, n.errno("lseek", err)
	}
	switch whence {
	case seekData:
		for i, idx := range idxs {
			start := uint64(idx) * chunkSize
			if end := start + uint64(refs[i].Len); end > off {
				return max(start, off), 0
			}
		}
		return 0, syscall.ENXIO
	case seekHole:
		pos := off
		for i, idx := range idxs {
			start := uint64(idx) * chunkSize
			if start > pos {
				break // a gap before this chunk
			}
			end := start + uint64(refs[i].Len)
			if end < start+chunkSize && end > pos {
				pos = end
				break
			}
			pos = max(pos, end)
		}
		return min(pos, in.Size), 0
	}
	return 0, syscall.EINVAL
}
