package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestReadExactReadsNoMore checks that a read from exactFile brings into the page cache
// the bytes it returns and not the ones after them (on a storage node, other
// segments' shards), while both reads return the stored bytes.
func TestReadExactReadsNoMore(t *testing.T) {
	p, err := openPacks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	const size = 1 << 20
	var locs []chunkLoc
	var want [][]byte
	for i := range 8 {
		b := bytes.Repeat([]byte{byte('a' + i)}, size)
		loc, err := p.append(b, false)
		if err != nil {
			t.Fatal(err)
		}
		locs, want = append(locs, loc), append(want, b)
	}
	if err := p.sync(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p.path(locs[0].pack))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Clean pages (synced above) leave the page cache on this advice.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, len(locs)*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	resident := func(loc chunkLoc) int { return residentPages(t, m, loc) }
	if n := resident(locs[1]); n != 0 {
		t.Skipf("page cache not dropped (%d pages of blob 1 resident): cannot tell", n)
	}
	// The first half in order: reads that look sequential, which the
	// kernel's read-ahead would follow into the second half.
	for i := range len(locs) / 2 {
		b, err := p.readFrom(nil, locs[i], true)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want[i]) {
			t.Fatalf("blob %d: wrong bytes", i)
		}
	}
	for i := len(locs) / 2; i < len(locs); i++ {
		if n := resident(locs[i]); n != 0 {
			t.Fatalf("%d pages of blob %d were read too", n, i)
		}
	}
	for i := range locs {
		b, err := p.readFrom(nil, locs[i], false)
		if err != nil || !bytes.Equal(b, want[i]) {
			t.Fatalf("read blob %d: %v, equal %v", i, err, bytes.Equal(b, want[i]))
		}
	}
}

// TestSyncDuringAppend: a sync that runs while an append is writing may miss
// its bytes, so the pack must still be dirty after the append, for the sync
// that follows the append's commit.
func TestSyncDuringAppend(t *testing.T) {
	p, err := openPacks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	appendHook = func() {
		if err := p.sync(); err != nil {
			t.Error(err)
		}
	}
	defer func() { appendHook = nil }()
	loc, err := p.append([]byte("data"), false)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	dirty := p.dirty[loc.pack]
	p.mu.Unlock()
	if !dirty {
		t.Fatal("pack not dirty after an append that a sync overlapped")
	}
}

// TestSyncWaitsForSync: a sync that finds nothing dirty because another
// sync has just taken the set must not return before that sync's
// fdatasync: the caller's bytes may be among the ones it writes.
func TestSyncWaitsForSync(t *testing.T) {
	p, err := openPacks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if _, err := p.append([]byte("data"), false); err != nil {
		t.Fatal(err)
	}
	taken, release := make(chan struct{}), make(chan struct{})
	packSyncHook = func() {
		packSyncHook = nil // the second sync passes
		close(taken)
		<-release
	}
	defer func() { packSyncHook = nil }()
	first := make(chan error, 1)
	go func() { first <- p.sync() }()
	<-taken
	second := make(chan error, 1)
	go func() { second <- p.sync() }()
	select {
	case err := <-second:
		t.Fatalf("second sync returned (%v) while the first had not synced", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadExactUnaligned: exact reads, with O_DIRECT (where the file system
// takes it) or without, of blobs at any offset and of any length, the last
// one ending the pack, give their bytes; a blob past the pack's end is a
// short read.
func TestReadExactUnaligned(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			defer func(orig bool) { directReads = orig }(directReads)
			directReads = direct
			readExactUnaligned(t)
		})
	}
}

func readExactUnaligned(t *testing.T) {
	p, err := openPacks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var locs []chunkLoc
	var want [][]byte
	for i, n := range []int{1, 4095, 4096, 4097, 1<<20 + 7, 3, 8191, 100_000} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*31 + j*7)
		}
		loc, err := p.append(b, false)
		if err != nil {
			t.Fatal(err)
		}
		locs, want = append(locs, loc), append(want, b)
	}
	for round := range 2 { // the second from buffers the first gave back
		for i, loc := range locs {
			got, err := p.readFrom([]byte("x"), loc, true)
			if err != nil || !bytes.Equal(got[1:], want[i]) || got[0] != 'x' {
				t.Fatalf("round %d, blob %d (%d bytes at %d): %v, equal %v", round, i, loc.len, loc.off, err, err == nil && bytes.Equal(got[1:], want[i]))
			}
		}
	}
	p.mu.Lock()
	e := p.exact[locs[0].pack]
	p.mu.Unlock()
	if e.direct && !directReads {
		t.Fatal("opened with O_DIRECT when told not to")
	}
	t.Logf("O_DIRECT: %v", e.direct)
	past := locs[len(locs)-1]
	past.off += 10
	if _, err := p.readFrom(nil, past, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("blob past the end: %v, want ErrCorrupt", err)
	}
}

// alignedBuf returns n bytes of fill, page-aligned, with a capacity to the
// next page: as the network's PUT bodies are.
func alignedBuf(n int, fill byte) []byte {
	b := alignedSlice(n, int(alignUp(uint64(n))))
	for i := range b {
		b[i] = fill
	}
	return b
}

// TestDirectWrites: blobs appended with direct that can be (large, aligned,
// room to the next page) skip the page cache and start on a page; the others
// go through it; all read back the same, before and after a reopen, and
// appends after a direct one continue past its padding.
func TestDirectWrites(t *testing.T) {
	dir := t.TempDir()
	p, err := openPacks(dir)
	if err != nil {
		t.Fatal(err)
	}
	type blob struct {
		data     []byte
		direct   bool // asked for
		skipping bool // expected to skip the page cache
	}
	unaligned := alignedBuf(200<<10+1, 'u')[1:]
	blobs := []blob{
		{[]byte("small first"), true, false},
		{alignedBuf(1<<20+41, 'a'), true, true},
		{alignedBuf(100<<10, 'b'), false, false}, // not asked
		{unaligned, true, false},
		{alignedBuf(directMin-1, 'c'), true, false}, // too small
		{alignedBuf(directMin, 'd'), true, true},
		{alignedBuf(1<<20, 'e')[: 1<<20-5 : 1<<20-5], true, false}, // no room to pad
		{[]byte("small last"), false, false},
	}
	locs := make([]chunkLoc, len(blobs))
	for i, b := range blobs {
		if locs[i], err = p.append(b.data, b.direct); err != nil {
			t.Fatal(err)
		}
		if b.skipping && locs[i].off%directAlign != 0 {
			t.Errorf("blob %d written directly at %d, not on a page", i, locs[i].off)
		}
		if i > 0 && locs[i].off < locs[i-1].off+uint64(locs[i-1].len) {
			t.Fatalf("blob %d at %d overlaps blob %d", i, locs[i].off, i-1)
		}
	}
	if p.noDirect {
		t.Skip("this file system refuses O_DIRECT")
	}
	f, err := os.Open(p.path(locs[0].pack))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	resident := func(loc chunkLoc) int { return residentPages(t, m, loc) }
	for i, b := range blobs {
		if n := resident(locs[i]); b.skipping != (n == 0) {
			t.Errorf("blob %d: %d pages in the page cache, skipping %v", i, n, b.skipping)
		}
	}
	check := func(p *packs, when string) {
		t.Helper()
		for i, b := range blobs {
			for _, exact := range []bool{false, true} {
				got, err := p.readFrom(nil, locs[i], exact)
				if err != nil || !bytes.Equal(got, b.data) {
					t.Fatalf("%s: blob %d (exact %v): %v, equal %v", when, i, exact, err, bytes.Equal(got, b.data))
				}
			}
		}
	}
	check(p, "written")
	if err := p.sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	if p, err = openPacks(dir); err != nil {
		t.Fatal(err)
	}
	defer p.close()
	check(p, "reopened")
	more := alignedBuf(300<<10, 'f')
	loc, err := p.append(more, true)
	if err != nil {
		t.Fatal(err)
	}
	if last := locs[len(locs)-1]; loc.off < last.off+uint64(last.len) || loc.off%directAlign != 0 {
		t.Fatalf("append after reopen at %d, last blob ends at %d", loc.off, last.off+uint64(last.len))
	}
	if got, err := p.readFrom(nil, loc, true); err != nil || !bytes.Equal(got, more) {
		t.Fatalf("append after reopen: %v", err)
	}
}

// residentPages counts the pages of loc's bytes, in the pack mapped at m,
// that are in the page cache (mincore).
func residentPages(t *testing.T, m []byte, loc chunkLoc) int {
	t.Helper()
	pg := uint64(os.Getpagesize())
	start := loc.off &^ (pg - 1)
	vec := make([]byte, (loc.off+uint64(loc.len)-start+pg-1)/pg)
	r := m[start : loc.off+uint64(loc.len)]
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&r[0])), uintptr(len(r)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}
