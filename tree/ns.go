package tree

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

// Lookup finds name in dir.
func (t *Tree) Lookup(ctx context.Context, dir peerdrive.Ino, name string) (peerdrive.Dirent, error) {
	if err := ctx.Err(); err != nil {
		return peerdrive.Dirent{}, err
	}
	var d peerdrive.Dirent
	err := t.db.View(func(tx *store.Txn) error { return t.lookup(tx, dir, name, &d) })
	return d, err
}

func (t *Tree) lookup(tx *store.Txn, dir peerdrive.Ino, name string, d *peerdrive.Dirent) error {
	err := t.getRecord(tx, t.direntKey(dir, name), d)
	if err == nil && d.Name != name {
		return fmt.Errorf("dirent %q in %d holds %q: %w", name, dir, d.Name, ErrCorrupt)
	}
	return err
}

func (t *Tree) putDirent(tx *store.Txn, dir peerdrive.Ino, d peerdrive.Dirent) error {
	return t.putRecord(tx, t.direntKey(dir, d.Name), &d)
}

// ReadDir lists dir (without "." and "..") in a stable order.
func (t *Tree) ReadDir(ctx context.Context, dir peerdrive.Ino) ([]peerdrive.Dirent, error) {
	var out []peerdrive.Dirent
	prefix := inoKey(tagDirent, dir)
	err := t.db.View(func(tx *store.Txn) error {
		return tx.Iterate(prefix, nil, true, func(k, v []byte) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			var d peerdrive.Dirent
			if err := t.openRecordInto(k, v, &d); err != nil {
				return false, err
			}
			out = append(out, d)
			return true, nil
		})
	})
	return out, err
}

func (t *Tree) isEmpty(tx *store.Txn, dir peerdrive.Ino) (bool, error) {
	empty := true
	err := tx.Iterate(inoKey(tagDirent, dir), nil, false, func(k, v []byte) (bool, error) {
		empty = false
		return false, nil
	})
	return empty, err
}

// Mknode creates name in dir with the attributes in (Mode, UID, GID, Rdev,
// Target) and the extended attributes xattrs; it sets the link count and
// times. For a directory it also counts the new ".." link in dir.
func (t *Tree) Mknode(ctx context.Context, dir peerdrive.Ino, name string, in peerdrive.Inode, xattrs ...peerdrive.Xattr) (peerdrive.Ino, peerdrive.Inode, error) {
	var ino peerdrive.Ino
	// A new file's records are staged: they go to the store with the next
	// commit, which for a file written at once is its data's. A directory
	// commits at once (its parent's link count changes with it).
	write := t.update
	if !isDir(in.Mode) {
		write = t.stageIfRoom()
	}
	err := write(ctx, 1024+xattrBytes(xattrs), func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		pe, err := t.load(dir)
		if err != nil {
			return err
		}
		if !isDir(pe.ino.Mode) {
			return ErrNotDir
		}
		var p *peerdrive.Inode
		if isDir(in.Mode) {
			// The parent's link count changes: it is written with the entry.
			if p, err = t.mod(touched, dir); err != nil {
				return err
			}
		} else {
			// Only the parent's times change: they are written by the next
			// Flush or change of the parent, not by every create (after a
			// crash, the directory's times may be older than its entries).
			if t.snap != nil {
				t.snap(dir)
			}
			p = &pe.ino
			t.markDirty(dir, pe)
		}
		var old peerdrive.Dirent
		switch err := t.lookup(tx, dir, name, &old); {
		case err == nil:
			return ErrExist
		case !errors.Is(err, ErrNotFound):
			return err
		}
		now := Now()
		in.Atime, in.Mtime, in.Ctime, in.Btime = now, now, now, now
		in.Nlink = 1
		if in.Mode&syscall.S_IFMT == syscall.S_IFREG {
			in.Alloc = 1 // no data yet
		}
		if isDir(in.Mode) {
			in.Nlink = 2
			in.Size = emptyDirSize
			p.Nlink++
		}
		p.Mtime, p.Ctime = now, now
		grewDir(p)
		ino, err = t.newEntry(tx, touched, dir, name, in, xattrs)
		return err
	})
	return ino, in, err
}

// A directory's size is reported as tmpfs reports it: 40 bytes empty
// (BOGO_DIRENT_SIZE for "." and ".."), 20 more per entry. Programs that
// size buffers from st_size, or take a size of 0 for an empty directory
// nobody could have made on Linux, see what they expect. Directories made
// before sizes were kept start from 0, and count from 40 at their first
// change; the figure is never negative nor below 40 after a change.
const (
	direntSize   = 20
	emptyDirSize = 2 * direntSize
)

// grewDir counts a new entry in directory p's size.
func grewDir(p *peerdrive.Inode) { p.Size = max(p.Size, emptyDirSize) + direntSize }

// shrankDir counts a removed entry in directory p's size.
func shrankDir(p *peerdrive.Inode) { p.Size = max(p.Size, emptyDirSize+direntSize) - direntSize }

// newEntry gives in, a new inode with its times and link count set, a
// number and the name name in dir, with the extended attributes xattrs.
func (t *Tree) newEntry(tx *store.Txn, touched map[peerdrive.Ino]bool, dir peerdrive.Ino, name string, in peerdrive.Inode, xattrs []peerdrive.Xattr) (peerdrive.Ino, error) {
	ino := t.allocIno()
	t.cache[ino] = &entry{ino: in, noXattrs: len(xattrs) == 0, noChunks: true}
	touched[ino] = true
	t.stats.Inodes++
	if err := t.putXattrs(tx, ino, xattrs); err != nil {
		return ino, err
	}
	return ino, t.putDirent(tx, dir, peerdrive.Dirent{Name: name, Ino: ino, Mode: in.Mode & syscall.S_IFMT})
}

func xattrBytes(xs []peerdrive.Xattr) int64 {
	var n int64
	for _, x := range xs {
		n += int64(len(x.Name)+len(x.Value)) + 64
	}
	return n
}

func (t *Tree) putXattrs(tx *store.Txn, ino peerdrive.Ino, xs []peerdrive.Xattr) error {
	for _, x := range xs {
		if err := t.putRecord(tx, t.xattrKey(ino, x.Name), &x); err != nil {
			return err
		}
	}
	return nil
}

// MkTemp creates a file with no name (open(2) with O_TMPFILE) for dir, with
// the attributes in (Mode, UID, GID) and the extended attributes xattrs. It
// has no links: it is an orphan, to be purged by the caller unless Link
// gives it a name.
func (t *Tree) MkTemp(ctx context.Context, dir peerdrive.Ino, in peerdrive.Inode, xattrs ...peerdrive.Xattr) (peerdrive.Ino, peerdrive.Inode, error) {
	var ino peerdrive.Ino
	err := t.update(ctx, 512+xattrBytes(xattrs), func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		p, err := t.load(dir)
		if err != nil {
			return err
		}
		if !isDir(p.ino.Mode) {
			return ErrNotDir
		}
		if isDir(in.Mode) {
			return ErrInvalid
		}
		now := Now()
		in.Atime, in.Mtime, in.Ctime, in.Btime = now, now, now, now
		in.Nlink = 0
		if in.Mode&syscall.S_IFMT == syscall.S_IFREG {
			in.Alloc = 1 // no data yet
		}
		ino = t.allocIno()
		t.cache[ino] = &entry{ino: in, noXattrs: len(xattrs) == 0, noChunks: true}
		touched[ino] = true
		t.stats.Inodes++
		if err := t.putXattrs(tx, ino, xattrs); err != nil {
			return err
		}
		return tx.Set(inoKey(tagOrphan, ino), nil)
	})
	return ino, in, err
}

// Link adds name in dir for the existing non-directory ino. An inode without
// links gets its first one back: the kernel allows that only for files made
// by MkTemp.
func (t *Tree) Link(ctx context.Context, dir peerdrive.Ino, name string, ino peerdrive.Ino) (peerdrive.Inode, error) {
	var out peerdrive.Inode
	err := t.update(ctx, 512, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		p, err := t.mod(touched, dir)
		if err != nil {
			return err
		}
		c, err := t.mod(touched, ino)
		if err != nil {
			return err
		}
		if isDir(c.Mode) {
			return ErrIsDir
		}
		var old peerdrive.Dirent
		switch err := t.lookup(tx, dir, name, &old); {
		case err == nil:
			return ErrExist
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if c.Nlink == 0 {
			if err := tx.Delete(inoKey(tagOrphan, ino)); err != nil {
				return err
			}
		}
		now := Now()
		c.Nlink++
		c.Ctime = now
		p.Mtime, p.Ctime = now, now
		grewDir(p)
		out = *c
		return t.putDirent(tx, dir, peerdrive.Dirent{Name: name, Ino: ino, Mode: c.Mode & syscall.S_IFMT})
	})
	return out, err
}

// Unlink removes name (not a directory) from dir and returns the inode it
// named, with its new link count. At zero links the inode becomes an orphan:
// the caller purges it once no open file uses it.
func (t *Tree) Unlink(ctx context.Context, dir peerdrive.Ino, name string) (peerdrive.Ino, peerdrive.Inode, error) {
	var ino peerdrive.Ino
	var out peerdrive.Inode
	// Staged like a create (Mknode): rm -rf costs no commit per file on the
	// caller's path; the purge of the inode, or the next commit, takes it.
	err := t.stageIfRoom()(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		var d peerdrive.Dirent
		if err := t.lookup(tx, dir, name, &d); err != nil {
			return err
		}
		if isDir(d.Mode) {
			return ErrIsDir
		}
		ino = d.Ino
		c, err := t.removeEntry(tx, touched, dir, d)
		out = c
		return err
	})
	return ino, out, err
}

// removeEntry deletes dirent d of dir and drops one link of its inode.
func (t *Tree) removeEntry(tx *store.Txn, touched map[peerdrive.Ino]bool, dir peerdrive.Ino, d peerdrive.Dirent) (peerdrive.Inode, error) {
	p, err := t.mod(touched, dir)
	if err != nil {
		return peerdrive.Inode{}, err
	}
	c, err := t.mod(touched, d.Ino)
	if err != nil {
		return peerdrive.Inode{}, err
	}
	if err := tx.Delete(t.direntKey(dir, d.Name)); err != nil {
		return peerdrive.Inode{}, err
	}
	now := Now()
	p.Mtime, p.Ctime = now, now
	shrankDir(p)
	c.Ctime = now
	if isDir(c.Mode) {
		c.Nlink = 0
		p.Nlink--
	} else if c.Nlink > 0 {
		c.Nlink--
	}
	if c.Nlink == 0 {
		if err := tx.Set(inoKey(tagOrphan, d.Ino), nil); err != nil {
			return peerdrive.Inode{}, err
		}
	}
	return *c, nil
}

// Rmdir removes the empty directory name from dir. Its inode becomes an
// orphan, to be purged by the caller.
func (t *Tree) Rmdir(ctx context.Context, dir peerdrive.Ino, name string) (peerdrive.Ino, error) {
	var ino peerdrive.Ino
	err := t.update(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		var d peerdrive.Dirent
		if err := t.lookup(tx, dir, name, &d); err != nil {
			return err
		}
		if !isDir(d.Mode) {
			return ErrNotDir
		}
		if empty, err := t.isEmpty(tx, d.Ino); err != nil {
			return err
		} else if !empty {
			return ErrNotEmpty
		}
		ino = d.Ino
		_, err := t.removeEntry(tx, touched, dir, d)
		return err
	})
	return ino, err
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = 1 << 0
	RenameExchange  = 1 << 1
	RenameWhiteout  = 1 << 2 // see RenameWhiteout
)

// Rename moves name1 in dir1 to name2 in dir2. If it replaced an entry, it
// returns that inode and its new attributes (an orphan at zero links).
func (t *Tree) Rename(ctx context.Context, dir1 peerdrive.Ino, name1 string, dir2 peerdrive.Ino, name2 string, flags uint32) (replaced peerdrive.Ino, rin peerdrive.Inode, err error) {
	if flags&RenameWhiteout != 0 {
		return 0, rin, ErrInvalid
	}
	replaced, rin, _, err = t.rename(ctx, dir1, name1, dir2, name2, flags, nil, nil)
	return replaced, rin, err
}

// RenameWhiteout is Rename with RENAME_WHITEOUT (renameat2(2), as
// overlayfs uses it): in the same transaction, name1 in dir1 becomes wh, a
// whiteout (a character device 0:0; the caller fills in its owner and
// mode), with the extended attributes xattrs. It returns the whiteout's
// inode number too. flags may add RenameNoReplace, not RenameExchange.
func (t *Tree) RenameWhiteout(ctx context.Context, dir1 peerdrive.Ino, name1 string, dir2 peerdrive.Ino, name2 string, flags uint32, wh peerdrive.Inode, xattrs ...peerdrive.Xattr) (replaced peerdrive.Ino, rin peerdrive.Inode, whIno peerdrive.Ino, err error) {
	if flags&RenameExchange != 0 || wh.Mode&syscall.S_IFMT != syscall.S_IFCHR || wh.Rdev != 0 {
		return 0, rin, 0, ErrInvalid
	}
	return t.rename(ctx, dir1, name1, dir2, name2, flags&^RenameWhiteout, &wh, xattrs)
}

func (t *Tree) rename(ctx context.Context, dir1 peerdrive.Ino, name1 string, dir2 peerdrive.Ino, name2 string, flags uint32, wh *peerdrive.Inode, whX []peerdrive.Xattr) (replaced peerdrive.Ino, rin peerdrive.Inode, whIno peerdrive.Ino, err error) {
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return 0, rin, 0, ErrInvalid
	}
	err = t.update(ctx, 1024+xattrBytes(whX), func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		var src, dst peerdrive.Dirent
		if err := t.lookup(tx, dir1, name1, &src); err != nil {
			return err
		}
		dstErr := t.lookup(tx, dir2, name2, &dst)
		if dstErr != nil && !errors.Is(dstErr, ErrNotFound) {
			return dstErr
		}
		exists := dstErr == nil
		now := Now()
		p1, err := t.mod(touched, dir1)
		if err != nil {
			return err
		}
		p2, err := t.mod(touched, dir2)
		if err != nil {
			return err
		}
		if !isDir(p2.Mode) {
			return ErrNotDir
		}
		s, err := t.mod(touched, src.Ino)
		if err != nil {
			return err
		}
		switch {
		case flags&RenameExchange != 0:
			if !exists {
				return ErrNotFound
			}
			d, err := t.mod(touched, dst.Ino)
			if err != nil {
				return err
			}
			if dir1 != dir2 && isDir(s.Mode) != isDir(d.Mode) {
				if isDir(s.Mode) {
					p1.Nlink--
					p2.Nlink++
				} else {
					p1.Nlink++
					p2.Nlink--
				}
			}
			src.Name, dst.Name = name2, name1
			if err := t.putDirent(tx, dir2, src); err != nil {
				return err
			}
			if err := t.putDirent(tx, dir1, dst); err != nil {
				return err
			}
			s.Ctime, d.Ctime = now, now
			p1.Mtime, p1.Ctime, p2.Mtime, p2.Ctime = now, now, now, now
			return nil
		case exists && flags&RenameNoReplace != 0:
			return ErrExist
		case exists && dst.Ino == src.Ino:
			return nil // two links to one file: POSIX says do nothing
		case exists:
			if isDir(src.Mode) && !isDir(dst.Mode) {
				return ErrNotDir
			}
			if !isDir(src.Mode) && isDir(dst.Mode) {
				return ErrIsDir
			}
			if isDir(dst.Mode) {
				if empty, err := t.isEmpty(tx, dst.Ino); err != nil {
					return err
				} else if !empty {
					return ErrNotEmpty
				}
			}
			rin, err = t.removeEntry(tx, touched, dir2, dst)
			if err != nil {
				return err
			}
			replaced = dst.Ino
		}
		if err := tx.Delete(t.direntKey(dir1, name1)); err != nil {
			return err
		}
		src.Name = name2
		if err := t.putDirent(tx, dir2, src); err != nil {
			return err
		}
		if isDir(s.Mode) && dir1 != dir2 {
			p1.Nlink--
			p2.Nlink++
		}
		if dir1 != dir2 {
			shrankDir(p1)
			grewDir(p2)
		}
		s.Ctime = now
		p1.Mtime, p1.Ctime, p2.Mtime, p2.Ctime = now, now, now, now
		if wh != nil {
			w := *wh
			w.Atime, w.Mtime, w.Ctime, w.Btime = now, now, now, now
			w.Nlink = 1
			grewDir(p1) // name1 is back, the whiteout
			whIno, err = t.newEntry(tx, touched, dir1, name1, w, whX)
			return err
		}
		return nil
	})
	if err != nil {
		return 0, peerdrive.Inode{}, 0, err
	}
	return replaced, rin, whIno, nil
}

// Orphans lists inodes with no links left, for purging after a crash.
func (t *Tree) Orphans(ctx context.Context) ([]peerdrive.Ino, error) {
	var out []peerdrive.Ino
	err := t.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagOrphan}, nil, false, func(k, _ []byte) (bool, error) {
			if len(k) == 9 {
				out = append(out, peerdrive.Ino(beUint64(k[1:])))
			}
			return true, nil
		})
	})
	return out, err
}

// Purge deletes the orphan ino: its record, chunk map, chunks no longer
// referenced, and extended attributes. Purging an inode that still has links
// is refused.
func (t *Tree) Purge(ctx context.Context, inos ...peerdrive.Ino) error {
	for _, ino := range inos {
		if err := t.dropUnlinkedChunks(ctx, ino); err != nil {
			return err
		}
	}
	return t.update(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		for _, ino := range inos {
			if err := t.purge(tx, touched, ino); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropUnlinkedChunks drops the chunks of the unlinked ino, purgeChunks per
// transaction, before Purge's own transaction deletes the rest of it. Each
// chunk costs a transaction four to six writes, and the store refuses one
// past a share of its memtable (some 26,000 writes with the store's 16 MiB):
// a file of thousands of chunks could not be deleted, and its orphan record
// then failed every later mount. The inode is unreachable (no link,
// no open file), so nobody sees it lose its chunks; a crash half-way leaves
// an orphan with fewer chunks, which the next PurgeOrphans finishes.
func (t *Tree) dropUnlinkedChunks(ctx context.Context, ino peerdrive.Ino) error {
	for {
		more := false
		err := t.update(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
			e, err := t.load(ino)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if e.ino.Nlink > 0 || e.noChunks {
				return nil // purge refuses it, or has nothing to drop
			}
			_, more, err = t.dropChunksMax(tx, ino, 0, purgeChunks)
			return err
		})
		if err != nil || !more {
			return err
		}
	}
}

// purgeChunks bounds the chunks one transaction of a purge drops.
const purgeChunks = 1024

func (t *Tree) purge(tx *store.Txn, touched map[peerdrive.Ino]bool, ino peerdrive.Ino) error {
	e, err := t.load(ino)
	if errors.Is(err, ErrNotFound) {
		return tx.Delete(inoKey(tagOrphan, ino))
	}
	if err != nil {
		return err
	}
	t.snap(ino) // for rollback: it leaves the cache below
	if e.ino.Nlink > 0 {
		return fmt.Errorf("purge inode %d with %d links: %w", ino, e.ino.Nlink, ErrInvalid)
	}
	// Each look through a prefix costs a store iterator: skip the ones
	// the cache knows are empty (rm -rf of files made this session).
	if !e.noChunks {
		if _, err := t.dropChunks(tx, ino, 0); err != nil {
			return err
		}
	}
	if err := t.dropPatches(tx, ino, 0); err != nil {
		return err
	}
	delete(t.patched, ino) // a hint: none can be written for a purged inode
	if !e.noXattrs {
		if err := deletePrefix(tx, inoKey(tagXattr, ino), nil); err != nil {
			return err
		}
	}
	if err := tx.Delete(inoKey(tagInode, ino)); err != nil {
		return err
	}
	delete(t.cache, ino)
	delete(touched, ino)
	t.stats.Inodes--
	return tx.Delete(inoKey(tagOrphan, ino))
}
