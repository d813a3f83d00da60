package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/tree"
)

// node is one inode of the drive as go-fuse sees it. It carries no state:
// attributes live in the tree, unsealed data in the FS's fileStates.
type node struct {
	gofs.Inode
	fsys *FS
}

var (
	_ gofs.NodeGetattrer     = (*node)(nil)
	_ gofs.NodeStatxer       = (*node)(nil)
	_ gofs.NodeSetattrer     = (*node)(nil)
	_ gofs.NodeLookuper      = (*node)(nil)
	_ gofs.NodeReaddirer     = (*node)(nil)
	_ gofs.NodeCreater       = (*node)(nil)
	_ gofs.NodeMkdirer       = (*node)(nil)
	_ gofs.NodeMknoder       = (*node)(nil)
	_ gofs.NodeSymlinker     = (*node)(nil)
	_ gofs.NodeReadlinker    = (*node)(nil)
	_ gofs.NodeLinker        = (*node)(nil)
	_ gofs.NodeUnlinker      = (*node)(nil)
	_ gofs.NodeRmdirer       = (*node)(nil)
	_ gofs.NodeRenamer       = (*node)(nil)
	_ gofs.NodeOpener        = (*node)(nil)
	_ gofs.NodeReader        = (*node)(nil)
	_ gofs.NodeWriter        = (*node)(nil)
	_ gofs.NodeFlusher       = (*node)(nil)
	_ gofs.NodeFsyncer       = (*node)(nil)
	_ gofs.NodeReleaser      = (*node)(nil)
	_ gofs.NodeAllocater     = (*node)(nil)
	_ gofs.NodeLseeker       = (*node)(nil)
	_ gofs.NodeStatfser      = (*node)(nil)
	_ gofs.NodeGetxattrer    = (*node)(nil)
	_ gofs.NodeSetxattrer    = (*node)(nil)
	_ gofs.NodeRemovexattrer = (*node)(nil)
	_ gofs.NodeListxattrer   = (*node)(nil)
	_ gofs.NodeOnForgetter   = (*node)(nil)
	_ gofs.NodeTmpfiler      = (*node)(nil)
)

func (n *node) ino() peerdrive.Ino { return peerdrive.Ino(n.StableAttr().Ino) }

// meta returns a context for operations that do not wait long: metadata,
// and file data in the local store. They are not cancelled: a FUSE
// interrupt can come from any signal (even the Go runtime's SIGURG in the
// caller), and local filesystems never fail mkdir or unlink with EINTR, nor
// cut a read or write of a regular file short. Only long waits (fetching
// chunks from peers, waiting for cache space) honour the request's ctx.
func meta(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// errno maps err to an errno; a logged failure names the inode and its
// path, and args add to that.
func (n *node) errno(op string, err error, args ...any) syscall.Errno {
	if err == nil {
		return 0
	}
	return toErrno(n.fsys.log, op, err, append([]any{"ino", n.ino(), "path", nodePath{n}}, args...)...)
}

// nodePath logs the path of a node (relative to the mount), computed only
// if the record is written.
type nodePath struct{ n *node }

func (p nodePath) LogValue() slog.Value { return slog.StringValue(p.n.Path(nil)) }

func (n *node) roErr() syscall.Errno {
	if n.fsys.opts.ReadOnly {
		return syscall.EROFS
	}
	return 0
}

// accessed sets the access time after a read, a listing or a readlink,
// under Linux's relatime rule (the default mount option): only if the
// access time is not later than the modification or change time, or is a
// day old. The kernel serves reads from its cache without asking, so a
// file read again from the cache keeps its access time, as with any FUSE
// filesystem.
func (n *node) accessed() {
	if n.fsys.opts.ReadOnly {
		return
	}
	now := tree.Now()
	updated := false
	_, err := n.fsys.tree.Touch(n.ino(), func(in *peerdrive.Inode) bool {
		updated = in.Atime <= in.Mtime || in.Atime <= in.Ctime || now-in.Atime >= int64(24*time.Hour)
		if updated {
			in.Atime = now
		}
		return updated
	})
	if err == nil && updated {
		// The kernel keeps attributes for seconds: make it ask again.
		// An offset of -1 drops only the attributes, no cached pages.
		go n.NotifyContent(-1, 0)
	}
}

// fillAttr fills a with ino's attributes. st_blocks counts the 512-byte
// units of data the file holds, rounded up to 4 KiB as on ext4, holes not
// counted: cp, tar and du tell sparse files by it. Data not committed yet
// counts as it will once committed (the kernel keeps attributes for
// seconds); a file whose count is unknown (written before the count was
// kept), or is busy being synced, gets its size.
func (f *FS) fillAttr(ino peerdrive.Ino, in *peerdrive.Inode, a *fuse.Attr) {
	a.Ino = uint64(ino)
	a.Size = in.Size
	a.Blocks = (in.Size + 511) / 512
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		a.Blocks = 0 // its size counts entries (tree.grewDir), as on tmpfs
	}
	if in.Mode&syscall.S_IFMT == syscall.S_IFREG && in.Alloc > 0 {
		if n, busy := f.buffered(ino); !busy {
			data := min(in.Alloc-1+uint64(n), in.Size) // an overwrite counts twice
			a.Blocks = (data + 4095) / 4096 * 8
		}
	}
	a.Mode = in.Mode
	a.Nlink = in.Nlink
	a.Uid, a.Gid = in.UID, in.GID
	a.Rdev = in.Rdev
	a.Blksize = 1 << 20 // fewer, larger FUSE requests from cp and friends
	a.Atime, a.Atimensec = splitNanos(in.Atime)
	a.Mtime, a.Mtimensec = splitNanos(in.Mtime)
	a.Ctime, a.Ctimensec = splitNanos(in.Ctime)
}

// splitNanos splits nanoseconds since the epoch into seconds and
// nanoseconds as FUSE carries them: the seconds are a two's complement
// int64 (before 1970 they are negative), the nanoseconds always in
// [0, 1e9).
func splitNanos(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return uint64(sec), uint32(nsec)
}

// nanos is the inverse of splitNanos for a time given by the kernel. Times
// outside what an int64 of nanoseconds holds (years 1678 to 2262) are
// clamped, as Linux clamps times to what a filesystem can store.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.fsys.tree.Inode(meta(ctx), n.ino())
	if err != nil {
		return n.errno("getattr", err)
	}
	n.fsys.fillAttr(n.ino(), &in, &out.Attr)
	return 0
}

// Statx answers a statx(2) that asks for the birth time, which ext4 and
// tmpfs report and the tree keeps (the kernel sends the other stat calls
// as GETATTR). The other fields are Getattr's, all of them, so that the
// kernel may cache them as it does GETATTR's.
func (n *node) Statx(ctx context.Context, fh gofs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	in, err := n.fsys.tree.Inode(meta(ctx), n.ino())
	if err != nil {
		return n.errno("statx", err)
	}
	var a fuse.Attr
	n.fsys.fillAttr(n.ino(), &in, &a)
	sx := &out.Statx
	sx.Mask = unix.STATX_BASIC_STATS
	sx.Blksize = a.Blksize
	sx.Nlink = a.Nlink
	sx.Uid, sx.Gid = a.Uid, a.Gid
	sx.Mode = uint16(a.Mode)
	sx.Ino = a.Ino
	sx.Size = a.Size
	sx.Blocks = a.Blocks
	sx.Atime = fuse.SxTime{Sec: a.Atime, Nsec: a.Atimensec}
	sx.Mtime = fuse.SxTime{Sec: a.Mtime, Nsec: a.Mtimensec}
	sx.Ctime = fuse.SxTime{Sec: a.Ctime, Nsec: a.Ctimensec}
	if in.Btime != 0 { // an inode made before the tree kept it has none
		sx.Mask |= unix.STATX_BTIME
		sx.Btime.Sec, sx.Btime.Nsec = splitNanos(in.Btime)
	}
	// FUSE carries a GETATTR's rdev in the kernel's 32-bit encoding, which
	// the 64-bit split below reads alike.
	sx.RdevMajor, sx.RdevMinor = unix.Major(uint64(a.Rdev)), unix.Minor(uint64(a.Rdev))
	return 0
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, sa *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	ctx = meta(ctx)
	ino := n.ino()
	if size, ok := sa.GetSize(); ok {
		in, err := n.fsys.tree.Inode(ctx, ino)
		if err != nil {
			return n.errno("truncate", err)
		}
		if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return syscall.EISDIR
		}
		// Growing a file makes a hole, which takes no room: no quota
		// check (a sparse file may be larger than the drive, as on ext4).
		if _, err := n.fsys.truncate(ctx, ino, size); err != nil {
			return n.errno("truncate", err)
		}
	}
	// chown(2) with both IDs -1 changes only the ctime; without a
	// writeback cache the kernel does not send it, and the request comes
	// empty. Nothing else sends a request with no more than a ctime
	// (utimensat with both times UTIME_OMIT returns before it), so such a
	// request is that chown, which clears set-ID bits as any chown does.
	const others = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_SIZE | fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_KILL_SUIDGID
	touchCtime := sa.Valid&(others|fuse.FATTR_CTIME) == 0
	_, uidSet := sa.GetUID()
	_, gidSet := sa.GetGID()
	chown := uidSet || gidSet || sa.Valid&others == 0
	set := func(in *peerdrive.Inode) error {
		changed := false
		if m, ok := sa.GetMode(); ok {
			in.Mode = in.Mode&syscall.S_IFMT | m&07777
			changed = true
		}
		if uid, ok := sa.GetUID(); ok {
			in.UID = uid
			changed = true
		}
		if gid, ok := sa.GetGID(); ok {
			in.GID = gid
			changed = true
		}
		if t, ok := sa.GetATime(); ok {
			in.Atime = nanos(t)
			changed = true
		}
		if t, ok := sa.GetMTime(); ok {
			in.Mtime = nanos(t)
			changed = true
		}
		if changed || touchCtime {
			in.Ctime = tree.Now()
		}
		// HANDLE_KILLPRIV_V2 (see killPrivs): a truncate by a caller
		// without CAP_FSETID, and any chown of a non-directory, clear
		// set-user-ID and set-group-ID, unless the request sets the mode.
		if _, chmod := sa.GetMode(); !chmod && (sa.Valid&fuse.FATTR_KILL_SUIDGID != 0 || chown && in.Mode&syscall.S_IFMT != syscall.S_IFDIR) {
			killSuidSgid(in)
		}
		if t, ok := sa.GetCTime(); ok {
			in.Ctime = nanos(t)
		}
		return nil
	}
	var in peerdrive.Inode
	var err error
	if m, ok := sa.GetMode(); ok {
		// The access ACL mirrors the mode: chmod changes both.
		in, err = n.fsys.tree.SetAttrXattr(ctx, ino, aclAccess, func(in *peerdrive.Inode, v []byte, has bool) ([]byte, bool, error) {
			if err := set(in); err != nil || !has {
				return nil, false, err
			}
			a, err := parseACL(v)
			if err != nil {
				return nil, false, fmt.Errorf("access ACL: %w", wrapCorrupt(err))
			}
			a.chmod(m)
			return a.bytes(), true, nil
		})
	} else {
		in, err = n.fsys.tree.SetAttr(ctx, ino, set)
	}
	if err != nil {
		return n.errno("setattr", err)
	}
	if chown || sa.Valid&fuse.FATTR_SIZE != 0 {
		n.fsys.dropCapability(ctx, ino)
	}
	n.fsys.fillAttr(ino, &in, &out.Attr)
	return 0
}

// child makes (or finds) the go-fuse inode of ino and fills out.
func (n *node) child(ctx context.Context, ino peerdrive.Ino, in *peerdrive.Inode, out *fuse.EntryOut) *gofs.Inode {
	n.fsys.fillAttr(ino, in, &out.Attr)
	return n.NewInode(ctx, &node{fsys: n.fsys}, gofs.StableAttr{Mode: in.Mode & syscall.S_IFMT, Ino: uint64(ino), Gen: 1})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	ctx = meta(ctx)
	d, err := n.fsys.tree.Lookup(ctx, n.ino(), name)
	if err != nil {
		return nil, n.errno("lookup", err)
	}
	in, err := n.fsys.tree.Inode(ctx, d.Ino)
	if err != nil {
		// A name whose inode is gone is damage, not absence.
		return nil, n.errno("lookup", corrupt(err))
	}
	return n.child(ctx, d.Ino, &in, out), 0
}

func corrupt(err error) error {
	if err != nil && errorsIs(err, tree.ErrNotFound) {
		return wrapCorrupt(err)
	}
	return err
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := n.fsys.tree.ReadDir(meta(ctx), n.ino())
	if err != nil {
		return nil, n.errno("readdir", err)
	}
	n.accessed()
	parent := uint64(peerdrive.RootIno)
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	list := make([]fuse.DirEntry, 0, len(ents)+2)
	list = append(list,
		fuse.DirEntry{Name: ".", Ino: uint64(n.ino()), Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
	for _, d := range ents {
		list = append(list, fuse.DirEntry{Name: d.Name, Ino: uint64(d.Ino), Mode: d.Mode})
	}
	return gofs.NewListDirStream(list), 0
}

// newInode fills the owner and mode of a node made by the caller in dir n,
// with the setgid directory rule of Linux, and returns the POSIX ACLs it
// inherits (see acl.go). umask is the caller's.
func (n *node) newInode(ctx context.Context, mode, umask uint32) (peerdrive.Inode, []peerdrive.Xattr, error) {
	in := peerdrive.Inode{Mode: mode}
	if c, ok := fuse.FromContext(ctx); ok {
		in.UID, in.GID = c.Uid, c.Gid
	}
	p, err := n.fsys.tree.Inode(ctx, n.ino())
	if err != nil {
		return in, nil, err
	}
	if p.Mode&syscall.S_ISGID != 0 {
		in.GID = p.GID
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			in.Mode |= syscall.S_ISGID
		}
	}
	def, err := n.fsys.tree.GetXattr(ctx, n.ino(), aclDefault)
	if errors.Is(err, tree.ErrNoData) {
		def, err = nil, nil
	}
	if err != nil {
		return in, nil, err
	}
	var xs []peerdrive.Xattr
	in.Mode, xs, err = createACLs(in.Mode, umask, def)
	return in, xs, err
}

func (n *node) mknode(ctx context.Context, name string, mode uint32, fill func(*peerdrive.Inode), out *fuse.EntryOut) (*gofs.Inode, peerdrive.Ino, syscall.Errno) {
	if e := n.roErr(); e != 0 {
		return nil, 0, e
	}
	if len(name) > maxName {
		return nil, 0, syscall.ENAMETOOLONG
	}
	ctx2 := meta(ctx)
	in, xs, err := n.newInode(ctx2, mode, n.fsys.umask(ctx))
	if err != nil {
		return nil, 0, n.errno("create", err)
	}
	if fill != nil {
		fill(&in)
	}
	ino, in, err := n.fsys.tree.Mknode(ctx2, n.ino(), name, in, xs...)
	if err != nil {
		return nil, 0, n.errno("create", err)
	}
	return n.child(ctx, ino, &in, out), ino, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ch, ino, e := n.mknode(ctx, name, syscall.S_IFREG|mode&07777, nil, out)
	if e != 0 {
		return nil, nil, 0, e
	}
	w := writable(flags)
	n.fsys.open(ino, w)
	return ch, &handle{write: w}, openFlags(flags), 0
}

// writable reports whether an open with flags may write.
func writable(flags uint32) bool { return flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 }

// openFlags are the FOPEN flags of an open with flags. A file opened
// write-only skips the kernel's page cache (FOPEN_DIRECT_IO): without it,
// the kernel copies every write into the page cache before it copies it
// again to the daemon, which costs a sequential writer as much CPU as the
// rest of its write path in the kernel. Such a descriptor cannot be read or
// mapped, and the kernel drops the cached pages a direct write overwrites,
// so readers through other descriptors see the new bytes.
func openFlags(flags uint32) uint32 {
	if flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_DIRECT_IO
	}
	return fuse.FOPEN_KEEP_CACHE
}

// Tmpfile creates a file without a name, for open(2) with O_TMPFILE. It is
// purged once closed and forgotten, unless linked into place first.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if e := n.roErr(); e != 0 {
		return nil, nil, 0, e
	}
	ctx2 := meta(ctx)
	in, xs, err := n.newInode(ctx2, syscall.S_IFREG|mode&07777, n.fsys.umask(ctx))
	if err != nil {
		return nil, nil, 0, n.errno("tmpfile", err)
	}
	ino, in, err := n.fsys.tree.MkTemp(ctx2, n.ino(), in, xs...)
	if err != nil {
		return nil, nil, 0, n.errno("tmpfile", err)
	}
	n.fsys.open(ino, true)
	n.fsys.dropped(ctx2, ino, true)
	n.fsys.fillAttr(ino, &in, &out.Attr)
	ch := n.NewInode(ctx, &node{fsys: n.fsys}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: uint64(ino), Gen: 1})
	return ch, &handle{write: true}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ch, _, e := n.mknode(ctx, name, syscall.S_IFDIR|mode&07777, nil, out)
	return ch, e
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ch, _, e := n.mknode(ctx, name, mode, func(in *peerdrive.Inode) { in.Rdev = dev }, out)
	return ch, e
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(target) > 4095 {
		return nil, syscall.ENAMETOOLONG
	}
	ch, _, e := n.mknode(ctx, name, syscall.S_IFLNK|0o777, func(in *peerdrive.Inode) {
		in.Target = target
		in.Size = uint64(len(target))
	}, out)
	return ch, e
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in, err := n.fsys.tree.Inode(meta(ctx), n.ino())
	if err != nil {
		return nil, n.errno("readlink", err)
	}
	if in.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	// readlink(2) and following the link in a path both touch the access
	// time on Linux; FUSE inodes are S_NOATIME, so the kernel leaves it to us.
	n.accessed()
	return []byte(in.Target), 0
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.roErr(); e != 0 {
		return nil, e
	}
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	ino := peerdrive.Ino(target.EmbeddedInode().StableAttr().Ino)
	in, err := n.fsys.tree.Link(meta(ctx), n.ino(), name, ino)
	if err != nil {
		return nil, n.errno("link", err)
	}
	n.fsys.relinked(ino)
	return n.child(ctx, ino, &in, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	ctx = meta(ctx)
	known := n.GetChild(name) != nil // go-fuse drops the child after we return
	ino, in, err := n.fsys.tree.Unlink(ctx, n.ino(), name)
	if err != nil {
		return n.errno("unlink", err)
	}
	if in.Nlink == 0 {
		n.fsys.dropped(ctx, ino, known)
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	ctx = meta(ctx)
	known := n.GetChild(name) != nil
	ino, err := n.fsys.tree.Rmdir(ctx, n.ino(), name)
	if err != nil {
		return n.errno("rmdir", err)
	}
	n.fsys.dropped(ctx, ino, known)
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.roErr(); e != 0 {
		return e
	}
	if len(newName) > maxName {
		return syscall.ENAMETOOLONG
	}
	ctx2 := meta(ctx)
	var tf uint32
	if flags&^(gofs.RENAME_EXCHANGE|renameNoReplace|renameWhiteout) != 0 {
		return syscall.EINVAL
	}
	if flags&renameNoReplace != 0 {
		tf |= tree.RenameNoReplace
	}
	if flags&gofs.RENAME_EXCHANGE != 0 {
		tf |= tree.RenameExchange
	}
	p2 := newParent.EmbeddedInode()
	dir2 := peerdrive.Ino(p2.StableAttr().Ino)
	known := p2.GetChild(newName) != nil
	var replaced peerdrive.Ino
	var rin peerdrive.Inode
	var err error
	if flags&renameWhiteout != 0 {
		// The kernel checked CAP_MKNOD and refuses it with EXCHANGE. The
		// whiteout is made as mknod would make it (owner, set-group-ID
		// directory, default ACL), mode 0.
		wh, xs, werr := n.newInode(ctx2, syscall.S_IFCHR, 0)
		if werr != nil {
			return n.errno("rename", werr)
		}
		replaced, rin, _, err = n.fsys.tree.RenameWhiteout(ctx2, n.ino(), name, dir2, newName, tf, wh, xs...)
	} else {
		replaced, rin, err = n.fsys.tree.Rename(ctx2, n.ino(), name, dir2, newName, tf)
	}
	if err != nil {
		return n.errno("rename", err)
	}
	if replaced != 0 && rin.Nlink == 0 {
		n.fsys.dropped(ctx, replaced, known)
	}
	return 0
}

// renameat2(2) flags go-fuse does not name.
const (
	renameNoReplace = 1 // RENAME_NOREPLACE
	renameWhiteout  = 4 // RENAME_WHITEOUT
)

// handle is an open file. The node does the work; the handle only exists so
// that every open is paired with a release, and says whether it may write.
type handle struct{ write bool }

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	w := writable(flags)
	if w {
		if e := n.roErr(); e != 0 {
			return nil, 0, e
		}
	}
	n.fsys.open(n.ino(), w)
	return &handle{write: w}, openFlags(flags), 0
}

func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	c, err := n.fsys.read(ctx, n.ino(), dest, off)
	if err != nil {
		return nil, n.errno("read", err, "off", off)
	}
	n.accessed()
	// A small read (the kernel's read-ahead asks for a megabyte at a time
	// when reading on) of a chunk it does not cover: keep the whole chunk,
	// just decrypted, in the kernel's page cache.
	if c > 0 && len(dest) <= pushReadMax {
		idx := off / chunkSize
		if off > idx*chunkSize || off+int64(c) < (idx+1)*chunkSize && c == len(dest) {
			n.fsys.pushChunk(n, n.ino(), idx)
		}
	}
	return fuse.ReadResultData(dest[:c]), 0
}

// pushReadMax is the largest read that makes pushChunk keep its chunk.
const pushReadMax = 64 << 10

func (n *node) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	c, err := n.fsys.write(ctx, n.ino(), data, off)
	if err != nil && c == 0 {
		return 0, n.errno("write", err, "off", off)
	}
	n.fsys.killPrivs(ctx, n.ino())
	return uint32(c), 0
}

// Flush answers ENOSYS, and the kernel stops sending FLUSH on close(2):
// a close then costs no round trip to the daemon (creating a small file
// takes 6 requests, not 7). The work of a close is done at RELEASE,
// which the kernel sends without waiting when the last descriptor of an
// open file goes (release hands the file's last chunk to the sealers). As
// on ext4, close(2) does not report an error of a commit in the
// background; the data stays buffered, is retried, and fsync(2) reports
// the error if it persists.
func (n *node) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

func (n *node) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	ctx = meta(ctx)
	if st := n.fsys.existing(n.ino()); st != nil {
		if err := n.fsys.fsyncFile(ctx, st); err != nil {
			return n.errno("fsync", err)
		}
	}
	if err := n.fsys.tree.Sync(ctx); err != nil {
		return n.errno("fsync", err)
	}
	return 0
}

func (n *node) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	if _, ok := fh.(*handle); !ok {
		return 0 // a directory handle
	}
	if err := n.fsys.release(meta(ctx), n.ino(), fh.(*handle).write); err != nil {
		return n.errno("release", err)
	}
	return 0
}

// OnForget is called when the kernel has forgotten the inode.
func (n *node) OnForget() { n.fsys.forgotten(n.ino()) }

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.fsys.statfs(out)
}
