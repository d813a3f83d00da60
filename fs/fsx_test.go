package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFsx exercises one file the way xfstests' fsx does: writes through a read-write
// descriptor and through a write-only one (which skips the kernel's page cache), writes
// through a shared mapping with and without msync, truncates, punched holes and zeroed
// ranges, fsyncs (which store small rewrites as patches), reopens, and stretches with no
// descriptor that may write (small reads then push whole chunks into the page cache); after
// every step that reads, the bytes read through read(2) or a mapping must match a model, and every 50 steps
// the whole file and its size must. The steps run in a child process (TestFsxChild): a page
// fault on the mount in the process that serves it can stall the Go runtime, and with it
// the server. On failure the child logs the seed and the last steps
// (go test ./fs -run TestFsx -seed N replays them).
func TestFsx(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	ops := 3000
	if raceEnabled {
		ops = 1000
	}
	t.Logf("seed %d, %d steps", seed, ops)
	d := mountDrive(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFsxChild$", "-test.v")
	cmd.Env = append(os.Environ(), "FSX_FILE="+d.path("fsx"), "FSX_SEED="+strconv.FormatInt(seed, 10), "FSX_OPS="+strconv.Itoa(ops))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFsxChild") {
		t.Fatalf("exerciser: %v\n%s", err, out)
	}
	// What the child left must survive a remount unchanged.
	want := readFile(t, d.path("fsx"))
	d.remount()
	if got := readFile(t, d.path("fsx")); !bytes.Equal(got, want) {
		t.Fatalf("after a remount the file differs (%d bytes, was %d)", len(got), len(want))
	}
}

// TestFsxChild is TestFsx's exerciser, run in a child process on the mounted file FSX_FILE.
func TestFsxChild(t *testing.T) {
	p := os.Getenv("FSX_FILE")
	if p == "" {
		t.Skip("runs as TestFsx's child process")
	}
	seed, _ := strconv.ParseInt(os.Getenv("FSX_SEED"), 10, 64)
	ops, _ := strconv.Atoi(os.Getenv("FSX_OPS"))
	const maxSize = 3<<20 + 1000
	r := rand.New(rand.NewPCG(uint64(seed), 1))
	var hist []string
	logf := func(op int, format string, args ...any) {
		hist = append(hist, fmt.Sprintf("%5d ", op)+fmt.Sprintf(format, args...))
		if len(hist) > 30 {
			hist = hist[1:]
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (replay: go test ./fs -run TestFsx -seed %d); the last steps:\n%s", seed, seed, strings.Join(hist, "\n"))
		}
	})
	rw := open(t, p, unix.O_RDWR|unix.O_CREAT, 0o644)
	wo := open(t, p, unix.O_WRONLY, 0)
	defer func() { closeFD(t, rw); closeFD(t, wo) }()
	var model []byte

	length := func(limit int) int {
		n := 1 + r.IntN(64<<10)
		if r.IntN(10) == 0 {
			n = 1 + r.IntN(3<<19)
		}
		return min(n, limit)
	}
	write := func(op, fd int, how string) {
		off := r.IntN(maxSize - 1)
		b := make([]byte, length(maxSize-off))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		logf(op, "%s [%d, %d)", how, off, off+len(b))
		pwrite(t, fd, b, int64(off))
		if end := off + len(b); end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], b)
	}
	span := func() (int, int) { // a non-empty range inside the file
		off := r.IntN(len(model))
		return off, off + length(len(model)-off)
	}
	compare := func(op int, what string, got []byte, off int) {
		t.Helper()
		if want := model[off : off+len(got)]; !bytes.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Fatalf("op %d: %s [%d, %d): byte %d is %#x, want %#x", op, what, off, off+len(got), off+i, got[i], want[i])
		}
	}
	checkAll := func(op int) {
		t.Helper()
		var st unix.Stat_t
		must(t, unix.Fstat(rw, &st))
		if st.Size != int64(len(model)) {
			t.Fatalf("op %d: size %d, want %d", op, st.Size, len(model))
		}
		if len(model) > 0 {
			compare(op, "whole file", pread(t, rw, len(model), 0), 0)
		}
	}
	for op := 1; op <= ops; op++ {
		switch n := r.IntN(100); {
		case n < 22:
			write(op, rw, "write")
		case n < 36:
			write(op, wo, "write, write-only descriptor")
		case n < 46 && len(model) > 0:
			off, end := span()
			sync := r.IntN(2) == 0
			logf(op, "mapped write [%d, %d), msync %v", off, end, sync)
			m, err := unix.Mmap(rw, 0, len(model), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			must(t, err)
			for i := off; i < end; i++ {
				m[i] = byte(r.Uint32())
				model[i] = m[i]
			}
			if sync {
				must(t, unix.Msync(m, unix.MS_SYNC))
			}
			must(t, unix.Munmap(m))
		case n < 60 && len(model) > 0:
			off, end := span()
			logf(op, "read [%d, %d)", off, end)
			compare(op, "read", pread(t, rw, end-off, int64(off)), off)
		case n < 67 && len(model) > 0:
			off, end := span()
			logf(op, "mapped read [%d, %d)", off, end)
			m, err := unix.Mmap(rw, 0, len(model), unix.PROT_READ, unix.MAP_SHARED)
			must(t, err)
			got := bytes.Clone(m[off:end])
			must(t, unix.Munmap(m))
			compare(op, "mapped read", got, off)
		case n < 75:
			size := r.IntN(maxSize)
			logf(op, "truncate %d", size)
			must(t, unix.Ftruncate(rw, int64(size)))
			if size > len(model) {
				model = append(model, make([]byte, size-len(model))...)
			}
			model = model[:size]
		case n < 83 && len(model) > 0:
			off, end := span()
			mode, name := uint32(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE), "punch hole"
			if r.IntN(2) == 0 {
				mode, name = unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, "zero range"
			}
			logf(op, "%s [%d, %d)", name, off, end)
			must(t, unix.Fallocate(rw, mode, int64(off), int64(end-off)))
			clear(model[off:end])
		case n < 95:
			fd, name := rw, "fsync"
			if r.IntN(2) == 0 {
				fd, name = wo, "fsync, write-only descriptor"
			}
			logf(op, "%s", name)
			must(t, unix.Fsync(fd))
		case n < 97 && len(model) > 4096:
			// With no descriptor that may write, small reads push whole
			// chunks into the kernel's page cache (pushChunk).
			logf(op, "close both, 20 small reads through a read-only descriptor, reopen")
			closeFD(t, rw)
			closeFD(t, wo)
			ro := open(t, p, unix.O_RDONLY, 0)
			for range 20 {
				off := r.IntN(len(model) - 4096)
				compare(op, "small read, no writer", pread(t, ro, 1+r.IntN(4096), int64(off)), off)
			}
			closeFD(t, ro)
			rw = open(t, p, unix.O_RDWR, 0)
			wo = open(t, p, unix.O_WRONLY, 0)
		case n < 98:
			logf(op, "reopen the write-only descriptor")
			closeFD(t, wo)
			wo = open(t, p, unix.O_WRONLY, 0)
		default:
			logf(op, "reopen both descriptors")
			closeFD(t, rw)
			closeFD(t, wo)
			rw = open(t, p, unix.O_RDWR, 0)
			wo = open(t, p, unix.O_WRONLY, 0)
		}
		if op%50 == 0 {
			checkAll(op)
		}
	}
	checkAll(ops)
	t.Logf("seed %d: %d steps", seed, ops)
}
