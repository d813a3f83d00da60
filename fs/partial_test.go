package fs

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRandomReadsWhileWriting: random small reads and writes of a file
// open for writing, larger than the chunk cache, as a database does: the
// reads of chunks out of the cache decrypt only their part
// (tree.ReadChunkAt) and must see every write, before and after a remount.
func TestRandomReadsWhileWriting(t *testing.T) {
	const size = 6 << 20 // six chunks; the cache holds two
	d := mountDrive(t, nil)
	r := rand.New(rand.NewPCG(5, 6))
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(r.Uint32())
	}
	writeFile(t, d.path("db"), model)
	d.chunkCache = 2 << 20
	d.remount()
	fd := open(t, d.path("db"), unix.O_RDWR, 0)
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for i := range 3000 {
		off := r.IntN(size)
		n := 1 + r.IntN(min(len(buf), size-off))
		if r.IntN(10) == 0 {
			for j := range n {
				buf[j] = byte(r.Uint32())
			}
			copy(model[off:], buf[:n])
			if w, err := unix.Pwrite(fd, buf[:n], int64(off)); err != nil || w != n {
				t.Fatalf("op %d: pwrite %d at %d: %d, %v", i, n, off, w, err)
			}
			continue
		}
		got, err := unix.Pread(fd, buf[:n], int64(off))
		if err != nil || got != n || !bytes.Equal(buf[:n], model[off:off+n]) {
			t.Fatalf("op %d: pread %d at %d: %d bytes, %v, equal %v", i, n, off, got, err, bytes.Equal(buf[:got], model[off:off+got]))
		}
	}
	unix.Close(fd)
	d.remount()
	wantBytes(t, "after a remount", readFile(t, d.path("db")), model)
}
