package fs

// Linux semantics of the mounted drive, each case asserting exact errnos and
// values. Every case runs on a fresh mount.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

const mib = peerdrive.ChunkSize

type semCase struct {
	name string
	fn   func(t *testing.T, d *testDrive)
	opt  func(*Options)
}

func TestSemantics(t *testing.T) {
	for _, c := range semCases {
		t.Run(c.name, func(t *testing.T) {
			d := mountDrive(t, c.opt)
			c.fn(t, d)
		})
	}
}

// randBytes returns n pseudo-random bytes from seed.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func open(t testing.TB, p string, flags int, mode uint32) int {
	t.Helper()
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	return fd
}

func closeFD(t testing.TB, fd int) {
	t.Helper()
	if err := unix.Close(fd); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func pwrite(t testing.TB, fd int, b []byte, off int64) {
	t.Helper()
	n, err := unix.Pwrite(fd, b, off)
	if err != nil || n != len(b) {
		t.Fatalf("pwrite %d bytes at %d: %d, %v", len(b), off, n, err)
	}
}

func pread(t testing.TB, fd int, n int, off int64) []byte {
	t.Helper()
	b := make([]byte, n)
	got := 0
	for got < n {
		c, err := unix.Pread(fd, b[got:], off+int64(got))
		if err != nil {
			t.Fatalf("pread %d bytes at %d: %v", n, off, err)
		}
		if c == 0 {
			break
		}
		got += c
	}
	return b[:got]
}

func fstat(t testing.TB, fd int) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat: %v", err)
	}
	return st
}

func wantBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	i := 0
	for got[i] == want[i] {
		i++
	}
	t.Fatalf("%s: first difference at byte %d: %#x, want %#x", what, i, got[i], want[i])
}

func wantNames(t testing.TB, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", dir, got, want)
	}
}

// waitFor polls cond for up to 30 s: the kernel sends RELEASE and FORGET
// after close(2) has returned, and on a loaded machine (CI runs packages
// side by side on two cores) that can take seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var semCases = []semCase{
	{name: "PushedChunksStayCoherent", fn: func(t *testing.T, d *testDrive) {
		// Small reads of a file no one may write push whole chunks into
		// the kernel's page cache (pushChunk); writes through a read-write
		// and a write-only descriptor, and a truncate by path, that follow
		// must all show, and the pushes must never bring old bytes back.
		p := d.path("f")
		const size = 3*mib + 5000
		model := randBytes(7, size)
		writeFile(t, p, model)
		d.fs.settle()
		rfd := open(t, p, unix.O_RDONLY, 0)
		defer closeFD(t, rfd)
		r := rand.New(rand.NewPCG(1, 2))
		sweep := func(when string) {
			t.Helper()
			for range 300 {
				off := r.IntN(len(model) - 4096)
				if got := pread(t, rfd, 4096, int64(off)); !bytes.Equal(got, model[off:off+4096]) {
					t.Fatalf("%s: read at %d differs from what was written", when, off)
				}
			}
			waitFor(t, "the pushes of these reads", func() bool { return len(d.fs.pushing) == 0 })
			if got := pread(t, rfd, len(model), 0); !bytes.Equal(got, model) {
				t.Fatalf("%s: the whole file differs from what was written", when)
			}
		}
		sweep("first reads")
		for round := range 6 {
			flags := unix.O_RDWR
			if round%2 == 1 {
				flags = unix.O_WRONLY
			}
			wfd := open(t, p, flags, 0)
			off := r.IntN(len(model) - 10000)
			b := randBytes(uint64(100+round), 1+r.IntN(9999))
			pwrite(t, wfd, b, int64(off))
			copy(model[off:], b)
			closeFD(t, wfd)
			d.fs.settle()
			sweep(fmt.Sprintf("after write %d", round))
		}
		must(t, unix.Truncate(p, mib+100))
		model = model[:mib+100]
		sweep("after a truncate by path")
		must(t, unix.Truncate(p, size))
		model = append(model, make([]byte, size-len(model))...)
		sweep("after the file grew again")
	}},
	{name: "WriteOnlyCoherent", fn: func(t *testing.T, d *testDrive) {
		// A write-only descriptor skips the page cache (FOPEN_DIRECT_IO):
		// readers through other descriptors, by read(2) and through a
		// shared mapping, see its writes and appends at once.
		p := d.path("f")
		a := bytes.Repeat([]byte("a"), 3*4096)
		writeFile(t, p, a)
		rfd := open(t, p, unix.O_RDONLY, 0)
		defer closeFD(t, rfd)
		if got := pread(t, rfd, 4096, 4096); !bytes.Equal(got, a[:4096]) {
			t.Fatalf("first read %q", got[:8])
		}
		m, err := unix.Mmap(rfd, 0, len(a), unix.PROT_READ, unix.MAP_SHARED)
		must(t, err)
		defer unix.Munmap(m)
		if m[4096+10] != 'a' {
			t.Fatalf("mapping reads %q", m[4096+10])
		}
		wfd := open(t, p, unix.O_WRONLY, 0)
		pwrite(t, wfd, []byte("XYZ"), 4096+10)
		if got := pread(t, rfd, 3, 4096+10); string(got) != "XYZ" {
			t.Errorf("read through another descriptor %q, want XYZ", got)
		}
		if got := string(m[4096+10 : 4096+13]); got != "XYZ" {
			t.Errorf("shared mapping shows %q, want XYZ", got)
		}
		closeFD(t, wfd)
		afd := open(t, p, unix.O_WRONLY|unix.O_APPEND, 0)
		if _, err := unix.Write(afd, []byte("END")); err != nil {
			t.Fatal(err)
		}
		closeFD(t, afd)
		if got := pread(t, rfd, 3, int64(len(a))); string(got) != "END" {
			t.Errorf("appended bytes read %q, want END", got)
		}
		if st := lstat(t, p); st.Size != int64(len(a))+3 {
			t.Errorf("size %d after the append, want %d", st.Size, len(a)+3)
		}
	}},
	{name: "CreateExcl", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		fd := open(t, p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		closeFD(t, fd)
		_, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		wantErrno(t, "O_EXCL on a file", err, unix.EEXIST)
		must(t, os.Mkdir(d.path("dir"), 0o755))
		_, err = unix.Open(d.path("dir"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		wantErrno(t, "O_EXCL on a directory", err, unix.EEXIST)
		must(t, os.Symlink("nowhere", d.path("dangling")))
		_, err = unix.Open(d.path("dangling"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		wantErrno(t, "O_EXCL on a dangling symlink", err, unix.EEXIST)
		// O_CREAT without O_EXCL opens the existing file and keeps its data.
		writeFile(t, p, []byte("data"))
		fd = open(t, p, unix.O_CREAT|unix.O_RDONLY, 0o600)
		wantBytes(t, "O_CREAT on an existing file", pread(t, fd, 10, 0), []byte("data"))
		closeFD(t, fd)
		if st := lstat(t, p); st.Mode != unix.S_IFREG|0o644 {
			t.Fatalf("mode %o, want %o", st.Mode, unix.S_IFREG|0o644)
		}
		_, err = unix.Open(d.path("missing/f"), unix.O_CREAT|unix.O_WRONLY, 0o644)
		wantErrno(t, "create in a missing directory", err, unix.ENOENT)
		_, err = unix.Open(d.path("f/g"), unix.O_CREAT|unix.O_WRONLY, 0o644)
		wantErrno(t, "create under a file", err, unix.ENOTDIR)
	}},
	{name: "Umask", fn: func(t *testing.T, d *testDrive) {
		old := unix.Umask(0o027)
		defer unix.Umask(old)
		closeFD(t, open(t, d.path("f"), unix.O_CREAT|unix.O_WRONLY, 0o666))
		must(t, unix.Mkdir(d.path("d"), 0o777))
		if st := lstat(t, d.path("f")); st.Mode != unix.S_IFREG|0o640 {
			t.Fatalf("file mode %o, want %o", st.Mode, unix.S_IFREG|0o640)
		}
		if st := lstat(t, d.path("d")); st.Mode != unix.S_IFDIR|0o750 {
			t.Fatalf("dir mode %o, want %o", st.Mode, unix.S_IFDIR|0o750)
		}
	}},
	{name: "Append", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, []byte("abc"))
		fd1 := open(t, p, unix.O_WRONLY|unix.O_APPEND, 0)
		fd2 := open(t, p, unix.O_WRONLY|unix.O_APPEND, 0)
		_, err := unix.Seek(fd1, 0, 0)
		must(t, err)
		for _, w := range []struct {
			fd   int
			data string
		}{{fd1, "de"}, {fd2, "12"}, {fd1, "f"}} {
			if n, err := unix.Write(w.fd, []byte(w.data)); err != nil || n != len(w.data) {
				t.Fatalf("append %q: %d, %v", w.data, n, err)
			}
		}
		if off, _ := unix.Seek(fd1, 0, 1); off != 8 {
			t.Fatalf("offset after append %d, want 8", off)
		}
		closeFD(t, fd1)
		closeFD(t, fd2)
		wantBytes(t, "appended", readFile(t, p), []byte("abcde12f"))
		// Appending across a chunk boundary.
		big := randBytes(1, mib-2)
		fd := open(t, p, unix.O_WRONLY|unix.O_APPEND, 0)
		if n, err := unix.Write(fd, big); err != nil || n != len(big) {
			t.Fatalf("append: %d, %v", n, err)
		}
		closeFD(t, fd)
		wantBytes(t, "appended across a chunk", readFile(t, p), append([]byte("abcde12f"), big...))
	}},
	{name: "Trunc", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, randBytes(2, 2*mib+5))
		ino := lstat(t, p).Ino
		fd := open(t, p, unix.O_WRONLY|unix.O_TRUNC, 0)
		if st := fstat(t, fd); st.Size != 0 || st.Ino != ino {
			t.Fatalf("after O_TRUNC: size %d ino %d, want 0 and %d", st.Size, st.Ino, ino)
		}
		pwrite(t, fd, []byte("x"), 0)
		closeFD(t, fd)
		wantBytes(t, "after O_TRUNC", readFile(t, p), []byte("x"))
		d.remount()
		wantBytes(t, "after O_TRUNC and remount", readFile(t, p), []byte("x"))
		if c := d.tree.Stats().Chunks; c != 1 {
			t.Fatalf("%d chunks stored, want 1", c)
		}
	}},
	{name: "SparseWrite", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		pwrite(t, fd, []byte("A"), 0)
		end := int64(3*mib + 5)
		pwrite(t, fd, []byte("B"), end)
		if st := fstat(t, fd); st.Size != end+1 {
			t.Fatalf("size %d, want %d", st.Size, end+1)
		}
		want := make([]byte, end+1)
		want[0], want[end] = 'A', 'B'
		wantBytes(t, "sparse file (buffered)", pread(t, fd, int(end)+100, 0), want)
		closeFD(t, fd)
		wantBytes(t, "sparse file", readFile(t, p), want)
		d.fs.settle() // a close hands the last chunks to the sealers
		if c := d.tree.Stats().Chunks; c != 2 {
			t.Fatalf("%d chunks stored for two written bytes, want 2", c)
		}
		d.remount()
		fd = open(t, p, unix.O_RDONLY, 0)
		wantBytes(t, "hole after remount", pread(t, fd, 100, mib+10), make([]byte, 100))
		wantBytes(t, "read at EOF", pread(t, fd, 10, end+1), nil)
		wantBytes(t, "read past EOF", pread(t, fd, 10, end+1000), nil)
		closeFD(t, fd)
		wantBytes(t, "sparse file after remount", readFile(t, p), want)
		// st_blocks counts the data, rounded up to 4 KiB, not the holes:
		// two chunks of 1 and 6 bytes (a chunk holds its data from its
		// start).
		if st := lstat(t, p); st.Blocks != 8 {
			t.Fatalf("sparse file: %d blocks, want 8", st.Blocks)
		}
		must(t, unix.Truncate(p, 2*mib)) // drops the second chunk
		if st := lstat(t, p); st.Blocks != 8 {
			t.Fatalf("after truncate: %d blocks, want 8", st.Blocks)
		}
		// Buffered data counts as it will once committed.
		writeFile(t, d.path("full"), randBytes(3, mib+1))
		for _, when := range []string{"buffered", "committed"} {
			if st := lstat(t, d.path("full")); st.Blocks != (mib+4096)/512 {
				t.Fatalf("%s file of 1 MiB + 1 byte: %d blocks, want %d", when, st.Blocks, (mib+4096)/512)
			}
			d.remount() // drops the kernel's attributes too
		}
	}},
	{name: "BlocksWhileBusy", fn: func(t *testing.T, d *testDrive) {
		// A stat that finds a file's lock held (an fsync sealing, a write
		// fetching a chunk, a sealer handing back) shows what the last
		// stat counted, not another figure: posixtest's FstatDeleted
		// failed when a sealer held it between its stat and fstat.
		p := d.path("f")
		// O_DIRECT: each write reaches the daemon at once, not the
		// kernel's writeback cache.
		fd := open(t, p, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT, 0o644)
		defer closeFD(t, fd)
		ino := peerdrive.Ino(fstat(t, fd).Ino)
		st := d.fs.existing(ino)
		if st == nil {
			t.Fatal("no state for an open file")
		}
		attr := func() uint64 {
			in, err := d.tree.Inode(context.Background(), ino)
			if err != nil {
				t.Fatal(err)
			}
			var a fuse.Attr
			d.fs.fillAttr(ino, &in, &a)
			return a.Blocks
		}
		pwrite(t, fd, make([]byte, 6), 0) // zeros: a hole once committed
		st.mu.Lock()
		if b := attr(); b != 1 {
			st.mu.Unlock()
			t.Fatalf("busy, never counted: %d blocks, want the size's 1", b)
		}
		st.mu.Unlock()
		for _, c := range []struct {
			data []byte
			want uint64
		}{{make([]byte, 6), 0}, {[]byte("hello\n"), 8}} {
			pwrite(t, fd, c.data, 0)
			if b := attr(); b != c.want {
				t.Fatalf("%q: %d blocks, want %d", c.data, b, c.want)
			}
			st.mu.Lock()
			b := attr()
			st.mu.Unlock()
			if b != c.want {
				t.Fatalf("%q, file busy: %d blocks, want %d as before", c.data, b, c.want)
			}
		}
		must(t, unix.Fsync(fd))
		if b := attr(); b != 8 {
			t.Fatalf("committed: %d blocks, want 8", b)
		}
	}},
	{name: "ChunkBoundary", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		data := randBytes(3, 100)
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		pwrite(t, fd, data, mib-50)
		wantBytes(t, "across the boundary (buffered)", pread(t, fd, 100, mib-50), data)
		must(t, unix.Fsync(fd))
		if c := d.tree.Stats().Chunks; c != 2 {
			t.Fatalf("%d chunks stored, want 2", c)
		}
		wantBytes(t, "across the boundary", pread(t, fd, 100, mib-50), data)
		// One write that spans three chunks, not aligned.
		big := randBytes(4, 2*mib+300)
		pwrite(t, fd, big, mib-100)
		closeFD(t, fd)
		want := make([]byte, mib-100+len(big))
		copy(want[mib-50:], data)
		copy(want[mib-100:], big)
		d.remount()
		wantBytes(t, "after remount", readFile(t, p), want)
	}},
	{name: "OverwriteAfterRemount", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		want := randBytes(5, 5*mib/2)
		writeFile(t, p, want)
		d.remount()
		fd := open(t, p, unix.O_RDWR, 0)
		patch := randBytes(6, 10)
		pwrite(t, fd, patch, 3*mib/2)
		copy(want[3*mib/2:], patch)
		patch2 := []byte("edge")
		pwrite(t, fd, patch2, 2*mib-2) // straddles chunks 1 and 2
		copy(want[2*mib-2:], patch2)
		wantBytes(t, "patched (buffered)", pread(t, fd, len(want), 0), want)
		closeFD(t, fd)
		d.remount()
		wantBytes(t, "patched after remount", readFile(t, p), want)
		if st := lstat(t, p); st.Size != int64(len(want)) {
			t.Fatalf("size %d, want %d", st.Size, len(want))
		}
		if c := d.tree.Stats().Chunks; c != 3 {
			t.Fatalf("%d chunks stored, want 3 (replaced chunks must be freed)", c)
		}
	}},
	{name: "TruncateShrinkGrow", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		data := randBytes(7, 3*mib)
		writeFile(t, p, data)
		cut := int64(3*mib/2 + 7)
		must(t, unix.Truncate(p, cut))
		if st := lstat(t, p); st.Size != cut {
			t.Fatalf("size %d, want %d", st.Size, cut)
		}
		wantBytes(t, "after shrink", readFile(t, p), data[:cut])
		must(t, unix.Truncate(p, 3*mib))
		want := slices.Clone(data[:cut])
		want = append(want, make([]byte, 3*mib-cut)...)
		wantBytes(t, "after shrink and grow", readFile(t, p), want)
		d.remount()
		wantBytes(t, "after remount", readFile(t, p), want)
		if c := d.tree.Stats().Chunks; c != 2 {
			t.Fatalf("%d chunks stored, want 2", c)
		}
		must(t, unix.Truncate(p, 0))
		if c := d.tree.Stats().Chunks; c != 0 {
			t.Fatalf("%d chunks stored after truncate to 0, want 0", c)
		}
		wantErrno(t, "truncate a directory", unix.Truncate(d.mnt, 0), unix.EISDIR)
		wantErrno(t, "truncate to a negative size", unix.Truncate(p, -1), unix.EINVAL)
	}},
	{name: "Ftruncate", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		data := randBytes(8, 100)
		pwrite(t, fd, data, 0)
		must(t, unix.Ftruncate(fd, 10))
		if st := fstat(t, fd); st.Size != 10 {
			t.Fatalf("size %d after ftruncate, want 10", st.Size)
		}
		wantBytes(t, "after ftruncate", pread(t, fd, 100, 0), data[:10])
		must(t, unix.Ftruncate(fd, 4096))
		want := append(slices.Clone(data[:10]), make([]byte, 4086)...)
		wantBytes(t, "after ftruncate grow", pread(t, fd, 5000, 0), want)
		pwrite(t, fd, []byte("z"), 20)
		want[20] = 'z'
		wantBytes(t, "write after grow", pread(t, fd, 5000, 0), want)
		// Shrink into the middle of a dirty chunk, then grow: zeros.
		big := randBytes(9, mib+10)
		pwrite(t, fd, big, 0)
		must(t, unix.Ftruncate(fd, 5))
		must(t, unix.Ftruncate(fd, mib+20))
		want = append(slices.Clone(big[:5]), make([]byte, mib+15)...)
		wantBytes(t, "dirty shrink and grow", pread(t, fd, mib+100, 0), want)
		closeFD(t, fd)
		wantBytes(t, "after close", readFile(t, p), want)
		rd := open(t, p, unix.O_RDONLY, 0)
		wantErrno(t, "ftruncate of a read-only descriptor", unix.Ftruncate(rd, 0), unix.EINVAL)
		closeFD(t, rd)
	}},
	{name: "UnlinkOpen", fn: func(t *testing.T, d *testDrive) {
		before := d.tree.Stats()
		p := d.path("f")
		data := randBytes(10, 2*mib+3)
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		pwrite(t, fd, data, 0)
		must(t, unix.Fsync(fd))
		if c := d.tree.Stats().Chunks; c != before.Chunks+3 {
			t.Fatalf("%d chunks, want %d", c, before.Chunks+3)
		}
		must(t, unix.Unlink(p))
		var st unix.Stat_t
		wantErrno(t, "stat after unlink", unix.Lstat(p, &st), unix.ENOENT)
		wantNames(t, d.mnt)
		if st := fstat(t, fd); st.Nlink != 0 || st.Size != int64(len(data)) {
			t.Fatalf("fstat after unlink: nlink %d size %d", st.Nlink, st.Size)
		}
		wantBytes(t, "read after unlink", pread(t, fd, len(data), 0), data)
		pwrite(t, fd, []byte("more"), int64(len(data)))
		data = append(data, "more"...)
		must(t, unix.Ftruncate(fd, int64(len(data))))
		wantBytes(t, "read after write after unlink", pread(t, fd, len(data)+10, 0), data)
		must(t, unix.Fsync(fd))
		// Space is kept while the file is open...
		if c := d.tree.Stats().Chunks; c != before.Chunks+3 {
			t.Fatalf("%d chunks while open, want %d", c, before.Chunks+3)
		}
		closeFD(t, fd)
		// ...and freed after close.
		waitFor(t, "chunks of the unlinked file to be freed", func() bool {
			s := d.tree.Stats()
			return s.Chunks == before.Chunks && s.Inodes == before.Inodes
		})
		// Without an open file the space is freed at once.
		writeFile(t, p, data)
		must(t, unix.Unlink(p))
		waitFor(t, "chunks of the unlinked file to be freed", func() bool {
			return d.tree.Stats().Chunks == before.Chunks
		})
	}},
	{name: "UnlinkOpenRemount", fn: func(t *testing.T, d *testDrive) {
		// An open, unlinked file whose last close the kernel never
		// reported is purged by the next mount.
		p := d.path("f")
		writeFile(t, p, randBytes(11, 100))
		fd := open(t, p, unix.O_RDONLY, 0)
		must(t, unix.Unlink(p))
		closeFD(t, fd)
		d.remount()
		if s := d.tree.Stats(); s.Chunks != 0 || s.Inodes != 1 {
			t.Fatalf("after remount: %+v, want no chunks and only the root", s)
		}
		orphans, err := d.tree.Orphans(context.Background())
		must(t, err)
		if len(orphans) != 0 {
			t.Fatalf("orphans left: %v", orphans)
		}
	}},
	{name: "KillSuidSgid", fn: func(t *testing.T, d *testDrive) {
		// Linux clears set-user-ID (and set-group-ID when the group may
		// execute) when a caller without CAP_FSETID writes or truncates,
		// and on any chown of a non-directory.
		const owner = 1000
		must(t, os.Chmod(filepath.Dir(d.mnt), 0o755)) // t.TempDir makes it 0700
		for i, c := range []struct {
			name     string
			mode     uint32
			isDir    bool
			asOwner  bool
			op       func(p string) error
			wantMode uint32
		}{
			{"write by the owner", 0o6755, false, true, func(p string) error { return writeAt(p, 0) }, 0o755},
			{"write, no group exec", 0o6745, false, true, func(p string) error { return writeAt(p, 5) }, 0o2745},
			{"write by root", 0o6755, false, false, func(p string) error { return writeAt(p, 0) }, 0o6755},
			{"truncate by the owner", 0o6755, false, true, func(p string) error { return unix.Truncate(p, 3) }, 0o755},
			{"open O_TRUNC by the owner", 0o6755, false, true, func(p string) error {
				fd, err := unix.Open(p, unix.O_WRONLY|unix.O_TRUNC, 0)
				if err == nil {
					unix.Close(fd)
				}
				return err
			}, 0o755},
			{"fallocate by the owner", 0o6755, false, true, func(p string) error {
				fd, err := unix.Open(p, unix.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				return unix.Fallocate(fd, 0, 0, 1<<20)
			}, 0o755},
			{"chown by root", 0o6755, false, false, func(p string) error { return unix.Chown(p, 2000, 2000) }, 0o755},
			{"chown by root, no group exec", 0o6745, false, false, func(p string) error { return unix.Chown(p, 2000, 2000) }, 0o2745},
			{"chown of a directory", 0o6755, true, false, func(p string) error { return unix.Chown(p, 2000, 2000) }, 0o6755},
			// Both IDs -1 change nothing but the ctime, and still clear
			// the bits (ext4 does; chown_common flags the kill
			// regardless of the IDs).
			{"chown -1 -1 by root", 0o6755, false, false, func(p string) error { return unix.Chown(p, -1, -1) }, 0o755},
			{"chown -1 -1 by the owner", 0o6755, false, true, func(p string) error { return unix.Chown(p, -1, -1) }, 0o755},
			{"chown -1 -1 of a directory", 0o6755, true, false, func(p string) error { return unix.Chown(p, -1, -1) }, 0o6755},
		} {
			p := d.path(fmt.Sprintf("k%d", i))
			if c.isDir {
				must(t, unix.Mkdir(p, 0o755))
			} else {
				writeFile(t, p, []byte("0123456789"))
			}
			must(t, unix.Chown(p, owner, owner))
			must(t, unix.Chmod(p, c.mode))
			if c.asOwner {
				asUser(t, owner, owner, func() error { return c.op(p) })
			} else {
				must(t, c.op(p))
			}
			if got := lstat(t, p).Mode &^ unix.S_IFMT; got != c.wantMode {
				t.Errorf("%s: mode %o, want %o", c.name, got, c.wantMode)
			}
		}
		// A file capability (setcap) goes with any write, even root's.
		p := d.path("cap")
		writeFile(t, p, []byte("0123456789"))
		capV2 := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // cap_net_raw=p
		must(t, unix.Setxattr(p, "security.capability", capV2, 0))
		if _, err := unix.Getxattr(p, "security.capability", make([]byte, 64)); err != nil {
			t.Fatalf("security.capability after setxattr: %v", err)
		}
		must(t, writeAt(p, 1))
		if _, err := unix.Getxattr(p, "security.capability", make([]byte, 64)); err != unix.ENODATA {
			t.Fatalf("security.capability after a write: %v, want ENODATA", err)
		}
	}},
	{name: "UnlinkRightAfterClose", fn: func(t *testing.T, d *testDrive) {
		// A close hands the file's last chunk to the sealers; an unlink
		// right after must not leave that chunk behind once it is sealed.
		for i := range 50 {
			p := d.path(fmt.Sprintf("f%d", i))
			writeFile(t, p, randBytes(uint64(100+i), 4096+i))
			must(t, unix.Unlink(p))
		}
		d.fs.settle()
		waitFor(t, "the unlinked files and their chunks to be purged", func() bool {
			s := d.tree.Stats()
			return s.Chunks == 0 && s.Inodes == 1
		})
		d.remount()
		if s := d.tree.Stats(); s.Chunks != 0 || s.Inodes != 1 {
			t.Fatalf("after remount: %+v, want no chunks and only the root", s)
		}
	}},
	{name: "RenameOverFile", fn: func(t *testing.T, d *testDrive) {
		a, b := d.path("a"), d.path("b")
		writeFile(t, a, []byte("AAA"))
		writeFile(t, b, randBytes(12, mib+1))
		ino := lstat(t, a).Ino
		d.fs.settle()
		chunks := d.tree.Stats().Chunks
		must(t, unix.Rename(a, b))
		var st unix.Stat_t
		wantErrno(t, "stat old name", unix.Lstat(a, &st), unix.ENOENT)
		if st := lstat(t, b); st.Ino != ino || st.Size != 3 || st.Nlink != 1 {
			t.Fatalf("renamed: ino %d size %d nlink %d, want %d 3 1", st.Ino, st.Size, st.Nlink, ino)
		}
		wantBytes(t, "renamed", readFile(t, b), []byte("AAA"))
		wantNames(t, d.mnt, "b")
		waitFor(t, "the replaced file's chunks to be freed", func() bool { return d.tree.Stats().Chunks == chunks-2 })
		// A file renamed over while open stays readable through its descriptor.
		writeFile(t, a, []byte("new"))
		fd := open(t, b, unix.O_RDONLY, 0)
		must(t, unix.Rename(a, b))
		wantBytes(t, "replaced, still open", pread(t, fd, 10, 0), []byte("AAA"))
		if st := fstat(t, fd); st.Nlink != 0 {
			t.Fatalf("replaced file has nlink %d, want 0", st.Nlink)
		}
		closeFD(t, fd)
		wantBytes(t, "replacement", readFile(t, b), []byte("new"))
		// Renaming one link of a file onto another is a no-op.
		must(t, unix.Link(b, a))
		must(t, unix.Rename(a, b))
		wantNames(t, d.mnt, "a", "b")
		if st := lstat(t, b); st.Nlink != 2 {
			t.Fatalf("nlink %d, want 2", st.Nlink)
		}
	}},
	{name: "RenameAcrossDirs", fn: func(t *testing.T, d *testDrive) {
		must(t, os.MkdirAll(d.path("d1/sub/deep"), 0o755))
		must(t, os.Mkdir(d.path("d2"), 0o755))
		writeFile(t, d.path("d1/f"), []byte("f"))
		must(t, unix.Rename(d.path("d1/f"), d.path("d2/g")))
		wantBytes(t, "moved file", readFile(t, d.path("d2/g")), []byte("f"))
		wantNames(t, d.path("d1"), "sub")
		wantNames(t, d.path("d2"), "g")
		if n1, n2 := lstat(t, d.path("d1")).Nlink, lstat(t, d.path("d2")).Nlink; n1 != 3 || n2 != 2 {
			t.Fatalf("after moving a file: nlink %d %d, want 3 2", n1, n2)
		}
		subIno := lstat(t, d.path("d1/sub")).Ino
		must(t, unix.Rename(d.path("d1/sub"), d.path("d2/sub2")))
		if n1, n2 := lstat(t, d.path("d1")).Nlink, lstat(t, d.path("d2")).Nlink; n1 != 2 || n2 != 3 {
			t.Fatalf("after moving a directory: nlink %d %d, want 2 3", n1, n2)
		}
		if st := lstat(t, d.path("d2/sub2/..")); st.Ino != lstat(t, d.path("d2")).Ino {
			t.Fatalf("moved directory's .. is inode %d, want d2", st.Ino)
		}
		if st := lstat(t, d.path("d2/sub2")); st.Ino != subIno || st.Nlink != 3 {
			t.Fatalf("moved directory: ino %d nlink %d, want %d 3", st.Ino, st.Nlink, subIno)
		}
		wantNames(t, d.path("d2/sub2"), "deep")
		wantErrno(t, "move a directory into itself", unix.Rename(d.path("d2"), d.path("d2/sub2/x")), unix.EINVAL)
		d.remount()
		if n1, n2 := lstat(t, d.path("d1")).Nlink, lstat(t, d.path("d2")).Nlink; n1 != 2 || n2 != 3 {
			t.Fatalf("after remount: nlink %d %d, want 2 3", n1, n2)
		}
		wantNames(t, d.path("d2/sub2"), "deep")
	}},
	{name: "RenameDirs", fn: func(t *testing.T, d *testDrive) {
		for _, p := range []string{"a", "b", "c", "c/x", "e"} {
			must(t, os.Mkdir(d.path(p), 0o755))
		}
		writeFile(t, d.path("a/in"), []byte("a"))
		writeFile(t, d.path("file"), []byte("file"))
		ino := lstat(t, d.path("a")).Ino
		if n := lstat(t, d.mnt).Nlink; n != 6 {
			t.Fatalf("root nlink %d, want 6", n)
		}
		must(t, unix.Rename(d.path("a"), d.path("b"))) // over an empty directory
		if st := lstat(t, d.path("b")); st.Ino != ino {
			t.Fatalf("b is inode %d, want %d", st.Ino, ino)
		}
		wantNames(t, d.path("b"), "in")
		if n := lstat(t, d.mnt).Nlink; n != 5 {
			t.Fatalf("root nlink %d after replacing a directory, want 5", n)
		}
		wantErrno(t, "directory over a non-empty directory", unix.Rename(d.path("b"), d.path("c")), unix.ENOTEMPTY)
		wantErrno(t, "file over a directory", unix.Rename(d.path("file"), d.path("e")), unix.EISDIR)
		wantErrno(t, "directory over a file", unix.Rename(d.path("e"), d.path("file")), unix.ENOTDIR)
		wantErrno(t, "missing source", unix.Rename(d.path("nothing"), d.path("x")), unix.ENOENT)
		wantNames(t, d.mnt, "b", "c", "e", "file")
		wantNames(t, d.path("c"), "x")
	}},
	{name: "RenameNoReplace", fn: func(t *testing.T, d *testDrive) {
		writeFile(t, d.path("a"), []byte("a"))
		writeFile(t, d.path("b"), []byte("b"))
		err := unix.Renameat2(unix.AT_FDCWD, d.path("a"), unix.AT_FDCWD, d.path("b"), unix.RENAME_NOREPLACE)
		wantErrno(t, "RENAME_NOREPLACE onto a file", err, unix.EEXIST)
		wantBytes(t, "b untouched", readFile(t, d.path("b")), []byte("b"))
		must(t, unix.Renameat2(unix.AT_FDCWD, d.path("a"), unix.AT_FDCWD, d.path("c"), unix.RENAME_NOREPLACE))
		wantNames(t, d.mnt, "b", "c")
		err = unix.Renameat2(unix.AT_FDCWD, d.path("b"), unix.AT_FDCWD, d.path("c"), unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE)
		wantErrno(t, "NOREPLACE|EXCHANGE", err, unix.EINVAL)
	}},
	{name: "RenameWhiteout", fn: func(t *testing.T, d *testDrive) {
		// renameat2(RENAME_WHITEOUT), as overlayfs uses it: the source
		// name is left holding a whiteout, a character device 0:0.
		must(t, os.Mkdir(d.path("d"), 0o755))
		must(t, os.Mkdir(d.path("d/sub"), 0o755))
		writeFile(t, d.path("a"), []byte("a"))
		writeFile(t, d.path("b"), []byte("b"))
		ino := lstat(t, d.path("a")).Ino
		must(t, unix.Renameat2(unix.AT_FDCWD, d.path("a"), unix.AT_FDCWD, d.path("d/a"), unix.RENAME_WHITEOUT))
		must(t, unix.Renameat2(unix.AT_FDCWD, d.path("d/sub"), unix.AT_FDCWD, d.path("sub"), unix.RENAME_WHITEOUT))
		err := unix.Renameat2(unix.AT_FDCWD, d.path("b"), unix.AT_FDCWD, d.path("d/a"), unix.RENAME_WHITEOUT|unix.RENAME_NOREPLACE)
		wantErrno(t, "WHITEOUT|NOREPLACE onto a file", err, unix.EEXIST)
		err = unix.Renameat2(unix.AT_FDCWD, d.path("b"), unix.AT_FDCWD, d.path("d/a"), unix.RENAME_WHITEOUT|unix.RENAME_EXCHANGE)
		wantErrno(t, "WHITEOUT|EXCHANGE", err, unix.EINVAL)
		check := func(when string) {
			t.Helper()
			if st := lstat(t, d.path("d/a")); st.Ino != ino {
				t.Fatalf("%s: d/a is inode %d, want the file %d", when, st.Ino, ino)
			}
			wantBytes(t, when, readFile(t, d.path("d/a")), []byte("a"))
			for _, w := range []string{"a", "d/sub"} {
				st := lstat(t, d.path(w))
				if st.Mode != unix.S_IFCHR || st.Rdev != 0 || st.Nlink != 1 || st.Ino == ino {
					t.Fatalf("%s: %s is mode %o rdev %d nlink %d, want a whiteout (%o, 0, 1)", when, w, st.Mode, st.Rdev, st.Nlink, unix.S_IFCHR)
				}
			}
			if st := lstat(t, d.path("sub")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
				t.Fatalf("%s: sub is mode %o, want the directory", when, st.Mode)
			}
			// d lost a subdirectory and gained a whiteout.
			if n := lstat(t, d.path("d")).Nlink; n != 2 {
				t.Fatalf("%s: d has nlink %d, want 2", when, n)
			}
			wantNames(t, d.mnt, "a", "b", "d", "sub")
			wantNames(t, d.path("d"), "a", "sub")
			wantBytes(t, when, readFile(t, d.path("b")), []byte("b"))
		}
		check("after rename")
		d.remount()
		check("after remount")
		// A whiteout is an ordinary node: it goes with unlink.
		must(t, unix.Unlink(d.path("a")))
		wantNames(t, d.mnt, "b", "d", "sub")
	}},
	{name: "RenameExchange", fn: func(t *testing.T, d *testDrive) {
		for _, p := range []string{"d1", "d2", "d2/dir", "d2/dir/sub"} {
			must(t, os.Mkdir(d.path(p), 0o755))
		}
		writeFile(t, d.path("d1/file"), []byte("file"))
		fileIno, dirIno := lstat(t, d.path("d1/file")).Ino, lstat(t, d.path("d2/dir")).Ino
		if n1, n2 := lstat(t, d.path("d1")).Nlink, lstat(t, d.path("d2")).Nlink; n1 != 2 || n2 != 3 {
			t.Fatalf("before: nlink %d %d, want 2 3", n1, n2)
		}
		must(t, unix.Renameat2(unix.AT_FDCWD, d.path("d1/file"), unix.AT_FDCWD, d.path("d2/dir"), unix.RENAME_EXCHANGE))
		check := func(when string) {
			t.Helper()
			if st := lstat(t, d.path("d1/file")); st.Ino != dirIno || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				t.Fatalf("%s: d1/file is ino %d mode %o, want the directory %d", when, st.Ino, st.Mode, dirIno)
			}
			if st := lstat(t, d.path("d2/dir")); st.Ino != fileIno || st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Fatalf("%s: d2/dir is ino %d mode %o, want the file %d", when, st.Ino, st.Mode, fileIno)
			}
			if n1, n2 := lstat(t, d.path("d1")).Nlink, lstat(t, d.path("d2")).Nlink; n1 != 3 || n2 != 2 {
				t.Fatalf("%s: parents' nlink %d %d, want 3 2", when, n1, n2)
			}
			if st := lstat(t, d.path("d1/file/..")); st.Ino != lstat(t, d.path("d1")).Ino {
				t.Fatalf("%s: exchanged directory's .. is inode %d, want d1", when, st.Ino)
			}
			wantNames(t, d.path("d1/file"), "sub")
			wantBytes(t, when, readFile(t, d.path("d2/dir")), []byte("file"))
		}
		check("after exchange")
		d.remount()
		check("after remount")
		err := unix.Renameat2(unix.AT_FDCWD, d.path("d1/file"), unix.AT_FDCWD, d.path("d2/none"), unix.RENAME_EXCHANGE)
		wantErrno(t, "exchange with a missing name", err, unix.ENOENT)
	}},
	{name: "HardLinks", fn: func(t *testing.T, d *testDrive) {
		must(t, os.Mkdir(d.path("sub"), 0o755))
		a, b, c := d.path("a"), d.path("b"), d.path("sub/c")
		writeFile(t, a, []byte("one"))
		must(t, unix.Link(a, b))
		must(t, unix.Link(b, c))
		ino := lstat(t, a).Ino
		for _, p := range []string{a, b, c} {
			if st := lstat(t, p); st.Nlink != 3 || st.Ino != ino {
				t.Fatalf("%s: nlink %d ino %d, want 3 %d", p, st.Nlink, st.Ino, ino)
			}
		}
		writeFile(t, b, []byte("two"))
		wantBytes(t, "through another link", readFile(t, c), []byte("two"))
		wantErrno(t, "link over an existing name", unix.Link(a, c), unix.EEXIST)
		wantErrno(t, "link a directory", unix.Link(d.path("sub"), d.path("sub2")), unix.EPERM)
		wantErrno(t, "link a missing file", unix.Link(d.path("none"), d.path("x")), unix.ENOENT)
		must(t, unix.Unlink(a))
		for _, p := range []string{b, c} {
			if st := lstat(t, p); st.Nlink != 2 {
				t.Fatalf("%s: nlink %d after unlink, want 2", p, st.Nlink)
			}
		}
		d.remount()
		for _, p := range []string{b, c} {
			if st := lstat(t, p); st.Nlink != 2 || st.Ino != ino {
				t.Fatalf("%s after remount: nlink %d ino %d, want 2 %d", p, st.Nlink, st.Ino, ino)
			}
		}
		must(t, unix.Unlink(b))
		if st := lstat(t, c); st.Nlink != 1 {
			t.Fatalf("nlink %d, want 1", st.Nlink)
		}
		wantBytes(t, "last link", readFile(t, c), []byte("two"))
		must(t, unix.Unlink(c))
		waitFor(t, "the file to be purged", func() bool {
			s := d.tree.Stats()
			return s.Chunks == 0 && s.Inodes == 2
		})
	}},
	{name: "DirNlink", fn: func(t *testing.T, d *testDrive) {
		if n := lstat(t, d.mnt).Nlink; n != 2 {
			t.Fatalf("empty root nlink %d, want 2", n)
		}
		must(t, os.Mkdir(d.path("d"), 0o755))
		if n := lstat(t, d.path("d")).Nlink; n != 2 {
			t.Fatalf("new directory nlink %d, want 2", n)
		}
		for _, p := range []string{"d/x", "d/y", "d/z"} {
			must(t, os.Mkdir(d.path(p), 0o755))
		}
		writeFile(t, d.path("d/f"), nil)
		must(t, unix.Mkfifo(d.path("d/p"), 0o644))
		if n := lstat(t, d.path("d")).Nlink; n != 5 {
			t.Fatalf("nlink %d with 3 subdirectories, want 5", n)
		}
		must(t, unix.Rmdir(d.path("d/x")))
		if n := lstat(t, d.path("d")).Nlink; n != 4 {
			t.Fatalf("nlink %d after rmdir, want 4", n)
		}
		if n := lstat(t, d.mnt).Nlink; n != 3 {
			t.Fatalf("root nlink %d, want 3", n)
		}
		wantErrno(t, "rmdir a non-empty directory", unix.Rmdir(d.path("d")), unix.ENOTEMPTY)
		wantErrno(t, "rmdir a file", unix.Rmdir(d.path("d/f")), unix.ENOTDIR)
		wantErrno(t, "unlink a directory", unix.Unlink(d.path("d/y")), unix.EISDIR)
		wantErrno(t, "rmdir a missing directory", unix.Rmdir(d.path("d/none")), unix.ENOENT)
		wantErrno(t, "mkdir over a directory", unix.Mkdir(d.path("d/y"), 0o755), unix.EEXIST)
		wantErrno(t, "mkdir over a file", unix.Mkdir(d.path("d/f"), 0o755), unix.EEXIST)
		d.remount()
		if n := lstat(t, d.path("d")).Nlink; n != 4 {
			t.Fatalf("nlink %d after remount, want 4", n)
		}
	}},
	{name: "RmdirOpen", fn: func(t *testing.T, d *testDrive) {
		must(t, os.Mkdir(d.path("d"), 0o755))
		fd := open(t, d.path("d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		must(t, unix.Rmdir(d.path("d")))
		if st := fstat(t, fd); st.Nlink != 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Fatalf("removed directory: nlink %d mode %o", st.Nlink, st.Mode)
		}
		_, err := unix.Openat(fd, "new", unix.O_CREAT|unix.O_WRONLY, 0o644)
		wantErrno(t, "create in a removed directory", err, unix.ENOENT)
		closeFD(t, fd)
		waitFor(t, "the directory to be purged", func() bool { return d.tree.Stats().Inodes == 1 })
	}},
	{name: "Symlink", fn: func(t *testing.T, d *testDrive) {
		l := d.path("l")
		must(t, os.Symlink("target/x", l))
		if got, err := os.Readlink(l); err != nil || got != "target/x" {
			t.Fatalf("readlink: %q, %v", got, err)
		}
		if st := lstat(t, l); st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Size != 8 || st.Nlink != 1 {
			t.Fatalf("lstat: mode %o size %d nlink %d", st.Mode, st.Size, st.Nlink)
		}
		wantErrno(t, "symlink over a name", unix.Symlink("x", l), unix.EEXIST)
		writeFile(t, d.path("f"), []byte("data"))
		_, err := unix.Readlink(d.path("f"), make([]byte, 10))
		wantErrno(t, "readlink of a file", err, unix.EINVAL)
		must(t, os.Symlink("f", d.path("lf")))
		wantBytes(t, "through a symlink", readFile(t, d.path("lf")), []byte("data"))
		var st unix.Stat_t
		wantErrno(t, "stat a dangling symlink", unix.Stat(l, &st), unix.ENOENT)
		long := strings.Repeat("a/", 2047) + "b" // 4095 bytes, the longest target
		must(t, os.Symlink(long, d.path("long")))
		d.remount()
		if got, err := os.Readlink(d.path("long")); err != nil || got != long {
			t.Fatalf("long target after remount: %d bytes, %v", len(got), err)
		}
		if got, _ := os.Readlink(l); got != "target/x" {
			t.Fatalf("readlink after remount: %q", got)
		}
	}},
	{name: "Mknod", fn: func(t *testing.T, d *testDrive) {
		must(t, unix.Mkfifo(d.path("fifo"), 0o640))
		if st := lstat(t, d.path("fifo")); st.Mode != unix.S_IFIFO|0o640 {
			t.Fatalf("fifo mode %o", st.Mode)
		}
		dev := unix.Mkdev(1, 3)
		must(t, unix.Mknod(d.path("null"), unix.S_IFCHR|0o600, int(dev)))
		must(t, unix.Mknod(d.path("sock"), unix.S_IFSOCK|0o600, 0))
		must(t, unix.Mknod(d.path("reg"), unix.S_IFREG|0o600, 0))
		d.remount()
		if st := lstat(t, d.path("null")); st.Mode != unix.S_IFCHR|0o600 || st.Rdev != dev {
			t.Fatalf("device: mode %o rdev %#x, want rdev %#x", st.Mode, st.Rdev, dev)
		}
		if st := lstat(t, d.path("sock")); st.Mode != unix.S_IFSOCK|0o600 {
			t.Fatalf("socket mode %o", st.Mode)
		}
		if st := lstat(t, d.path("reg")); st.Mode != unix.S_IFREG|0o600 || st.Size != 0 {
			t.Fatalf("regular file mode %o", st.Mode)
		}
		if st := lstat(t, d.path("fifo")); st.Mode != unix.S_IFIFO|0o640 {
			t.Fatalf("fifo mode %o after remount", st.Mode)
		}
		wantErrno(t, "mknod over a name", unix.Mkfifo(d.path("fifo"), 0o600), unix.EEXIST)
	}},
	{name: "Chmod", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, []byte("x"))
		for _, m := range []uint32{0, 0o7777, 0o4755, 0o2700, 0o1777, 0o644} {
			must(t, unix.Chmod(p, m))
			if st := lstat(t, p); st.Mode != unix.S_IFREG|m {
				t.Fatalf("after chmod %o: mode %o", m, st.Mode)
			}
		}
		must(t, unix.Chmod(p, 0))
		// Root opens a 0000 file anyway (CAP_DAC_OVERRIDE).
		wantBytes(t, "mode 0000, as root", readFile(t, p), []byte("x"))
		must(t, os.Mkdir(d.path("d"), 0o755))
		must(t, unix.Chmod(d.path("d"), 0))
		d.remount()
		if st := lstat(t, p); st.Mode != unix.S_IFREG {
			t.Fatalf("after remount: mode %o", st.Mode)
		}
		if st := lstat(t, d.path("d")); st.Mode != unix.S_IFDIR {
			t.Fatalf("directory after remount: mode %o", st.Mode)
		}
		before := lstat(t, p)
		time.Sleep(2 * time.Millisecond)
		must(t, unix.Chmod(p, 0o600))
		if st := lstat(t, p); unix.TimespecToNsec(st.Ctim) <= unix.TimespecToNsec(before.Ctim) || st.Mtim != before.Mtim {
			t.Fatalf("chmod must change ctime only: ctime %v -> %v, mtime %v -> %v", before.Ctim, st.Ctim, before.Mtim, st.Mtim)
		}
	}},
	{name: "SetgidDir", fn: func(t *testing.T, d *testDrive) {
		dir := d.path("g")
		must(t, os.Mkdir(dir, 0o755))
		must(t, unix.Chown(dir, -1, 1234))
		must(t, unix.Chmod(dir, 0o2775))
		if st := lstat(t, dir); st.Mode != unix.S_IFDIR|0o2775 || st.Gid != 1234 {
			t.Fatalf("dir mode %o gid %d", st.Mode, st.Gid)
		}
		writeFile(t, filepath.Join(dir, "f"), nil)
		must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
		must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
		must(t, os.Symlink("x", filepath.Join(dir, "l")))
		for _, n := range []string{"f", "fifo", "l"} {
			if st := lstat(t, filepath.Join(dir, n)); st.Gid != 1234 || st.Mode&unix.S_ISGID != 0 {
				t.Fatalf("%s: gid %d mode %o, want gid 1234 without setgid", n, st.Gid, st.Mode)
			}
		}
		if st := lstat(t, filepath.Join(dir, "sub")); st.Gid != 1234 || st.Mode != unix.S_IFDIR|unix.S_ISGID|0o755 {
			t.Fatalf("subdirectory: gid %d mode %o, want 1234 and %o", st.Gid, st.Mode, unix.S_IFDIR|unix.S_ISGID|0o755)
		}
		writeFile(t, filepath.Join(dir, "sub/deeper"), nil)
		if st := lstat(t, filepath.Join(dir, "sub/deeper")); st.Gid != 1234 {
			t.Fatalf("file two levels down: gid %d", st.Gid)
		}
		// Outside the setgid directory, the creator's group.
		writeFile(t, d.path("plain"), nil)
		if st := lstat(t, d.path("plain")); st.Gid != uint32(os.Getgid()) {
			t.Fatalf("gid %d outside, want %d", st.Gid, os.Getgid())
		}
	}},
	{name: "Chown", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, []byte("x"))
		must(t, unix.Chown(p, 1000, 2000))
		if st := lstat(t, p); st.Uid != 1000 || st.Gid != 2000 {
			t.Fatalf("uid %d gid %d", st.Uid, st.Gid)
		}
		must(t, unix.Chown(p, -1, 3000))
		if st := lstat(t, p); st.Uid != 1000 || st.Gid != 3000 {
			t.Fatalf("after chown -1: uid %d gid %d", st.Uid, st.Gid)
		}
		must(t, os.Symlink("f", d.path("l")))
		must(t, unix.Lchown(d.path("l"), 7, 8))
		if st := lstat(t, d.path("l")); st.Uid != 7 || st.Gid != 8 {
			t.Fatalf("symlink: uid %d gid %d", st.Uid, st.Gid)
		}
		if st := lstat(t, p); st.Uid != 1000 {
			t.Fatalf("lchown followed the link")
		}
		// chown clears setuid, and setgid with group execute, of a file.
		must(t, unix.Chmod(p, 0o6755))
		must(t, unix.Chown(p, 1001, -1))
		if st := lstat(t, p); st.Mode != unix.S_IFREG|0o755 {
			t.Fatalf("after chown of a setuid file: mode %o, want %o", st.Mode, unix.S_IFREG|0o755)
		}
		d.remount()
		if st := lstat(t, p); st.Uid != 1001 || st.Gid != 3000 || st.Mode != unix.S_IFREG|0o755 {
			t.Fatalf("after remount: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
		}
	}},
	{name: "Utimens", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, []byte("x"))
		ts := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 123_456_789}, {Sec: 2_000_000_000, Nsec: 987_654_321}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0))
		st := lstat(t, p)
		if st.Atim != ts[0] || st.Mtim != ts[1] {
			t.Fatalf("atime %v mtime %v, want %v %v", st.Atim, st.Mtim, ts[0], ts[1])
		}
		before := time.Now()
		time.Sleep(2 * time.Millisecond)
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}, 0))
		st = lstat(t, p)
		if at := time.Unix(st.Atim.Unix()); at.Before(before) || time.Since(at) > time.Minute {
			t.Fatalf("UTIME_NOW gave atime %v, want about %v", at, before)
		}
		if st.Mtim != ts[1] {
			t.Fatalf("UTIME_OMIT changed mtime to %v", st.Mtim)
		}
		if ct := time.Unix(st.Ctim.Unix()); ct.Before(before) {
			t.Fatalf("ctime %v not updated", ct)
		}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0))
		st2 := lstat(t, p)
		if st2.Atim != st.Atim || time.Unix(st2.Mtim.Unix()).Before(before) {
			t.Fatalf("UTIME_OMIT/UTIME_NOW: atime %v -> %v, mtime %v", st.Atim, st2.Atim, st2.Mtim)
		}
		// Times before 1970 and on a symlink.
		must(t, os.Symlink("f", d.path("l")))
		old := []unix.Timespec{{Sec: -1, Nsec: 5}, {Sec: -86400, Nsec: 999_999_999}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, d.path("l"), old, unix.AT_SYMLINK_NOFOLLOW))
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0))
		d.remount()
		if st := lstat(t, d.path("l")); st.Atim != old[0] || st.Mtim != old[1] {
			t.Fatalf("symlink after remount: atime %v mtime %v, want %v", st.Atim, st.Mtim, old)
		}
		if st := lstat(t, p); st.Atim != ts[0] || st.Mtim != ts[1] {
			t.Fatalf("after remount: atime %v mtime %v, want %v %v", st.Atim, st.Mtim, ts[0], ts[1])
		}
	}},
	// Access times follow Linux's default, relatime: a read or a listing
	// sets the access time if it is not later than the modification or
	// change time.
	{name: "Relatime", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		dir := d.path("d")
		writeFile(t, p, []byte("data"))
		must(t, os.Mkdir(dir, 0o755))
		old := []unix.Timespec{{Sec: 1000}, {Sec: 2000}} // atime before mtime
		must(t, unix.UtimesNano(p, old))
		must(t, unix.UtimesNano(dir, old))
		d.remount() // nothing of f in the page cache: the read reaches us
		before := time.Now().UnixNano()
		readFile(t, p)
		if _, err := os.ReadDir(dir); err != nil {
			t.Fatal(err)
		}
		for _, x := range []string{p, dir} {
			if st := lstat(t, x); st.Atim.Nano() < before || st.Mtim.Sec != 2000 {
				t.Fatalf("%s after a read: atime %d (read at %d), mtime %d s", x, st.Atim.Nano(), before, st.Mtim.Sec)
			}
		}
		// Read again: the access time is later than the other times now.
		atime := lstat(t, p).Atim
		d.remount()
		readFile(t, p)
		if st := lstat(t, p); st.Atim != atime {
			t.Fatalf("a second read moved atime from %v to %v", atime, st.Atim)
		}
		// chown(2) with both IDs -1 changes the ctime alone.
		ctime := lstat(t, p).Ctim
		time.Sleep(10 * time.Millisecond) // a visible step of the clock
		must(t, unix.Chown(p, -1, -1))
		if st := lstat(t, p); st.Ctim == ctime {
			t.Fatalf("chown(-1, -1) left ctime at %v", ctime)
		}
	}},
	{name: "WriteTimes", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, []byte("x"))
		ts := []unix.Timespec{{Sec: 1000}, {Sec: 2000}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0))
		before := time.Now().Add(-time.Second)
		writeFile(t, p, []byte("y"))
		st := lstat(t, p)
		if mt := time.Unix(st.Mtim.Unix()); mt.Before(before) {
			t.Fatalf("write left mtime at %v", mt)
		}
		dirBefore := lstat(t, d.mnt)
		time.Sleep(2 * time.Millisecond)
		writeFile(t, d.path("g"), nil)
		if st := lstat(t, d.mnt); unix.TimespecToNsec(st.Mtim) <= unix.TimespecToNsec(dirBefore.Mtim) {
			t.Fatalf("create left the directory's mtime at %v", st.Mtim)
		}
	}},
	{name: "Xattr", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, nil)
		must(t, unix.Setxattr(p, "user.a", []byte("value-a"), 0))
		must(t, unix.Setxattr(p, "user.empty", nil, 0))
		buf := make([]byte, 100)
		n, err := unix.Getxattr(p, "user.a", buf)
		if err != nil || string(buf[:n]) != "value-a" {
			t.Fatalf("getxattr: %q, %v", buf[:n], err)
		}
		if n, err := unix.Getxattr(p, "user.a", nil); err != nil || n != 7 {
			t.Fatalf("getxattr size: %d, %v", n, err)
		}
		if n, err := unix.Getxattr(p, "user.empty", buf); err != nil || n != 0 {
			t.Fatalf("empty value: %d, %v", n, err)
		}
		_, err = unix.Getxattr(p, "user.a", make([]byte, 3))
		wantErrno(t, "getxattr into a small buffer", err, unix.ERANGE)
		_, err = unix.Getxattr(p, "user.none", buf)
		wantErrno(t, "getxattr of a missing name", err, unix.ENODATA)
		wantErrno(t, "XATTR_CREATE on an existing name", unix.Setxattr(p, "user.a", []byte("x"), unix.XATTR_CREATE), unix.EEXIST)
		wantErrno(t, "XATTR_REPLACE on a missing name", unix.Setxattr(p, "user.b", []byte("x"), unix.XATTR_REPLACE), unix.ENODATA)
		must(t, unix.Setxattr(p, "user.a", []byte("replaced"), unix.XATTR_REPLACE))
		must(t, unix.Setxattr(p, "user.b", []byte("b"), unix.XATTR_CREATE))
		// A namespace Linux does not know is refused, as ext4 and tmpfs do.
		for _, name := range []string{"bogus.x", "system.other", "user"} {
			wantErrno(t, "setxattr "+name, unix.Setxattr(p, name, []byte("x"), 0), unix.EOPNOTSUPP)
			_, err = unix.Getxattr(p, name, buf)
			wantErrno(t, "getxattr "+name, err, unix.EOPNOTSUPP)
			wantErrno(t, "removexattr "+name, unix.Removexattr(p, name), unix.EOPNOTSUPP)
		}
		list := func() []string {
			t.Helper()
			sz, err := unix.Listxattr(p, nil)
			must(t, err)
			b := make([]byte, sz)
			n, err := unix.Listxattr(p, b)
			must(t, err)
			var names []string
			for _, s := range strings.Split(string(b[:n]), "\x00") {
				if s != "" {
					names = append(names, s)
				}
			}
			slices.Sort(names)
			return names
		}
		if got := list(); !slices.Equal(got, []string{"user.a", "user.b", "user.empty"}) {
			t.Fatalf("listxattr: %q", got)
		}
		_, err = unix.Listxattr(p, make([]byte, 5))
		wantErrno(t, "listxattr into a small buffer", err, unix.ERANGE)
		must(t, unix.Removexattr(p, "user.b"))
		wantErrno(t, "removexattr of a missing name", unix.Removexattr(p, "user.b"), unix.ENODATA)
		big := randBytes(13, 64<<10)
		must(t, unix.Setxattr(p, "user.big", big, 0))
		got := make([]byte, len(big))
		if n, err := unix.Getxattr(p, "user.big", got); err != nil || n != len(big) || !bytes.Equal(got, big) {
			t.Fatalf("64 KiB value: %d, %v", n, err)
		}
		wantErrno(t, "name longer than 255", unix.Setxattr(p, "user."+strings.Repeat("n", 251), nil, 0), unix.ERANGE)
		must(t, os.Mkdir(d.path("d"), 0o755))
		must(t, unix.Setxattr(d.path("d"), "user.dir", []byte("d"), 0))
		d.remount()
		if got := list(); !slices.Equal(got, []string{"user.a", "user.big", "user.empty"}) {
			t.Fatalf("listxattr after remount: %q", got)
		}
		n, err = unix.Getxattr(p, "user.a", buf)
		if err != nil || string(buf[:n]) != "replaced" {
			t.Fatalf("after remount: %q, %v", buf[:n], err)
		}
		if n, err := unix.Getxattr(d.path("d"), "user.dir", buf); err != nil || string(buf[:n]) != "d" {
			t.Fatalf("directory xattr after remount: %q, %v", buf[:n], err)
		}
		// Removing the file removes its attributes with it.
		must(t, unix.Unlink(p))
		waitFor(t, "the file to be purged", func() bool { return d.tree.Stats().Inodes == 2 })
	}},
	{name: "XattrTrustedList", fn: func(t *testing.T, d *testDrive) {
		// Linux lists trusted.* names only to a caller with CAP_SYS_ADMIN
		// (ext4 and tmpfs filter them); FUSE passes listxattr(2) on.
		must(t, os.Chmod(filepath.Dir(d.mnt), 0o755)) // t.TempDir makes it 0700
		p := d.path("f")
		writeFile(t, p, nil)
		must(t, unix.Setxattr(p, "trusted.t", []byte("t"), 0))
		must(t, unix.Setxattr(p, "user.u", []byte("u"), 0))
		list := func() ([]string, error) {
			sz, err := unix.Listxattr(p, nil)
			if err != nil {
				return nil, err
			}
			b := make([]byte, sz)
			n, err := unix.Listxattr(p, b)
			if err != nil {
				return nil, err
			}
			if n != sz {
				return nil, fmt.Errorf("listxattr: size %d, then %d bytes", sz, n)
			}
			names := strings.Split(strings.TrimSuffix(string(b[:n]), "\x00"), "\x00")
			slices.Sort(names)
			return names, nil
		}
		names, err := list()
		if err != nil || !slices.Equal(names, []string{"trusted.t", "user.u"}) {
			t.Fatalf("listxattr as root: %q, %v", names, err)
		}
		for _, uid := range []int{0, 1000} {
			withoutSysAdmin(t, uid, uid, func() error {
				names, err := list()
				if err != nil || !slices.Equal(names, []string{"user.u"}) {
					return fmt.Errorf("listxattr without CAP_SYS_ADMIN: %q, %v", names, err)
				}
				return nil
			})
		}
	}},
	{name: "Statfs", opt: func(o *Options) { o.Quota = 16 * mib }, fn: func(t *testing.T, d *testDrive) {
		var st unix.Statfs_t
		must(t, unix.Statfs(d.mnt, &st))
		if st.Type != unix.FUSE_SUPER_MAGIC || st.Bsize != 4096 || st.Frsize != 4096 || st.Namelen != 255 {
			t.Fatalf("statfs: type %#x bsize %d frsize %d namelen %d", st.Type, st.Bsize, st.Frsize, st.Namelen)
		}
		if st.Blocks != 16*mib/4096 {
			t.Fatalf("%d blocks, want the quota, %d", st.Blocks, 16*mib/4096)
		}
		if st.Bfree != st.Blocks || st.Bavail != st.Bfree {
			t.Fatalf("empty drive: bfree %d bavail %d of %d", st.Bfree, st.Bavail, st.Blocks)
		}
		writeFile(t, d.path("f"), randBytes(14, 4*mib))
		must(t, unix.Statfs(d.mnt, &st))
		if used := st.Blocks - st.Bfree; used != 4*mib/4096 {
			t.Fatalf("4 MiB written take %d blocks, want %d", used, 4*mib/4096)
		}
		// Holes take no space: a sparse write far out fits.
		fd := open(t, d.path("big"), unix.O_CREAT|unix.O_WRONLY, 0o644)
		pwrite(t, fd, []byte("x"), 1<<40)
		must(t, unix.Ftruncate(fd, 0))
		must(t, unix.Truncate(d.path("big"), 1<<50)) // and so does a truncate that grows
		must(t, unix.Ftruncate(fd, 0))
		// Writing past the quota fails with ENOSPC.
		d.logs.expectLog(func(r logRec) bool { return strings.Contains(r.Attrs["err"], ErrQuota.Error()) })
		var written int64
		var err error
		for err == nil && written < 32*mib {
			var n int
			// Distinct data: identical chunks would be stored once.
			n, err = unix.Pwrite(fd, randBytes(uint64(1000+written), mib), written)
			written += int64(max(n, 0))
		}
		wantErrno(t, "write past the quota", err, unix.ENOSPC)
		if written < 10*mib || written > 12*mib {
			t.Fatalf("%d bytes written before ENOSPC, want 10 to 12 MiB", written)
		}
		// Punching holes frees space, on a full drive too.
		must(t, unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, written))
		must(t, unix.Fsync(fd))
		must(t, unix.Statfs(d.mnt, &st))
		if used := st.Blocks - st.Bfree; used != 4*mib/4096 {
			t.Fatalf("after punching the file's data: %d blocks used, want %d", used, 4*mib/4096)
		}
		closeFD(t, fd)
		must(t, unix.Unlink(d.path("big")))
		waitFor(t, "space to be freed", func() bool {
			must(t, unix.Statfs(d.mnt, &st))
			return st.Blocks-st.Bfree == 4*mib/4096
		})
	}},
	{name: "Fsync", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		data := randBytes(15, mib+10)
		pwrite(t, fd, data, 0)
		must(t, unix.Fsync(fd))
		if c := d.tree.Stats().Chunks; c != 2 {
			t.Fatalf("%d chunks after fsync, want 2", c)
		}
		pwrite(t, fd, []byte("tail"), int64(len(data)))
		must(t, unix.Fdatasync(fd))
		// What fsync made durable is in the store, with the size.
		in, err := d.tree.Inode(context.Background(), peerdrive.Ino(fstat(t, fd).Ino))
		must(t, err)
		if in.Size != uint64(len(data)+4) {
			t.Fatalf("stored size %d, want %d", in.Size, len(data)+4)
		}
		dfd := open(t, d.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		must(t, unix.Fsync(dfd))
		closeFD(t, dfd)
		unix.Sync()
		closeFD(t, fd)
	}},
	{name: "Locks", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		writeFile(t, p, []byte("locked"))
		fd1 := open(t, p, unix.O_RDWR, 0)
		fd2 := open(t, p, unix.O_RDWR, 0)
		defer closeFD(t, fd1)
		defer closeFD(t, fd2)
		must(t, unix.Flock(fd1, unix.LOCK_EX))
		wantErrno(t, "flock held by another open file", unix.Flock(fd2, unix.LOCK_EX|unix.LOCK_NB), unix.EWOULDBLOCK)
		must(t, unix.Flock(fd1, unix.LOCK_UN))
		must(t, unix.Flock(fd2, unix.LOCK_SH|unix.LOCK_NB))
		must(t, unix.Flock(fd1, unix.LOCK_SH|unix.LOCK_NB))
		must(t, unix.Flock(fd2, unix.LOCK_UN))
		must(t, unix.Flock(fd1, unix.LOCK_UN))
		// Open file description locks conflict between descriptors.
		wl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 3}
		must(t, unix.FcntlFlock(uintptr(fd1), unix.F_OFD_SETLK, &wl))
		rl := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 1, Len: 1}
		wantErrno(t, "conflicting OFD lock", unix.FcntlFlock(uintptr(fd2), unix.F_OFD_SETLK, &rl), unix.EAGAIN)
		q := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 0}
		must(t, unix.FcntlFlock(uintptr(fd2), unix.F_OFD_GETLK, &q))
		if q.Type != unix.F_WRLCK || q.Start != 0 || q.Len != 3 {
			t.Fatalf("F_OFD_GETLK: %+v", q)
		}
		rl.Start = 3
		must(t, unix.FcntlFlock(uintptr(fd2), unix.F_OFD_SETLK, &rl))
		// POSIX record locks of one process do not conflict.
		pl := unix.Flock_t{Type: unix.F_WRLCK, Start: 10, Len: 5}
		must(t, unix.FcntlFlock(uintptr(fd1), unix.F_SETLK, &pl))
		must(t, unix.FcntlFlock(uintptr(fd2), unix.F_SETLK, &pl))
		pl.Type = unix.F_UNLCK
		must(t, unix.FcntlFlock(uintptr(fd1), unix.F_SETLK, &pl))
	}},
	{name: "SeekDataHole", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		defer closeFD(t, fd)
		size := int64(5*mib/2 + 100)
		pwrite(t, fd, randBytes(16, mib), 0)
		pwrite(t, fd, randBytes(17, int(size-2*mib)), 2*mib)
		seek := func(off int64, whence int) (int64, error) { return unix.Seek(fd, off, whence) }
		for _, c := range []struct {
			off, whence int
			want        int64
		}{
			{0, unix.SEEK_DATA, 0},
			{10, unix.SEEK_DATA, 10},
			{0, unix.SEEK_HOLE, mib},
			{mib, unix.SEEK_DATA, 2 * mib},
			{mib + 5, unix.SEEK_HOLE, mib + 5},
			{2 * mib, unix.SEEK_HOLE, size},
			{2*mib + 1, unix.SEEK_DATA, 2*mib + 1},
		} {
			got, err := seek(int64(c.off), c.whence)
			if err != nil || got != c.want {
				t.Fatalf("lseek(%d, %d): %d, %v, want %d", c.off, c.whence, got, err, c.want)
			}
		}
		_, err := seek(size, unix.SEEK_DATA)
		wantErrno(t, "SEEK_DATA at EOF", err, unix.ENXIO)
		_, err = seek(size+10, unix.SEEK_HOLE)
		wantErrno(t, "SEEK_HOLE past EOF", err, unix.ENXIO)
		// A hole at the end of the file.
		must(t, unix.Ftruncate(fd, 4*mib))
		if got, err := seek(2*mib+200, unix.SEEK_HOLE); err != nil || got != size {
			t.Fatalf("SEEK_HOLE into the trailing hole: %d, %v, want %d", got, err, size)
		}
		_, err = seek(3*mib, unix.SEEK_DATA)
		wantErrno(t, "SEEK_DATA in the trailing hole", err, unix.ENXIO)
		// Ordinary seeks past EOF are allowed.
		if got, err := seek(10*mib, unix.SEEK_SET); err != nil || got != 10*mib {
			t.Fatalf("SEEK_SET past EOF: %d, %v", got, err)
		}
		if got, err := seek(-1, unix.SEEK_END); err != nil || got != 4*mib-1 {
			t.Fatalf("SEEK_END: %d, %v", got, err)
		}
	}},
	{name: "Fallocate", fn: func(t *testing.T, d *testDrive) {
		p := d.path("f")
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		data := randBytes(18, 3*mib)
		pwrite(t, fd, data, 0)
		must(t, unix.Fallocate(fd, 0, 3*mib, mib))
		if st := fstat(t, fd); st.Size != 4*mib {
			t.Fatalf("size %d after fallocate, want %d", st.Size, 4*mib)
		}
		must(t, unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 4*mib, mib))
		if st := fstat(t, fd); st.Size != 4*mib {
			t.Fatalf("size %d after KEEP_SIZE, want %d", st.Size, 4*mib)
		}
		want := append(slices.Clone(data), make([]byte, mib)...)
		must(t, unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 100, mib))
		clear(want[100 : 100+mib])
		must(t, unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 2*mib+7, 3))
		clear(want[2*mib+7 : 2*mib+10])
		must(t, unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 4*mib-10, 20))
		want = append(want, make([]byte, 10)...)
		wantBytes(t, "after fallocate", pread(t, fd, len(want)+10, 0), want)
		wantErrno(t, "PUNCH_HOLE without KEEP_SIZE", unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE, 0, 1), unix.EOPNOTSUPP)
		wantErrno(t, "COLLAPSE_RANGE", unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, mib), unix.EOPNOTSUPP)
		closeFD(t, fd)
		d.remount()
		wantBytes(t, "after remount", readFile(t, p), want)
	}},
	{name: "FallocateTimes", fn: func(t *testing.T, d *testDrive) {
		// Any fallocate that succeeds marks the file modified on ext4 and
		// tmpfs, also one that writes nothing: a reservation inside the
		// size or with KEEP_SIZE, or a range past the end. Found by
		// comparing with ext4 and tmpfs (pjdfstest does not look).
		p := d.path("f")
		writeFile(t, p, []byte("0123456789"))
		fd := open(t, p, unix.O_RDWR, 0)
		defer closeFD(t, fd)
		old := []unix.Timespec{{Sec: 1000}, {Sec: 2000}}
		for _, c := range []struct {
			name      string
			mode      uint32
			off, size int64
		}{
			{"inside the size", 0, 0, 5},
			{"KEEP_SIZE past the end", unix.FALLOC_FL_KEEP_SIZE, 0, 1 << 20},
			{"PUNCH_HOLE past the end", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 100, 10},
			{"ZERO_RANGE|KEEP_SIZE past the end", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, 100, 10},
		} {
			must(t, unix.UtimesNano(p, old))
			ctime := fstat(t, fd).Ctim
			time.Sleep(10 * time.Millisecond) // a visible step of the clock
			before := time.Now().Add(-time.Second).UnixNano()
			must(t, unix.Fallocate(fd, c.mode, c.off, c.size))
			st := fstat(t, fd)
			if st.Mtim.Nano() < before || unix.TimespecToNsec(st.Ctim) <= unix.TimespecToNsec(ctime) {
				t.Errorf("fallocate %s: mtime %v, ctime %v (was %v)", c.name, st.Mtim, st.Ctim, ctime)
			}
			if st.Size != 10 || st.Atim.Sec != 1000 {
				t.Errorf("fallocate %s: size %d, atime %v", c.name, st.Size, st.Atim)
			}
		}
	}},
	{name: "StatxBtime", fn: func(t *testing.T, d *testDrive) {
		// statx(2) reports the birth time, as on ext4 and tmpfs; it stays
		// while the other times move. The basic fields agree with stat(2).
		statx := func(p string) unix.Statx_t {
			t.Helper()
			var sx unix.Statx_t
			must(t, unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx))
			return sx
		}
		before := time.Now().Add(-time.Second).UnixNano()
		p := d.path("f")
		writeFile(t, p, []byte("data"))
		must(t, unix.Mknod(d.path("c"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 7))))
		after := time.Now().Add(time.Second).UnixNano()
		sx := statx(p)
		btime := unix.TimespecToNsec(unix.Timespec{Sec: sx.Btime.Sec, Nsec: int64(sx.Btime.Nsec)})
		if sx.Mask&unix.STATX_BTIME == 0 || btime < before || btime > after {
			t.Fatalf("statx: mask %#x, btime %d, made between %d and %d", sx.Mask, btime, before, after)
		}
		must(t, unix.UtimesNano(p, []unix.Timespec{{Sec: 1000}, {Sec: 2000}}))
		writeFile(t, p, []byte("more data"))
		sx2 := statx(p)
		if sx2.Btime != sx.Btime || sx2.Mtime.Sec < before/1e9 {
			t.Fatalf("after utimes and a write: btime %v (was %v), mtime %v", sx2.Btime, sx.Btime, sx2.Mtime)
		}
		st := lstat(t, p)
		if sx2.Size != uint64(st.Size) || sx2.Blocks != uint64(st.Blocks) || uint32(sx2.Mode) != st.Mode || sx2.Ino != st.Ino || uint64(sx2.Nlink) != st.Nlink {
			t.Fatalf("statx %+v disagrees with stat %+v", sx2, st)
		}
		if c := statx(d.path("c")); c.Rdev_major != 5 || c.Rdev_minor != 7 || c.Mode&unix.S_IFMT != unix.S_IFCHR {
			t.Fatalf("statx of a device: %d:%d, mode %o", c.Rdev_major, c.Rdev_minor, c.Mode)
		}
	}},
	{name: "ReadlinkAtime", fn: func(t *testing.T, d *testDrive) {
		// readlink(2) touches the link's access time under relatime, as
		// on ext4 and tmpfs; FUSE leaves it to the server.
		l := d.path("l")
		must(t, os.Symlink("target", l))
		old := []unix.Timespec{{Sec: 1000}, {Sec: 2000}} // atime before mtime
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, l, old, unix.AT_SYMLINK_NOFOLLOW))
		before := time.Now().Add(-time.Second).UnixNano()
		if got, err := os.Readlink(l); err != nil || got != "target" {
			t.Fatalf("readlink: %q, %v", got, err)
		}
		st := lstat(t, l)
		if st.Atim.Nano() < before || st.Mtim.Sec != 2000 {
			t.Fatalf("after readlink: atime %v, mtime %v", st.Atim, st.Mtim)
		}
		// Again: the access time is now later than the other times.
		if _, err := os.Readlink(l); err != nil {
			t.Fatal(err)
		}
		if again := lstat(t, l); again.Atim != st.Atim {
			t.Fatalf("a second readlink moved atime from %v to %v", st.Atim, again.Atim)
		}
	}},
	{name: "PurgeOrphansGoesOn", fn: func(t *testing.T, d *testDrive) {
		// An orphan that cannot be purged (here a record naming a file
		// that still has a link) neither stops the others being purged
		// nor is lost: the next mount tries again (the node logs it and
		// mounts; it refused to mount before).
		p := d.path("f")
		writeFile(t, p, []byte("keep me"))
		linked := peerdrive.Ino(lstat(t, p).Ino)
		const gone = peerdrive.Ino(1 << 40)           // no such inode: its record just goes
		orphanKey := func(ino peerdrive.Ino) []byte { // docs/format.md: 'O' ‖ inode, big-endian
			return binary.BigEndian.AppendUint64([]byte{'O'}, uint64(ino))
		}
		must(t, d.db.Update(0, func(tx *store.Txn) error {
			if err := tx.Set(orphanKey(linked), nil); err != nil {
				return err
			}
			return tx.Set(orphanKey(gone), nil)
		}))
		ctx := context.Background()
		if err := d.fs.PurgeOrphans(ctx); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("orphan %d", linked)) {
			t.Fatalf("PurgeOrphans = %v, want an error naming orphan %d", err, linked)
		}
		left, err := d.tree.Orphans(ctx)
		if err != nil || !slices.Equal(left, []peerdrive.Ino{linked}) {
			t.Fatalf("orphans left: %v, %v; want only %d", left, err, linked)
		}
		wantBytes(t, "the linked file", readFile(t, p), []byte("keep me"))
	}},
	{name: "NameTooLong", fn: func(t *testing.T, d *testDrive) {
		long := strings.Repeat("n", 256)
		ok := strings.Repeat("n", 255)
		writeFile(t, d.path(ok), []byte("x"))
		_, err := unix.Open(d.path(long), unix.O_CREAT|unix.O_WRONLY, 0o644)
		wantErrno(t, "create", err, unix.ENAMETOOLONG)
		wantErrno(t, "mkdir", unix.Mkdir(d.path(long), 0o755), unix.ENAMETOOLONG)
		wantErrno(t, "symlink", unix.Symlink("x", d.path(long)), unix.ENAMETOOLONG)
		wantErrno(t, "mknod", unix.Mkfifo(d.path(long), 0o644), unix.ENAMETOOLONG)
		wantErrno(t, "link", unix.Link(d.path(ok), d.path(long)), unix.ENAMETOOLONG)
		wantErrno(t, "rename", unix.Rename(d.path(ok), d.path(long)), unix.ENAMETOOLONG)
		var st unix.Stat_t
		wantErrno(t, "stat", unix.Lstat(d.path(long), &st), unix.ENAMETOOLONG)
		wantNames(t, d.mnt, ok)
	}},
	// A Linux name is any bytes but '/' and NUL: names that are not UTF-8
	// (stress-ng's filename stressor made one directory unreadable, EIO
	// on every lookup, before records accepted them).
	{name: "NamesNotUTF8", fn: func(t *testing.T, d *testDrive) {
		var all []byte
		for c := 1; c < 256; c++ {
			if c != '/' {
				all = append(all, byte(c))
			}
		}
		names := []string{string(all[:200]), string(all[54:]), "\xff\xfe", "x\xc3(", "h\xc3\xa9llo"}
		dir := d.path("d")
		must(t, os.Mkdir(dir, 0o755))
		for i, n := range names {
			p := filepath.Join(dir, n)
			writeFile(t, p, []byte(n))
			must(t, unix.Symlink(n, p+"L"))
			must(t, unix.Setxattr(p, "user.\x80"+strconv.Itoa(i), []byte(n), 0))
		}
		check := func(when string) {
			var want []string
			for _, n := range names {
				want = append(want, n, n+"L")
			}
			wantNames(t, dir, want...)
			for i, n := range names {
				p := filepath.Join(dir, n)
				wantBytes(t, when+": content", readFile(t, p), []byte(n))
				target, err := os.Readlink(p + "L")
				must(t, err)
				if target != n {
					t.Fatalf("%s: readlink = %q, want %q", when, target, n)
				}
				buf := make([]byte, 512)
				sz, err := unix.Getxattr(p, "user.\x80"+strconv.Itoa(i), buf)
				must(t, err)
				wantBytes(t, when+": xattr", buf[:sz], []byte(n))
			}
		}
		check("mounted")
		d.remount()
		check("after remount")
		for _, n := range names {
			p := filepath.Join(dir, n)
			must(t, os.Rename(p, p+"\x80"))
			must(t, os.Remove(p+"\x80"))
			must(t, os.Remove(p+"L"))
			var st unix.Stat_t
			wantErrno(t, "stat after unlink", unix.Lstat(p+"\x80", &st), unix.ENOENT)
		}
		wantNames(t, dir)
	}},
	{name: "Tmpfile", fn: func(t *testing.T, d *testDrive) {
		fd := open(t, d.mnt, unix.O_TMPFILE|unix.O_RDWR, 0o600)
		data := randBytes(19, mib+5)
		pwrite(t, fd, data, 0)
		wantNames(t, d.mnt)
		// Link it into place through /proc, as the man page shows.
		must(t, unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, d.path("named"), unix.AT_SYMLINK_FOLLOW))
		if st := fstat(t, fd); st.Nlink != 1 {
			t.Fatalf("nlink %d after linkat, want 1", st.Nlink)
		}
		closeFD(t, fd)
		wantNames(t, d.mnt, "named")
		d.remount()
		wantBytes(t, "linked tmpfile after remount", readFile(t, d.path("named")), data)
		// An unlinked tmpfile leaves nothing behind.
		fd = open(t, d.mnt, unix.O_TMPFILE|unix.O_RDWR, 0o600)
		pwrite(t, fd, randBytes(20, 100), 0)
		must(t, unix.Fsync(fd))
		closeFD(t, fd)
		waitFor(t, "the tmpfile to be purged", func() bool { return d.tree.Stats().Chunks == 2 })
		fd = open(t, d.mnt, unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL, 0o600)
		err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, d.path("excl"), unix.AT_SYMLINK_FOLLOW)
		wantErrno(t, "linkat of an O_EXCL tmpfile", err, unix.ENOENT)
		closeFD(t, fd)
	}},
	{name: "Signals", fn: func(t *testing.T, d *testDrive) {
		// Signals interrupt FUSE requests (the kernel sends INTERRUPT for
		// any signal, and Go sends itself SIGURG to preempt goroutines).
		// Local filesystems never fail these calls with EINTR nor cut
		// reads and writes short: neither may the drive.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			pid := unix.Getpid()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tasks, _ := os.ReadDir("/proc/self/task")
				for _, task := range tasks {
					if tid, err := strconv.Atoi(task.Name()); err == nil {
						unix.Tgkill(pid, tid, unix.SIGURG)
					}
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		defer func() { close(stop); <-done }()
		data := randBytes(22, 3*mib)
		deadline := time.Now().Add(time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			dir := d.path(fmt.Sprintf("d%d", i))
			if err := unix.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("mkdir: %v", err)
			}
			p := filepath.Join(dir, "f")
			fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
			pwrite(t, fd, data, 0)
			wantBytes(t, "read back", pread(t, fd, len(data), 0), data)
			must(t, unix.Ftruncate(fd, mib))
			must(t, unix.Fsync(fd))
			closeFD(t, fd)
			must(t, unix.Rename(p, p+"2"))
			must(t, unix.Unlink(p+"2"))
			must(t, unix.Rmdir(dir))
		}
	}},
	{name: "Ownership", fn: func(t *testing.T, d *testDrive) {
		must(t, os.Mkdir(d.path("home"), 0o755))
		must(t, unix.Chown(d.path("home"), 1000, 1000))
		writeFile(t, d.path("secret"), []byte("root only"))
		must(t, unix.Chmod(d.path("secret"), 0o600))
		// As uid 1000 on a thread of its own: the kernel checks modes
		// (default_permissions), the drive records the caller as owner.
		must(t, os.Chmod(filepath.Dir(d.mnt), 0o755)) // t.TempDir makes it 0700
		asUser(t, 1000, 1000, func() error {
			_, err := unix.Open(d.path("secret"), unix.O_RDONLY, 0)
			if err := errnoIs("open a 0600 file of root", err, unix.EACCES); err != nil {
				return err
			}
			if err := errnoIs("create in root's directory", unix.Mkdir(d.path("mine"), 0o755), unix.EACCES); err != nil {
				return err
			}
			fd, err := unix.Open(d.path("home/f"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o640)
			if err != nil {
				return fmt.Errorf("create: %w", err)
			}
			unix.Close(fd)
			if err := unix.Mkdir(d.path("home/sub"), 0o700); err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
			if err := errnoIs("chown to another user", unix.Chown(d.path("home/f"), 0, -1), unix.EPERM); err != nil {
				return err
			}
			return unix.Chmod(d.path("home/f"), 0o604)
		})
		for _, p := range []string{"home/f", "home/sub"} {
			if st := lstat(t, d.path(p)); st.Uid != 1000 || st.Gid != 1000 {
				t.Fatalf("%s: owner %d:%d, want 1000:1000", p, st.Uid, st.Gid)
			}
		}
		if st := lstat(t, d.path("home/f")); st.Mode != unix.S_IFREG|0o604 {
			t.Fatalf("mode %o", st.Mode)
		}
	}},
	{name: "ReadOnly", fn: func(t *testing.T, d *testDrive) {
		writeFile(t, d.path("f"), []byte("data"))
		must(t, os.Mkdir(d.path("d"), 0o755))
		d.stop()
		d.opts.ReadOnly = true
		d.start()
		wantBytes(t, "read-only mount", readFile(t, d.path("f")), []byte("data"))
		_, err := unix.Open(d.path("f"), unix.O_WRONLY, 0)
		wantErrno(t, "open for writing", err, unix.EROFS)
		wantErrno(t, "mkdir", unix.Mkdir(d.path("x"), 0o755), unix.EROFS)
		wantErrno(t, "unlink", unix.Unlink(d.path("f")), unix.EROFS)
		wantErrno(t, "rename", unix.Rename(d.path("f"), d.path("g")), unix.EROFS)
		wantErrno(t, "chmod", unix.Chmod(d.path("f"), 0o600), unix.EROFS)
		wantErrno(t, "truncate", unix.Truncate(d.path("f"), 0), unix.EROFS)
		wantErrno(t, "setxattr", unix.Setxattr(d.path("f"), "user.x", nil, 0), unix.EROFS)
		var st unix.Statfs_t
		must(t, unix.Statfs(d.mnt, &st))
		if st.Flags&unix.ST_RDONLY == 0 {
			t.Fatalf("statfs flags %#x lack ST_RDONLY", st.Flags)
		}
	}},
	{name: "Concurrent", fn: func(t *testing.T, d *testDrive) {
		// Writers on their own files and on disjoint parts of a shared
		// one, readers and a directory churner, all at once.
		const workers = 4
		rounds := 40
		if raceEnabled {
			rounds = 15
		}
		shared := open(t, d.path("shared"), unix.O_CREAT|unix.O_RDWR, 0o644)
		must(t, os.Mkdir(d.path("churn"), 0o755))
		errs := make(chan error, workers+1)
		want := make([][]byte, workers)
		sharedWant := make([]byte, workers*mib)
		for w := range workers {
			go func() {
				errs <- func() error {
					r := rand.New(rand.NewPCG(uint64(w), 7))
					p := d.path(fmt.Sprintf("own%d", w))
					fd, err := unix.Open(p, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
					if err != nil {
						return err
					}
					defer unix.Close(fd)
					var model []byte
					for i := range rounds {
						off := r.IntN(3 * mib)
						b := randBytes(uint64(w*1000+i), 1+r.IntN(mib))
						if n, err := unix.Pwrite(fd, b, int64(off)); err != nil || n != len(b) {
							return fmt.Errorf("pwrite: %d, %v", n, err)
						}
						if end := off + len(b); end > len(model) {
							model = append(model, make([]byte, end-len(model))...)
						}
						copy(model[off:], b)
						// My own quarter of the shared file.
						so := w*mib + r.IntN(mib-4096)
						sb := randBytes(uint64(w*1000+i+500), 1+r.IntN(4096))
						if n, err := unix.Pwrite(shared, sb, int64(so)); err != nil || n != len(sb) {
							return fmt.Errorf("pwrite shared: %d, %v", n, err)
						}
						copy(sharedWant[so:], sb)
						switch r.IntN(4) {
						case 0:
							if err := unix.Fsync(fd); err != nil {
								return err
							}
						case 1:
							size := r.IntN(len(model) + 1)
							if err := unix.Ftruncate(fd, int64(size)); err != nil {
								return err
							}
							model = model[:size]
						}
						got := make([]byte, len(model)+10)
						n, err := unix.Pread(fd, got, 0)
						if err != nil || !bytes.Equal(got[:n], model) {
							return fmt.Errorf("round %d: read %d bytes (%v), want %d: %s", i, n, err, len(model), firstDiff(got[:n], model))
						}
					}
					want[w] = model
					return nil
				}()
			}()
		}
		stop := make(chan struct{})
		go func() {
			errs <- func() error {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					default:
					}
					p := d.path(fmt.Sprintf("churn/%d", i%20))
					if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
						return err
					}
					if _, err := os.ReadDir(d.path("churn")); err != nil {
						return err
					}
					if i%3 == 0 {
						if err := os.Rename(p, p+"x"); err != nil {
							return err
						}
						if err := os.Remove(p + "x"); err != nil {
							return err
						}
					}
				}
			}()
		}()
		for range workers {
			must(t, <-errs)
		}
		close(stop)
		must(t, <-errs)
		got := pread(t, shared, len(sharedWant)+10, 0)
		if len(got) > len(sharedWant) {
			t.Fatalf("shared file has %d bytes, want at most %d", len(got), len(sharedWant))
		}
		wantBytes(t, "shared file", got, sharedWant[:len(got)])
		closeFD(t, shared)
		for w := range workers {
			wantBytes(t, fmt.Sprintf("own%d", w), readFile(t, d.path(fmt.Sprintf("own%d", w))), want[w])
		}
		d.remount()
		for w := range workers {
			wantBytes(t, fmt.Sprintf("own%d after remount", w), readFile(t, d.path(fmt.Sprintf("own%d", w))), want[w])
		}
		wantBytes(t, "shared file after remount", readFile(t, d.path("shared")), got)
	}},
	{name: "InodesStable", fn: func(t *testing.T, d *testDrive) {
		names := []string{"a", "d", "d/b", "d/e", "d/e/c", "l", "h"}
		must(t, os.MkdirAll(d.path("d/e"), 0o755))
		writeFile(t, d.path("a"), nil)
		writeFile(t, d.path("d/b"), []byte("b"))
		writeFile(t, d.path("d/e/c"), nil)
		must(t, os.Symlink("a", d.path("l")))
		must(t, unix.Link(d.path("d/b"), d.path("h")))
		inos := map[string]uint64{}
		seen := map[uint64]string{}
		for _, n := range names {
			ino := lstat(t, d.path(n)).Ino
			inos[n] = ino
			if other, dup := seen[ino]; dup && !(n == "h" && other == "d/b") {
				t.Fatalf("%s and %s share inode %d", n, other, ino)
			}
			seen[ino] = n
		}
		if ino := lstat(t, d.mnt).Ino; ino != uint64(peerdrive.RootIno) {
			t.Fatalf("root inode %d", ino)
		}
		d.remount()
		for _, n := range names {
			if ino := lstat(t, d.path(n)).Ino; ino != inos[n] {
				t.Fatalf("%s: inode %d after remount, was %d", n, ino, inos[n])
			}
		}
		// readdir reports the same numbers as stat.
		ents, err := os.ReadDir(d.path("d"))
		must(t, err)
		for _, e := range ents {
			info, err := e.Info()
			must(t, err)
			if ino := info.Sys().(*syscall.Stat_t).Ino; ino != inos["d/"+e.Name()] {
				t.Fatalf("readdir: %s inode %d, want %d", e.Name(), ino, inos["d/"+e.Name()])
			}
		}
		// New inodes do not reuse numbers, across remounts too.
		writeFile(t, d.path("new"), nil)
		if ino := lstat(t, d.path("new")).Ino; seen[ino] != "" {
			t.Fatalf("new file reuses inode %d of %s", ino, seen[ino])
		}
	}},
	{name: "Persistence", fn: func(t *testing.T, d *testDrive) {
		sizes := []int{0, 1, 4095, 4096, mib - 1, mib, mib + 1, 3*mib + 17}
		must(t, os.Mkdir(d.path("dir"), 0o700))
		for i, n := range sizes {
			writeFile(t, d.path(fmt.Sprintf("dir/f%d", i)), randBytes(uint64(100+i), n))
		}
		// Identical content is stored once.
		writeFile(t, d.path("dup1"), randBytes(100+7, sizes[7]))
		must(t, unix.Chmod(d.path("dup1"), 0o640))
		must(t, os.Symlink("dir/f1", d.path("link")))
		must(t, unix.Setxattr(d.path("dir"), "user.k", []byte("v"), 0))
		ts := []unix.Timespec{{Sec: 1234, Nsec: 5}, {Sec: 5678, Nsec: 9}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, d.path("dir/f2"), ts, 0))
		d.fs.settle() // closes hand the last chunks to the sealers
		stats := d.tree.Stats()
		for round := range 2 {
			d.remount()
			// Reading f2 sets its atime (relatime: it is before the
			// ctime): look before the first read.
			if st := lstat(t, d.path("dir/f2")); round == 0 && st.Atim != ts[0] || st.Mtim != ts[1] {
				t.Fatalf("times %v %v", st.Atim, st.Mtim)
			}
			for i, n := range sizes {
				wantBytes(t, fmt.Sprintf("f%d", i), readFile(t, d.path(fmt.Sprintf("dir/f%d", i))), randBytes(uint64(100+i), n))
			}
			wantBytes(t, "dup1", readFile(t, d.path("dup1")), randBytes(100+7, sizes[7]))
			if st := lstat(t, d.path("dup1")); st.Mode != unix.S_IFREG|0o640 {
				t.Fatalf("mode %o", st.Mode)
			}
			if st := lstat(t, d.path("dir")); st.Mode != unix.S_IFDIR|0o700 {
				t.Fatalf("dir mode %o", st.Mode)
			}
			if got, _ := os.Readlink(d.path("link")); got != "dir/f1" {
				t.Fatalf("symlink %q", got)
			}
			buf := make([]byte, 10)
			if n, err := unix.Getxattr(d.path("dir"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
				t.Fatalf("xattr %q %v", buf[:n], err)
			}
			if s := d.tree.Stats(); s != stats {
				t.Fatalf("stats %+v after remount, were %+v", s, stats)
			}
		}
	}},
	{name: "BigDirectory", fn: func(t *testing.T, d *testDrive) {
		n := 100_000
		if raceEnabled {
			n = 10_000 // the race detector makes each create ~8 times slower
		}
		dir := d.path("big")
		must(t, os.Mkdir(dir, 0o755))
		dfd := open(t, dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		defer closeFD(t, dfd)
		start := time.Now()
		for i := range n {
			if err := unix.Mknodat(dfd, fmt.Sprintf("file-%06d", i), unix.S_IFREG|0o644, 0); err != nil {
				t.Fatalf("mknod %d: %v", i, err)
			}
		}
		t.Logf("created %d files in %v", n, time.Since(start))
		start = time.Now()
		f, err := os.Open(dir)
		must(t, err)
		names, err := f.Readdirnames(-1)
		f.Close()
		must(t, err)
		t.Logf("listed them in %v", time.Since(start))
		if len(names) != n {
			t.Fatalf("readdir found %d entries, want %d", len(names), n)
		}
		slices.Sort(names)
		for i, name := range names {
			if want := fmt.Sprintf("file-%06d", i); name != want {
				t.Fatalf("entry %d is %q, want %q", i, name, want)
			}
		}
		if st := lstat(t, d.path(fmt.Sprintf("big/file-%06d", n/2+321))); st.Mode != unix.S_IFREG|0o644 {
			t.Fatalf("mode %o", st.Mode)
		}
	}},
	{name: "MappedWriteBackNotAdmitted", fn: func(t *testing.T, d *testDrive) {
		// Admit holds writers back while the local cache is full of data
		// not yet on peers. The kernel's write-back of a shared mapping
		// has no caller a signal could interrupt: held back, it wedged
		// msync, munmap and the unmount in an uninterruptible sleep for
		// as long as no peer took the data (xfstests' fsstress, mwrite,
		// on a mount without peers). write(2) is still held back.
		var asked atomic.Int64
		var full atomic.Bool
		release := make(chan struct{})
		d.opts.Admit = func(stop <-chan struct{}) {
			asked.Add(1)
			if full.Load() {
				select {
				case <-stop:
				case <-release:
				}
			}
		}
		d.remount()
		p := d.path("f")
		writeFile(t, p, bytes.Repeat([]byte("a"), 2*4096))
		if asked.Load() == 0 {
			t.Fatal("write(2) was not admitted")
		}
		full.Store(true)
		// The mapping is written in a child process: a page fault on the
		// mount must not stall the process that serves it.
		cmd := exec.Command(os.Args[0], "-test.run=^TestMappedWriteChild$", "-test.v")
		cmd.Env = append(os.Environ(), "MAPPED_WRITE_FILE="+p)
		var out []byte
		done := make(chan error, 1)
		go func() {
			var err error
			out, err = cmd.CombinedOutput()
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil || !strings.Contains(string(out), "--- PASS: TestMappedWriteChild") {
				t.Fatalf("mapped write: %v\n%s", err, out)
			}
		case <-time.After(30 * time.Second):
			close(release) // lets the write-back through, so that the child ends
			<-done
			t.Fatal("msync of a shared mapping still waits for admission after 30 s")
		}
		full.Store(false)
		want := bytes.Repeat([]byte("a"), 2*4096)
		copy(want[4096:], "MAPPED")
		wantBytes(t, "file after msync", readFile(t, p), want)
	}},
	{name: "FsyncAfterManyLongSymlinksRead", fn: func(t *testing.T, d *testDrive) {
		// Reading a symlink sets its access time (relatime), which the
		// tree keeps in memory until its next flush writes the inode
		// records, each with its target. A thousand targets of 4000
		// bytes made that flush's one transaction too big for the store:
		// every fsync on the drive then failed with EIO, for good
		// (xfstests' fsstress, symlink and readlink ops).
		dir := d.path("links")
		must(t, os.Mkdir(dir, 0o755))
		target := strings.Repeat("x", 4000)
		const n = 1200
		for i := range n {
			must(t, os.Symlink(target, filepath.Join(dir, strconv.Itoa(i))))
		}
		for i := range n {
			if got, err := os.Readlink(filepath.Join(dir, strconv.Itoa(i))); err != nil || got != target {
				t.Fatalf("readlink %d: %d bytes, %v", i, len(got), err)
			}
		}
		fd := open(t, d.path("f"), unix.O_CREAT|unix.O_WRONLY, 0o644)
		pwrite(t, fd, []byte("data"), 0)
		err := unix.Fsync(fd)
		closeFD(t, fd)
		if err != nil {
			t.Fatalf("fsync: %v", err)
		}
		d.remount()
		st := lstat(t, filepath.Join(dir, strconv.Itoa(n-1)))
		if st.Atim == st.Mtim {
			t.Errorf("access time of a symlink read before the fsync was lost")
		}
	}},
	{name: "UnlinkFileOfManyChunks", opt: func(o *Options) { o.Quota = 1 << 30 }, fn: func(t *testing.T, d *testDrive) {
		// Purging a file drops each of its chunks, several store writes
		// apiece: in one transaction, a file of thousands of chunks (GiBs
		// of data, or a sparse file written here and there) was past the
		// store's limit. Its purge failed, and the orphan it left failed
		// every later mount.
		p := d.path("big")
		fd := open(t, p, unix.O_CREAT|unix.O_WRONLY, 0o644)
		const chunks = 12000
		for i := range chunks {
			pwrite(t, fd, fmt.Appendf(nil, "%08d", i), int64(i)*mib) // distinct: no dedup
		}
		must(t, unix.Fsync(fd))
		closeFD(t, fd)
		used := func() uint64 { // with a quota, df shows the drive's use
			var st unix.Statfs_t
			must(t, unix.Statfs(d.mnt, &st))
			return (st.Blocks - st.Bfree) * uint64(st.Bsize)
		}
		if u := used(); u < 8*chunks {
			t.Fatalf("%d bytes used with %d chunks written", u, chunks)
		}
		must(t, os.Remove(p))
		waitFor(t, "the purge of the file", func() bool { return used() == 0 })
		d.remount()
		if u := used(); u != 0 {
			t.Fatalf("%d bytes used after the remount", u)
		}
	}},
	{name: "TruncateFileOfManyChunks", fn: func(t *testing.T, d *testDrive) {
		// As UnlinkFileOfManyChunks, for a truncate: cutting thousands of
		// chunks in one transaction failed with EIO.
		p := d.path("big")
		fd := open(t, p, unix.O_CREAT|unix.O_RDWR, 0o644)
		defer closeFD(t, fd)
		const chunks = 12000
		for i := range chunks {
			pwrite(t, fd, fmt.Appendf(nil, "%08d", i), int64(i)*mib) // distinct: no dedup
		}
		must(t, unix.Fsync(fd))
		if err := unix.Ftruncate(fd, 3*mib+4); err != nil {
			t.Fatalf("ftruncate: %v", err)
		}
		want := make([]byte, 3*mib+4)
		for i := range 4 {
			copy(want[i*mib:], fmt.Sprintf("%08d", i))
		}
		wantBytes(t, "file after the truncate", pread(t, fd, len(want)+1, 0), want[:3*mib+4])
		must(t, unix.Ftruncate(fd, 2*chunks*mib))
		if got := pread(t, fd, 8, (chunks-1)*mib); !bytes.Equal(got, make([]byte, 8)) {
			t.Fatalf("a cut chunk came back after growing the file: %q", got)
		}
	}},
	{name: "CorruptChunk", fn: func(t *testing.T, d *testDrive) { corruptChunk(t, d, false) }},
	{name: "CorruptChunkRecord", fn: func(t *testing.T, d *testDrive) { corruptChunk(t, d, true) }},
}

// TestMappedWriteChild writes through a shared mapping of MAPPED_WRITE_FILE
// and msyncs it, for TestSemantics/MappedWriteBackNotAdmitted.
func TestMappedWriteChild(t *testing.T) {
	p := os.Getenv("MAPPED_WRITE_FILE")
	if p == "" {
		t.Skip("runs as a child process of TestSemantics/MappedWriteBackNotAdmitted")
	}
	fd := open(t, p, unix.O_RDWR, 0)
	defer closeFD(t, fd)
	m, err := unix.Mmap(fd, 0, 2*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(t, err)
	copy(m[4096:], "MAPPED")
	must(t, unix.Msync(m, unix.MS_SYNC))
	must(t, unix.Munmap(m))
}

// corruptChunk damages the one chunk of a file in the store of a stopped
// drive: reads must fail with EIO (not ENOENT, not wrong bytes), with an
// error logged that names the file.
func corruptChunk(t *testing.T, d *testDrive, inRecord bool) {
	must(t, os.Mkdir(d.path("dir"), 0o755))
	p := d.path("dir/victim")
	data := randBytes(21, 100_000)
	writeFile(t, p, data)
	writeFile(t, d.path("other"), []byte("fine"))
	d.fs.settle()
	ref, ok, err := d.tree.ChunkRef(context.Background(), peerdrive.Ino(lstat(t, p).Ino), 0)
	if err != nil || !ok {
		t.Fatalf("chunk map of the file: %v %v", ok, err)
	}
	d.stop()
	flipChunkBit(t, d.storeAt, ref.ID, inRecord)
	d.start()
	named := func(r logRec) bool { return r.Level == slogError && r.Attrs["path"] == "dir/victim" }
	d.logs.expectLog(named)
	fd := open(t, p, unix.O_RDONLY, 0)
	_, err = unix.Pread(fd, make([]byte, 4096), 0)
	wantErrno(t, "read of a corrupt chunk", err, unix.EIO)
	_, err = unix.Pread(fd, make([]byte, 10), 50_000)
	wantErrno(t, "read of a corrupt chunk again", err, unix.EIO)
	closeFD(t, fd)
	if st := lstat(t, p); st.Size != int64(len(data)) {
		t.Fatalf("stat of the damaged file: size %d", st.Size)
	}
	wantBytes(t, "other file", readFile(t, d.path("other")), []byte("fine"))
	if len(d.logs.find(named)) == 0 {
		t.Fatalf("no error logged naming dir/victim; logged: %v", d.logs.find(func(logRec) bool { return true }))
	}
	// A write into the damaged chunk fails too, rather than storing
	// zeros over it.
	fd = open(t, p, unix.O_WRONLY, 0)
	_, err = unix.Pwrite(fd, []byte("x"), 10)
	wantErrno(t, "write into a corrupt chunk", err, unix.EIO)
	closeFD(t, fd)
	// Replacing the file still works.
	writeFile(t, p, []byte("new"))
	wantBytes(t, "rewritten", readFile(t, p), []byte("new"))
}

// writeAt writes one byte at off of the file p.
func writeAt(p string, off int64) error {
	fd, err := unix.Open(p, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Pwrite(fd, []byte("x"), off)
	return err
}

// withoutSysAdmin runs fn like asUser, on a thread that also lacks
// CAP_SYS_ADMIN, which setfsuid leaves: capabilities belong to the thread,
// which is thrown away after.
func withoutSysAdmin(t testing.TB, uid, gid int, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		unix.Setfsgid(gid)
		unix.Setfsuid(uid)
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("as uid %d without CAP_SYS_ADMIN: %v", uid, err)
	}
}
