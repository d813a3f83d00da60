package fs

// A randomized test: thousands of mixed operations on the mount and on an
// in-memory model of a Linux filesystem, with the whole tree compared at
// checkpoints and the drive remounted now and then. Run with -seed N to
// replay a failure; -randops sets the number of operations.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var randOps = flag.Int("randops", 0, "operations of the randomized test (0: a default that runs in well under a minute)")

// mfile is a regular file of the model; names (hard links) and open
// descriptors share it.
type mfile struct {
	id   int
	data []byte
	ino  uint64 // learned at the first checkpoint that sees it
}

// mdir is a directory of the model.
type mdir struct {
	id     int
	parent *mdir
	name   string
	files  map[string]*mfile
	dirs   map[string]*mdir
	ino    uint64
}

func newMdir(id int, parent *mdir, name string) *mdir {
	return &mdir{id: id, parent: parent, name: name, files: map[string]*mfile{}, dirs: map[string]*mdir{}}
}

func (d *mdir) path() string {
	if d.parent == nil {
		return ""
	}
	return path.Join(d.parent.path(), d.name)
}

func (d *mdir) has(name string) bool {
	_, f := d.files[name]
	_, s := d.dirs[name]
	return f || s
}

func (d *mdir) empty() bool { return len(d.files) == 0 && len(d.dirs) == 0 }

// within reports whether d is a or lies below a.
func (d *mdir) within(a *mdir) bool {
	for p := d; p != nil; p = p.parent {
		if p == a {
			return true
		}
	}
	return false
}

type openFile struct {
	fd int
	f  *mfile
}

type randTest struct {
	t      *testing.T
	d      *testDrive
	r      *rand.Rand
	root   *mdir
	nextID int
	fds    []openFile
	hist   []string // the last operations, for the failure report
	op     int
}

const (
	maxFileSize = 6 * mib
	maxOpenFDs  = 4
)

func TestRandomOps(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	ops := *randOps
	if ops == 0 {
		ops = 2500
		if raceEnabled {
			ops = 800
		}
	}
	rt := &randTest{t: t, r: rand.New(rand.NewPCG(uint64(seed), 0)), root: newMdir(0, nil, "")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (replay: go test ./fs -run TestRandomOps -seed %d); failed at operation %d; the last ones:\n%s",
				seed, seed, rt.op, strings.Join(rt.hist, "\n"))
		}
	})
	t.Logf("seed %d, %d operations", seed, ops)
	rt.d = mountDrive(t, nil)
	const remountEvery, checkEvery = 400, 100
	start := time.Now()
	var slowest time.Duration
	var slowOp string
	for rt.op = 1; rt.op <= ops; rt.op++ {
		opStart := time.Now()
		rt.step()
		if t.Failed() {
			return
		}
		if d := time.Since(opStart); d > slowest && len(rt.hist) > 0 {
			slowest, slowOp = d, rt.hist[len(rt.hist)-1]
		}
		switch {
		case rt.op%remountEvery == 0:
			rt.closeAll()
			rt.logf("remount")
			rt.d.remount()
			rt.check(true)
		case rt.op%checkEvery == 0:
			rt.check(false)
		}
	}
	rt.closeAll()
	rt.check(false)
	rt.d.remount()
	rt.check(true)
	// Removing everything must leave nothing behind.
	rt.removeAll(rt.root)
	waitFor(t, "every inode and chunk to be freed", func() bool {
		s := rt.d.tree.Stats()
		return s.Inodes == 1 && s.Chunks == 0 && s.Used == 0
	})
	rt.d.remount()
	if s := rt.d.tree.Stats(); s.Inodes != 1 || s.Chunks != 0 || s.Used != 0 || s.Stored != 0 {
		t.Fatalf("empty drive after remount: %+v", s)
	}
	t.Logf("%d operations in %v; the slowest took %v: %s", ops, time.Since(start), slowest, slowOp)
}

func (rt *randTest) logf(format string, args ...any) {
	s := fmt.Sprintf("%5d ", rt.op) + fmt.Sprintf(format, args...)
	rt.hist = append(rt.hist, s)
	if len(rt.hist) > 40 {
		rt.hist = rt.hist[1:]
	}
}

func (rt *randTest) fatalf(format string, args ...any) {
	rt.t.Helper()
	rt.t.Fatalf("op %d: %s", rt.op, fmt.Sprintf(format, args...))
}

// expect checks the errno of an operation against the model's.
func (rt *randTest) expect(what string, err error, want unix.Errno) {
	rt.t.Helper()
	if got := errnoOf(err); got != want || (err != nil && got == 0) {
		rt.fatalf("%s: %v (errno %d), model says errno %d (%v)", what, err, got, want, want)
	}
}

func (rt *randTest) id() int { rt.nextID++; return rt.nextID }

// --- picking ---

func (rt *randTest) dirs() []*mdir {
	var out []*mdir
	var walk func(d *mdir)
	walk = func(d *mdir) {
		out = append(out, d)
		for _, n := range sortedKeys(d.dirs) {
			walk(d.dirs[n])
		}
	}
	walk(rt.root)
	return out
}

type fileRef struct {
	dir  *mdir
	name string
}

func (rt *randTest) files() []fileRef {
	var out []fileRef
	for _, d := range rt.dirs() {
		for _, n := range sortedKeys(d.files) {
			out = append(out, fileRef{d, n})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

var randNames = []string{"a", "b", "c", "d", "e", "f"}

func (rt *randTest) name() string { return randNames[rt.r.IntN(len(randNames))] }

func (rt *randTest) dir() *mdir {
	ds := rt.dirs()
	return ds[rt.r.IntN(len(ds))]
}

// entry picks an existing name, sometimes a missing one.
func (rt *randTest) entry() (*mdir, string) {
	if rt.r.IntN(10) == 0 {
		return rt.dir(), rt.name()
	}
	var all []fileRef
	for _, d := range rt.dirs() {
		for _, n := range sortedKeys(d.files) {
			all = append(all, fileRef{d, n})
		}
		for _, n := range sortedKeys(d.dirs) {
			all = append(all, fileRef{d, n})
		}
	}
	if len(all) == 0 {
		return rt.dir(), rt.name()
	}
	e := all[rt.r.IntN(len(all))]
	return e.dir, e.name
}

func (rt *randTest) file() (fileRef, bool) {
	fs := rt.files()
	if len(fs) == 0 {
		return fileRef{}, false
	}
	return fs[rt.r.IntN(len(fs))], true
}

func (rt *randTest) p(d *mdir, name string) string { return rt.d.path(path.Join(d.path(), name)) }

// offset picks a write or read position, often close to a chunk boundary.
func (rt *randTest) offset(size int) int {
	if rt.r.IntN(3) == 0 {
		k := rt.r.IntN(size/mib + 2)
		return max(0, k*mib+rt.r.IntN(201)-100)
	}
	return rt.r.IntN(size + mib/2)
}

func (rt *randTest) length() int {
	switch n := rt.r.IntN(10); {
	case n < 6:
		return 1 + rt.r.IntN(4096)
	case n < 9:
		return 1 + rt.r.IntN(256<<10)
	default:
		return 1 + rt.r.IntN(5*mib/2)
	}
}

// content returns n bytes to write: random, all zeros (holes), or a copy
// of another file's chunk (shared by deduplication).
func (rt *randTest) content(n int) []byte {
	switch rt.r.IntN(10) {
	case 0:
		return make([]byte, n)
	case 1:
		for _, f := range rt.files() {
			src := f.dir.files[f.name].data
			if len(src) >= n {
				return slices.Clone(src[:n])
			}
		}
	}
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rt.r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// --- model updates ---

func writeModel(f *mfile, b []byte, off int) {
	if end := off + len(b); end > len(f.data) {
		f.data = append(f.data, make([]byte, end-len(f.data))...)
	}
	copy(f.data[off:], b)
}

func truncModel(f *mfile, size int) {
	if size <= len(f.data) {
		f.data = f.data[:size]
		return
	}
	f.data = append(f.data, make([]byte, size-len(f.data))...)
}

// --- operations ---

func (rt *randTest) step() {
	t := rt.t
	t.Helper()
	switch n := rt.r.IntN(100); {
	case n < 10: // create
		d, name := rt.dir(), rt.name()
		p := rt.p(d, name)
		rt.logf("create %s", p)
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if d.has(name) {
			rt.expect("create "+p, err, unix.EEXIST)
			return
		}
		rt.expect("create "+p, err, 0)
		f := &mfile{id: rt.id()}
		d.files[name] = f
		if rt.r.IntN(2) == 0 && len(rt.fds) < maxOpenFDs {
			rt.fds = append(rt.fds, openFile{fd, f})
		} else {
			must(t, unix.Close(fd))
		}
	case n < 30: // write through a path
		fr, ok := rt.file()
		if !ok {
			return
		}
		f := fr.dir.files[fr.name]
		off, b := rt.offset(len(f.data)), rt.content(rt.length())
		if off+len(b) > maxFileSize {
			return
		}
		p := rt.p(fr.dir, fr.name)
		rt.logf("write %s [%d, %d)", p, off, off+len(b))
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		rt.expect("open "+p, err, 0)
		pwrite(t, fd, b, int64(off))
		writeModel(f, b, off)
		must(t, unix.Close(fd))
	case n < 40: // write, read, truncate or fsync through an open descriptor
		if len(rt.fds) == 0 {
			return
		}
		of := rt.fds[rt.r.IntN(len(rt.fds))]
		switch rt.r.IntN(4) {
		case 0:
			off, b := rt.offset(len(of.f.data)), rt.content(rt.length())
			if off+len(b) > maxFileSize {
				return
			}
			rt.logf("fd %d (file %d): write [%d, %d)", of.fd, of.f.id, off, off+len(b))
			pwrite(t, of.fd, b, int64(off))
			writeModel(of.f, b, off)
		case 1:
			size := rt.r.IntN(min(len(of.f.data)+2*mib, maxFileSize))
			rt.logf("fd %d (file %d): ftruncate %d", of.fd, of.f.id, size)
			must(t, unix.Ftruncate(of.fd, int64(size)))
			truncModel(of.f, size)
		case 2:
			rt.readCompare(fmt.Sprintf("fd %d (file %d)", of.fd, of.f.id), of.fd, of.f)
		case 3:
			// Small rewrites since the last fsync become patches.
			rt.logf("fd %d (file %d): fsync", of.fd, of.f.id)
			must(t, unix.Fsync(of.fd))
		}
	case n < 45: // close a descriptor
		if len(rt.fds) == 0 {
			return
		}
		i := rt.r.IntN(len(rt.fds))
		rt.logf("close fd %d (file %d)", rt.fds[i].fd, rt.fds[i].f.id)
		must(t, unix.Close(rt.fds[i].fd))
		rt.fds = slices.Delete(rt.fds, i, i+1)
	case n < 48: // open a descriptor
		fr, ok := rt.file()
		if !ok || len(rt.fds) >= maxOpenFDs {
			return
		}
		p := rt.p(fr.dir, fr.name)
		rt.logf("open %s", p)
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
		rt.expect("open "+p, err, 0)
		rt.fds = append(rt.fds, openFile{fd, fr.dir.files[fr.name]})
	case n < 53: // truncate through a path
		fr, ok := rt.file()
		if !ok {
			return
		}
		f := fr.dir.files[fr.name]
		size := rt.r.IntN(min(len(f.data)+2*mib, maxFileSize))
		if rt.r.IntN(4) == 0 {
			size = len(f.data) / 2
		}
		p := rt.p(fr.dir, fr.name)
		rt.logf("truncate %s %d", p, size)
		rt.expect("truncate "+p, unix.Truncate(p, int64(size)), 0)
		truncModel(f, size)
	case n < 63: // read and compare
		fr, ok := rt.file()
		if !ok {
			return
		}
		p := rt.p(fr.dir, fr.name)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		rt.expect("open "+p, err, 0)
		rt.readCompare(p, fd, fr.dir.files[fr.name])
		must(t, unix.Close(fd))
	case n < 73:
		rt.rename()
	case n < 78: // link
		fr, ok := rt.file()
		if !ok {
			return
		}
		d, name := rt.dir(), rt.name()
		src, dst := rt.p(fr.dir, fr.name), rt.p(d, name)
		rt.logf("link %s %s", src, dst)
		err := unix.Link(src, dst)
		if d.has(name) {
			rt.expect("link "+dst, err, unix.EEXIST)
			return
		}
		rt.expect("link "+dst, err, 0)
		d.files[name] = fr.dir.files[fr.name]
	case n < 85: // unlink
		d, name := rt.entry()
		p := rt.p(d, name)
		rt.logf("unlink %s", p)
		err := unix.Unlink(p)
		switch {
		case d.files[name] != nil:
			rt.expect("unlink "+p, err, 0)
			delete(d.files, name)
		case d.dirs[name] != nil:
			rt.expect("unlink "+p, err, unix.EISDIR)
		default:
			rt.expect("unlink "+p, err, unix.ENOENT)
		}
	case n < 92: // mkdir
		d, name := rt.dir(), rt.name()
		if len(d.path()) > 12 {
			return // keep the tree shallow
		}
		p := rt.p(d, name)
		rt.logf("mkdir %s", p)
		err := unix.Mkdir(p, 0o755)
		if d.has(name) {
			rt.expect("mkdir "+p, err, unix.EEXIST)
			return
		}
		rt.expect("mkdir "+p, err, 0)
		d.dirs[name] = newMdir(rt.id(), d, name)
	default: // rmdir
		d, name := rt.entry()
		p := rt.p(d, name)
		rt.logf("rmdir %s", p)
		err := unix.Rmdir(p)
		switch s := d.dirs[name]; {
		case s != nil && s.empty():
			rt.expect("rmdir "+p, err, 0)
			delete(d.dirs, name)
		case s != nil:
			rt.expect("rmdir "+p, err, unix.ENOTEMPTY)
		case d.files[name] != nil:
			rt.expect("rmdir "+p, err, unix.ENOTDIR)
		default:
			rt.expect("rmdir "+p, err, unix.ENOENT)
		}
	}
}

func (rt *randTest) readCompare(what string, fd int, f *mfile) {
	rt.t.Helper()
	off := rt.offset(len(f.data))
	n := rt.length()
	rt.logf("%s: read [%d, %d)", what, off, off+n)
	got := pread(rt.t, fd, n, int64(off))
	var want []byte
	if off < len(f.data) {
		want = f.data[off:min(off+n, len(f.data))]
	}
	if !bytes.Equal(got, want) {
		rt.fatalf("%s: read [%d, %d) of file %d: %d bytes, want %d; %s", what, off, off+n, f.id, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(got, want []byte) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at +%d: %#x, want %#x", i, got[i], want[i])
		}
	}
	return "one is a prefix of the other"
}

func (rt *randTest) rename() {
	sd, sname := rt.entry()
	dd, dname := rt.dir(), rt.name()
	src, dst := rt.p(sd, sname), rt.p(dd, dname)
	flags := 0
	if rt.r.IntN(8) == 0 {
		flags = unix.RENAME_NOREPLACE
	}
	rt.logf("rename %s %s flags %d", src, dst, flags)
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, uint(flags))
	what := fmt.Sprintf("rename %s %s", src, dst)
	sf, sdir := sd.files[sname], sd.dirs[sname]
	df, ddir := dd.files[dname], dd.dirs[dname]
	switch {
	case sf == nil && sdir == nil:
		rt.expect(what, err, unix.ENOENT)
	case flags == unix.RENAME_NOREPLACE && (df != nil || ddir != nil):
		rt.expect(what, err, unix.EEXIST) // checked first, as Linux does
	case sdir != nil && dd.within(sdir) && !(sd == dd && sname == dname):
		rt.expect(what, err, unix.EINVAL) // into itself
	case ddir != nil && sd.within(ddir):
		rt.expect(what, err, unix.ENOTEMPTY) // onto its own ancestor
	case sd == dd && sname == dname, sf != nil && sf == df:
		rt.expect(what, err, 0) // the same file: nothing happens
	case sdir != nil && df != nil:
		rt.expect(what, err, unix.ENOTDIR)
	case sf != nil && ddir != nil:
		rt.expect(what, err, unix.EISDIR)
	case ddir != nil && !ddir.empty():
		rt.expect(what, err, unix.ENOTEMPTY)
	default:
		rt.expect(what, err, 0)
		delete(dd.files, dname)
		delete(dd.dirs, dname)
		if sf != nil {
			delete(sd.files, sname)
			dd.files[dname] = sf
		} else {
			delete(sd.dirs, sname)
			sdir.parent, sdir.name = dd, dname
			dd.dirs[dname] = sdir
		}
	}
}

func (rt *randTest) closeAll() {
	for _, of := range rt.fds {
		must(rt.t, unix.Close(of.fd))
	}
	rt.fds = nil
}

// check compares the whole tree on the mount with the model: names, types,
// sizes, contents, link counts and inode numbers.
func (rt *randTest) check(remounted bool) {
	t := rt.t
	t.Helper()
	links := map[*mfile]int{}
	for _, fr := range rt.files() {
		links[fr.dir.files[fr.name]]++
	}
	inos := map[uint64]string{}
	var walk func(d *mdir)
	walk = func(d *mdir) {
		dp := rt.d.path(d.path())
		ents, err := os.ReadDir(dp)
		if err != nil {
			rt.fatalf("readdir %s: %v", dp, err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		want := append(sortedKeys(d.files), sortedKeys(d.dirs)...)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			rt.fatalf("%s holds %q, model %q", dp, got, want)
		}
		st := lstat(t, dp)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Nlink != uint64(2+len(d.dirs)) {
			rt.fatalf("%s: mode %o nlink %d, model a directory with %d links", dp, st.Mode, st.Nlink, 2+len(d.dirs))
		}
		switch {
		case d.ino == 0:
			d.ino = st.Ino
		case d.ino != st.Ino:
			rt.fatalf("%s: inode %d, was %d (remounted %v)", dp, st.Ino, d.ino, remounted)
		}
		if other, ok := inos[st.Ino]; ok {
			rt.fatalf("%s and %s share inode %d", dp, other, st.Ino)
		}
		inos[st.Ino] = dp
		for _, name := range sortedKeys(d.files) {
			f := d.files[name]
			p := path.Join(dp, name)
			st := lstat(t, p)
			if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(len(f.data)) || st.Nlink != uint64(links[f]) {
				rt.fatalf("%s: mode %o size %d nlink %d, model file %d of %d bytes with %d links",
					p, st.Mode, st.Size, st.Nlink, f.id, len(f.data), links[f])
			}
			switch {
			case f.ino == 0:
				f.ino = st.Ino
			case f.ino != st.Ino:
				rt.fatalf("%s: inode %d, was %d (remounted %v)", p, st.Ino, f.ino, remounted)
			}
			if other, ok := inos[st.Ino]; ok && links[f] == 1 {
				rt.fatalf("%s and %s share inode %d", p, other, st.Ino)
			}
			inos[st.Ino] = p
			got, err := os.ReadFile(p)
			if err != nil {
				rt.fatalf("read %s: %v", p, err)
			}
			if !bytes.Equal(got, f.data) {
				rt.fatalf("%s: content differs from file %d (%d bytes, model %d): %s", p, f.id, len(got), len(f.data), firstDiff(got, f.data))
			}
		}
		for _, name := range sortedKeys(d.dirs) {
			walk(d.dirs[name])
		}
	}
	walk(rt.root)
	if remounted {
		// With nothing open, the store holds exactly the live inodes.
		dirs, files := len(rt.dirs()), len(links)
		if s := rt.d.tree.Stats(); s.Inodes != uint64(dirs+files) {
			rt.fatalf("after remount the store counts %d inodes, model %d directories and %d files", s.Inodes, dirs, files)
		}
		orphans, err := rt.d.tree.Orphans(context.Background())
		must(t, err)
		if len(orphans) != 0 {
			rt.fatalf("orphans after remount: %v", orphans)
		}
	}
}

// removeAll empties d through the mount.
func (rt *randTest) removeAll(d *mdir) {
	for _, name := range sortedKeys(d.files) {
		must(rt.t, unix.Unlink(rt.p(d, name)))
		delete(d.files, name)
	}
	for _, name := range sortedKeys(d.dirs) {
		rt.removeAll(d.dirs[name])
		must(rt.t, unix.Rmdir(rt.p(d, name)))
		delete(d.dirs, name)
	}
}
