package wasm

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// memFS is an in-memory file system that wazero mounts in place of a host
// directory. The guest sees nothing of the host: the whole tree lives in
// this process's memory. A read-only memFS refuses every change with EROFS;
// a writable one counts file bytes against a quota and refuses growth past
// it with ENOSPC, remembering that it did so (quota.hit).
//
// Timestamps are always zero, so that listings are deterministic.
type memFS struct {
	experimentalsys.UnimplementedFS

	mu       sync.Mutex
	root     *memNode
	readOnly bool
	quota    *quota
	nextIno  sys.Inode
	// onClose is called, without mu held, after a file opened for writing
	// at path p is closed.
	onClose func(p string)
}

// quota caps the bytes of file content in one memFS.
type quota struct {
	limit, used int64
	hit         bool // a write was refused for lack of space
}

type memNode struct {
	ino      sys.Inode
	dir      bool
	mode     fs.FileMode
	data     []byte
	children map[string]*memNode
}

var _ experimentalsys.FS = (*memFS)(nil)

// newMemFS returns a memFS holding files (slash paths relative to its root;
// parents are created). limit <= 0 means no quota. It fails with the name of
// the first invalid path, or when files exceed limit.
func newMemFS(files map[string][]byte, readOnly bool, limit int64) (*memFS, error) {
	m := &memFS{readOnly: readOnly}
	m.root = m.newNode(true, 0o755)
	if limit > 0 {
		m.quota = &quota{limit: limit}
	}
	for _, name := range sortedKeys(files) {
		if !fs.ValidPath(name) || name == "." {
			return nil, &fs.PathError{Op: "add", Path: name, Err: fs.ErrInvalid}
		}
		parent := m.root
		elems := strings.Split(name, "/")
		for _, e := range elems[:len(elems)-1] {
			c := parent.children[e]
			if c == nil {
				c = m.newNode(true, 0o755)
				parent.children[e] = c
			} else if !c.dir {
				return nil, &fs.PathError{Op: "add", Path: name, Err: fs.ErrExist}
			}
			parent = c
		}
		last := elems[len(elems)-1]
		if c := parent.children[last]; c != nil {
			return nil, &fs.PathError{Op: "add", Path: name, Err: fs.ErrExist}
		}
		data := files[name]
		if m.quota != nil {
			if m.quota.used+int64(len(data)) > m.quota.limit {
				return nil, fmt.Errorf("%w: %s: more than %d bytes", ErrOutputLimit, name, m.quota.limit)
			}
			m.quota.used += int64(len(data))
		}
		n := m.newNode(false, 0o644)
		n.data = append([]byte(nil), data...)
		parent.children[last] = n
	}
	return m, nil
}

// errNoSpace is what a write past a quota gets: WASI as wazero maps it has
// no ENOSPC, so the guest sees EIO (and the run fails with ErrOutputLimit).
var errNoSpace = experimentalsys.EIO

func (m *memFS) newNode(dir bool, perm fs.FileMode) *memNode {
	m.nextIno++
	n := &memNode{ino: m.nextIno, dir: dir, mode: perm}
	if dir {
		n.mode |= fs.ModeDir
		n.children = map[string]*memNode{}
	}
	return n
}

// files returns every regular file, by slash path relative to the root.
func (m *memFS) files() map[string][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	var walk func(prefix string, n *memNode)
	walk = func(prefix string, n *memNode) {
		for name, c := range n.children {
			p := path.Join(prefix, name)
			if c.dir {
				walk(p, c)
			} else {
				out[p] = append([]byte(nil), c.data...)
			}
		}
	}
	walk("", m.root)
	return out
}

// quotaHit reports whether a write was refused for lack of space.
func (m *memFS) quotaHit() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.quota != nil && m.quota.hit
}

// split cleans a path wazero hands us (relative, already cleaned, maybe
// with a trailing slash, "." or "" for the root) into its elements.
func split(p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// lookup returns the node at p, or ENOENT/ENOTDIR. mu must be held.
func (m *memFS) lookup(p string) (*memNode, experimentalsys.Errno) {
	n := m.root
	for _, e := range split(p) {
		if !n.dir {
			return nil, experimentalsys.ENOTDIR
		}
		c := n.children[e]
		if c == nil {
			return nil, experimentalsys.ENOENT
		}
		n = c
	}
	return n, 0
}

// parent returns the directory holding p and p's last element. mu must be
// held.
func (m *memFS) parent(p string) (*memNode, string, experimentalsys.Errno) {
	elems := split(p)
	if len(elems) == 0 {
		return nil, "", experimentalsys.EINVAL // the root has no parent
	}
	dir, errno := m.lookup(strings.Join(elems[:len(elems)-1], "/"))
	if errno != 0 {
		return nil, "", errno
	}
	if !dir.dir {
		return nil, "", experimentalsys.ENOTDIR
	}
	return dir, elems[len(elems)-1], 0
}

func (m *memFS) stat(n *memNode) sys.Stat_t {
	st := sys.Stat_t{Ino: n.ino, Mode: n.mode, Nlink: 1}
	if n.dir {
		st.Nlink = 2
	} else {
		st.Size = int64(len(n.data))
	}
	return st
}

// OpenFile implements experimentalsys.FS.
func (m *memFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	m.mu.Lock()
	defer m.mu.Unlock()
	access := flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY)
	write := access != experimentalsys.O_RDONLY || flag&(experimentalsys.O_CREAT|experimentalsys.O_TRUNC|experimentalsys.O_APPEND) != 0
	n, errno := m.lookup(p)
	switch {
	case errno == experimentalsys.ENOENT && flag&experimentalsys.O_CREAT != 0:
		if m.readOnly {
			return nil, experimentalsys.EROFS
		}
		dir, name, errno := m.parent(p)
		if errno != 0 {
			return nil, errno
		}
		if strings.HasSuffix(p, "/") {
			return nil, experimentalsys.EISDIR
		}
		n = m.newNode(false, perm.Perm()|0o600)
		dir.children[name] = n
	case errno != 0:
		return nil, errno
	case flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0:
		return nil, experimentalsys.EEXIST
	}
	if n.dir {
		if access != experimentalsys.O_RDONLY {
			return nil, experimentalsys.EISDIR
		}
		return &memDir{fs: m, node: n, path: p}, 0
	}
	if flag&experimentalsys.O_DIRECTORY != 0 || strings.HasSuffix(p, "/") {
		return nil, experimentalsys.ENOTDIR
	}
	if write && m.readOnly {
		return nil, experimentalsys.EROFS
	}
	if flag&experimentalsys.O_TRUNC != 0 && access != experimentalsys.O_RDONLY {
		m.resize(n, 0)
	}
	return &memFile{
		fs: m, node: n, path: strings.Join(split(p), "/"),
		read:   access != experimentalsys.O_WRONLY,
		write:  access != experimentalsys.O_RDONLY,
		append: flag&experimentalsys.O_APPEND != 0,
	}, 0
}

// resize sets n's length to size, within the quota. mu must be held.
func (m *memFS) resize(n *memNode, size int64) experimentalsys.Errno {
	if size < 0 {
		return experimentalsys.EINVAL
	}
	delta := size - int64(len(n.data))
	if m.quota != nil && delta > 0 && m.quota.used+delta > m.quota.limit {
		m.quota.hit = true
		return errNoSpace
	}
	if m.quota != nil {
		m.quota.used += delta
	}
	if delta <= 0 {
		clear(n.data[size:])
		n.data = n.data[:size]
		return 0
	}
	n.data = append(n.data, make([]byte, delta)...)
	return 0
}

// Lstat implements experimentalsys.FS; there are no symbolic links.
func (m *memFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) { return m.Stat(p) }

// Stat implements experimentalsys.FS.
func (m *memFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, errno := m.lookup(p)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return m.stat(n), 0
}

// Mkdir implements experimentalsys.FS.
func (m *memFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return experimentalsys.EROFS
	}
	dir, name, errno := m.parent(p)
	if errno != 0 {
		if errno == experimentalsys.EINVAL {
			return experimentalsys.EEXIST
		}
		return errno
	}
	if dir.children[name] != nil {
		return experimentalsys.EEXIST
	}
	dir.children[name] = m.newNode(true, perm.Perm()|0o700)
	return 0
}

// Chmod implements experimentalsys.FS.
func (m *memFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return experimentalsys.EROFS
	}
	n, errno := m.lookup(p)
	if errno != 0 {
		return errno
	}
	n.mode = n.mode&fs.ModeType | perm.Perm()
	return 0
}

// Rename implements experimentalsys.FS.
func (m *memFS) Rename(from, to string) experimentalsys.Errno {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return experimentalsys.EROFS
	}
	fdir, fname, errno := m.parent(from)
	if errno != 0 {
		return errno
	}
	n := fdir.children[fname]
	if n == nil {
		return experimentalsys.ENOENT
	}
	tdir, tname, errno := m.parent(to)
	if errno != 0 {
		return errno
	}
	if fdir == tdir && fname == tname {
		return 0
	}
	if n.dir && strings.HasPrefix(strings.Join(split(to), "/")+"/", strings.Join(split(from), "/")+"/") {
		return experimentalsys.EINVAL // into itself
	}
	if old := tdir.children[tname]; old != nil {
		switch {
		case old.dir && !n.dir:
			return experimentalsys.EISDIR
		case !old.dir && n.dir:
			return experimentalsys.ENOTDIR
		case old.dir && len(old.children) > 0:
			return experimentalsys.ENOTEMPTY
		}
		if m.quota != nil {
			m.quota.used -= int64(len(old.data))
		}
	}
	delete(fdir.children, fname)
	tdir.children[tname] = n
	return 0
}

// Rmdir implements experimentalsys.FS.
func (m *memFS) Rmdir(p string) experimentalsys.Errno {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return experimentalsys.EROFS
	}
	dir, name, errno := m.parent(p)
	if errno != 0 {
		return errno
	}
	n := dir.children[name]
	switch {
	case n == nil:
		return experimentalsys.ENOENT
	case !n.dir:
		return experimentalsys.ENOTDIR
	case len(n.children) > 0:
		return experimentalsys.ENOTEMPTY
	}
	delete(dir.children, name)
	return 0
}

// Unlink implements experimentalsys.FS.
func (m *memFS) Unlink(p string) experimentalsys.Errno {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return experimentalsys.EROFS
	}
	dir, name, errno := m.parent(p)
	if errno != 0 {
		return errno
	}
	n := dir.children[name]
	switch {
	case n == nil:
		return experimentalsys.ENOENT
	case n.dir:
		return experimentalsys.EISDIR
	}
	if m.quota != nil {
		m.quota.used -= int64(len(n.data))
	}
	delete(dir.children, name)
	return 0
}

// Utimens implements experimentalsys.FS: times are not kept (always zero).
func (m *memFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return experimentalsys.EROFS
	}
	_, errno := m.lookup(p)
	return errno
}

// memFile is an open regular file of a memFS.
type memFile struct {
	experimentalsys.UnimplementedFile
	fs                  *memFS
	node                *memNode
	path                string
	off                 int64
	read, write, append bool
	closed, dirty       bool
}

var _ experimentalsys.File = (*memFile)(nil)

func (f *memFile) Ino() (sys.Inode, experimentalsys.Errno) { return f.node.ino, 0 }
func (f *memFile) IsAppend() bool                          { return f.append }
func (f *memFile) SetAppend(enable bool) experimentalsys.Errno {
	f.append = enable
	return 0
}

func (f *memFile) Stat() (sys.Stat_t, experimentalsys.Errno) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return sys.Stat_t{}, experimentalsys.EBADF
	}
	return f.fs.stat(f.node), 0
}

func (f *memFile) Read(buf []byte) (int, experimentalsys.Errno) {
	n, errno := f.Pread(buf, f.off)
	f.off += int64(n)
	return n, errno
}

func (f *memFile) Pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	switch {
	case f.closed || !f.read:
		return 0, experimentalsys.EBADF
	case off < 0:
		return 0, experimentalsys.EINVAL
	case off >= int64(len(f.node.data)):
		return 0, 0
	}
	return copy(buf, f.node.data[off:]), 0
}

func (f *memFile) Seek(offset fileOffset, whence int) (int64, experimentalsys.Errno) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(len(f.node.data))
	default:
		return 0, experimentalsys.EINVAL
	}
	if offset < 0 {
		return 0, experimentalsys.EINVAL
	}
	f.off = offset
	return offset, 0
}

func (f *memFile) Write(buf []byte) (int, experimentalsys.Errno) {
	off := f.off
	if f.append {
		f.fs.mu.Lock()
		off = int64(len(f.node.data))
		f.fs.mu.Unlock()
	}
	n, errno := f.Pwrite(buf, off)
	f.off = off + int64(n)
	return n, errno
}

func (f *memFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	switch {
	case f.closed || !f.write:
		return 0, experimentalsys.EBADF
	case off < 0:
		return 0, experimentalsys.EINVAL
	}
	if end := off + int64(len(buf)); end > int64(len(f.node.data)) {
		if errno := f.fs.resize(f.node, end); errno != 0 {
			return 0, errno
		}
	}
	f.dirty = true
	return copy(f.node.data[off:], buf), 0
}

func (f *memFile) Truncate(size int64) experimentalsys.Errno {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed || !f.write {
		return experimentalsys.EBADF
	}
	f.dirty = true
	return f.fs.resize(f.node, size)
}

func (f *memFile) Utimens(atim, mtim int64) experimentalsys.Errno { return 0 }

func (f *memFile) Close() experimentalsys.Errno {
	f.fs.mu.Lock()
	wasOpen := !f.closed
	f.closed = true
	hook := f.fs.onClose
	f.fs.mu.Unlock()
	if wasOpen && f.write && hook != nil {
		hook(f.path)
	}
	return 0
}

// memDir is an open directory of a memFS.
type memDir struct {
	experimentalsys.DirFile
	fs      *memFS
	node    *memNode
	path    string
	entries []experimentalsys.Dirent // nil until the first Readdir after a rewind
	pos     int
	closed  bool
}

var _ experimentalsys.File = (*memDir)(nil)

func (d *memDir) Dev() (uint64, experimentalsys.Errno)           { return 0, 0 }
func (d *memDir) Ino() (sys.Inode, experimentalsys.Errno)        { return d.node.ino, 0 }
func (d *memDir) Sync() experimentalsys.Errno                    { return 0 }
func (d *memDir) Datasync() experimentalsys.Errno                { return 0 }
func (d *memDir) Utimens(atim, mtim int64) experimentalsys.Errno { return 0 }
func (d *memDir) Close() experimentalsys.Errno {
	d.closed = true
	return 0
}

func (d *memDir) Stat() (sys.Stat_t, experimentalsys.Errno) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	return d.fs.stat(d.node), 0
}

func (d *memDir) Seek(offset fileOffset, whence int) (int64, experimentalsys.Errno) {
	if offset != 0 || whence != io.SeekStart {
		return 0, experimentalsys.EINVAL
	}
	d.entries, d.pos = nil, 0
	return 0, 0
}

func (d *memDir) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if d.closed {
		return nil, experimentalsys.EBADF
	}
	if d.entries == nil {
		d.fs.mu.Lock()
		names := sortedKeys(d.node.children)
		d.entries = make([]experimentalsys.Dirent, 0, len(names))
		for _, name := range names {
			c := d.node.children[name]
			d.entries = append(d.entries, experimentalsys.Dirent{Ino: c.ino, Name: name, Type: c.mode.Type()})
		}
		d.fs.mu.Unlock()
	}
	rest := d.entries[d.pos:]
	if n > 0 && n < len(rest) {
		rest = rest[:n]
	}
	d.pos += len(rest)
	return rest, 0
}

// fileOffset is int64 under another name: Seek here implements
// experimentalsys.File, not io.Seeker, which go vet's stdmethods would
// otherwise insist on.
type fileOffset = int64

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
