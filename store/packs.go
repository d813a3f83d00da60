package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

// Chunk bodies live in append-only pack files beside badger, not in badger's
// value log: badger writes its value log through mmap of sparse files, so
// every byte written shows up in the daemon's resident memory, a full disk
// is a SIGBUS instead of ENOSPC, and deleted values come back only after a
// value-log rewrite. A pack is written with pwrite, synced with fdatasync,
// and a deleted chunk's bytes are freed at once by punching a hole.
// docs/format.md, "Pack files", specifies the layout.

const (
	packDir     = "packs"
	packMaxSize = 1 << 30 // a pack is closed for appends past this size
	locSize     = 16      // pack number u32, offset u64, length u32
	checkSize   = 16      // then, in a chunk's location (format 3), its tail check
)

// chunkLoc is where a chunk's sealed bytes are. A location with a check
// also records the tail check of the bytes put there under its key
// (tailCheck), which every read of them compares (Txn.appendBlob).
type chunkLoc struct {
	pack     uint32
	off      uint64
	len      uint32
	hasCheck bool
	check    [checkSize]byte
}

func (l chunkLoc) encode() []byte {
	n := locSize
	if l.hasCheck {
		n += checkSize
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b[0:], l.pack)
	binary.BigEndian.PutUint64(b[4:], l.off)
	binary.BigEndian.PutUint32(b[12:], l.len)
	if l.hasCheck {
		copy(b[locSize:], l.check[:])
	}
	return b
}

func decodeLoc(b []byte) (chunkLoc, error) {
	if len(b) != locSize && len(b) != locSize+checkSize {
		return chunkLoc{}, fmt.Errorf("chunk location of %d bytes: %w", len(b), ErrCorrupt)
	}
	l := chunkLoc{pack: binary.BigEndian.Uint32(b[0:]), off: binary.BigEndian.Uint64(b[4:]), len: binary.BigEndian.Uint32(b[12:])}
	if len(b) > locSize {
		if l.len < tailSize {
			return chunkLoc{}, fmt.Errorf("checked location of %d bytes, shorter than a tail: %w", l.len, ErrCorrupt)
		}
		l.hasCheck = true
		copy(l.check[:], b[locSize:])
	}
	return l, nil
}

// tailSize is how many of a blob's last bytes its tail check covers: an
// AEAD envelope's tag.
const tailSize = 16

// tailCheck returns the tail check of data stored under key: the first
// checkSize bytes of the BLAKE3 hash of key followed by data's last
// tailSize bytes. ok is false for data shorter than that.
func tailCheck(key, data []byte) (check [checkSize]byte, ok bool) {
	if len(data) < tailSize {
		return check, false
	}
	var buf [64]byte
	h := crypto.ContentID(append(append(buf[:0], key...), data[len(data)-tailSize:]...))
	copy(check[:], h[:])
	return check, true
}

type packs struct {
	dir string

	mu     sync.Mutex
	files  map[uint32]*os.File
	exact  map[uint32]exactPack // read-only, for reads of no more than asked (exactFile)
	direct map[uint32]*os.File  // write-only, O_DIRECT, for shards (directFile)
	// noDirect: the file system refused O_DIRECT; shards go through the
	// page cache.
	noDirect bool
	active   uint32
	end      uint64          // append offset of the active pack
	kicked   uint64          // writeback of the active pack was started up to here
	dirty    map[uint32]bool // packs appended to since the last sync took the set

	syncMu sync.Mutex // held through a sync
}

// writebackStep is how much is appended to a pack between two starts of
// its writeback. The kernel would start writing back dirty pages only past
// its background threshold, and an fsync would then wait for all of them;
// started early, the disk writes while the data is still coming and the
// fsync waits only for the tail, as a plain file's does.
const writebackStep = 8 << 20

func openPacks(dir string) (*packs, error) {
	dir = filepath.Join(dir, packDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("packs: %w", err)
	}
	p := &packs{dir: dir, files: map[uint32]*os.File{}, exact: map[uint32]exactPack{}, direct: map[uint32]*os.File{}, dirty: map[uint32]bool{}}
	names, err := filepath.Glob(filepath.Join(dir, "pack-*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for _, n := range names {
		var num uint32
		if _, err := fmt.Sscanf(filepath.Base(n), "pack-%08d", &num); err == nil && num > p.active {
			p.active = num
		}
	}
	if p.active == 0 {
		p.active = 1
	}
	f, err := p.file(p.active)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	p.end = uint64(st.Size()) // bytes past the last commit of a crashed run are orphans; they stay
	return p, nil
}

func (p *packs) path(num uint32) string { return filepath.Join(p.dir, fmt.Sprintf("pack-%08d", num)) }

// file returns the open pack num. p.mu is held.
func (p *packs) file(num uint32) (*os.File, error) {
	if f, ok := p.files[num]; ok {
		return f, nil
	}
	f, err := os.OpenFile(p.path(num), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pack %d: %w", num, err)
	}
	p.files[num] = f
	return f, nil
}

// append writes data at the end of the active pack and returns its place.
// Concurrent appends write in parallel. With direct, data is written with
// O_DIRECT when it can be (see directOK).
func (p *packs) append(data []byte, direct bool) (chunkLoc, error) {
	direct = direct && p.directOK(data)
	p.mu.Lock()
	size := uint64(len(data))
	if direct {
		p.end, size = alignUp(p.end), alignUp(size)
	}
	if p.end+size > packMaxSize && p.end > 0 {
		p.active++
		p.end, p.kicked = 0, 0
	}
	loc := chunkLoc{pack: p.active, off: p.end, len: uint32(len(data))}
	var f *os.File
	var err error
	if direct {
		f, err = p.directFile(p.active)
		if f == nil && err == nil { // the file system takes no O_DIRECT
			direct, size = false, uint64(len(data))
		}
	}
	if !direct && err == nil {
		f, err = p.file(p.active)
	}
	if err != nil {
		p.mu.Unlock()
		return loc, err
	}
	p.end += size
	from, kick := p.kicked, !direct && p.end-p.kicked >= writebackStep
	if kick {
		p.kicked = p.end
	}
	p.mu.Unlock()
	if appendHook != nil {
		appendHook()
	}
	if err := p.writeAt(f, data, size, loc, direct); err != nil {
		if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
			return loc, fmt.Errorf("pack %d: %w: %v", loc.pack, ErrNoSpace, err)
		}
		return loc, fmt.Errorf("pack %d: %w", loc.pack, err)
	}
	// Only now is the pack dirty: a sync that took the dirty set while the
	// write was under way may have missed its bytes, and must not take the
	// mark with it. A direct write is on the disk, but perhaps only in
	// its cache, and the file's new size and blocks only in the journal:
	// fdatasync makes them durable.
	p.mu.Lock()
	p.dirty[loc.pack] = true
	p.mu.Unlock()
	if kick {
		// Best effort: it only starts writing; sync makes it durable.
		_ = unix.SyncFileRange(int(f.Fd()), int64(from), int64(loc.off+uint64(loc.len)-from), unix.SYNC_FILE_RANGE_WRITE)
	}
	return loc, nil
}

// Direct writes. A storage node writes a shard once and reads it at most
// once more, for a peer that keeps it (or an audit), and its reads skip
// the page cache already (exactFile): writing shards through the page cache
// filled its host's memory with other people's data, at a copy and the
// page bookkeeping per byte, and evicted what the host's owner had cached.
// So shards of directMin bytes or more are written with O_DIRECT, from a
// buffer that is page-aligned with a capacity to the next page (the
// network's PUT bodies are), at a page-aligned offset; the pack holds up to
// a page of padding after each. Anything else, or where the file system
// refuses O_DIRECT, goes through the page cache as before.
const directMin = 64 << 10

// directWrites says to write shards with O_DIRECT; tests turn it off to
// test the other way.
var directWrites = true

func alignUp(n uint64) uint64 { return (n + directAlign - 1) &^ (directAlign - 1) }

// alignedSlice returns a slice of length n and capacity size (at least n)
// whose array starts on a directAlign boundary, as O_DIRECT wants.
func alignedSlice(n, size int) []byte {
	raw := make([]byte, size+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%directAlign)) % directAlign
	return raw[skip : skip+n : skip+size]
}

// directOK reports whether data can be written with O_DIRECT as it is.
func (p *packs) directOK(data []byte) bool {
	return directWrites && len(data) >= directMin &&
		uint64(cap(data)) >= alignUp(uint64(len(data))) &&
		uintptr(unsafe.Pointer(unsafe.SliceData(data)))%directAlign == 0
}

// directFile returns pack num opened for O_DIRECT writes, or nil (and no
// error) if its file system refuses O_DIRECT. p.mu is held.
func (p *packs) directFile(num uint32) (*os.File, error) {
	if p.noDirect {
		return nil, nil
	}
	if f, ok := p.direct[num]; ok {
		return f, nil
	}
	if _, err := p.file(num); err != nil { // creates it
		return nil, err
	}
	f, err := os.OpenFile(p.path(num), os.O_WRONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		p.noDirect = true
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pack %d: %w", num, err)
	}
	p.direct[num] = f
	return f, nil
}

// writeAt writes data at loc through f: with direct (f opened with
// O_DIRECT), with the padding up to size, bytes of data's array past it
// that are never read; the next append starts past them.
func (p *packs) writeAt(f *os.File, data []byte, size uint64, loc chunkLoc, direct bool) error {
	if direct {
		_, err := f.WriteAt(data[:size], int64(loc.off))
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		// An alignment the device wants beyond directAlign: through the
		// page cache, from now on.
		p.mu.Lock()
		p.noDirect = true
		f, err = p.file(loc.pack)
		p.mu.Unlock()
		if err != nil {
			return err
		}
	}
	_, err := f.WriteAt(data, int64(loc.off))
	return err
}

// Test hooks: appendHook runs between an append's reservation and its
// write, packSyncHook between a sync's taking of the dirty set and its
// fdatasyncs.
var appendHook, packSyncHook func()

// exactPack is a pack opened for exact reads; direct: with O_DIRECT.
type exactPack struct {
	f      *os.File
	direct bool
}

// exactFile returns pack num opened for reads of exactly the bytes asked
// for and no more from the disk: a storage node's shards of one segment lie
// side by side in its pack, and a reader wants only the data shards, so the
// read-ahead a sequential-looking series of reads earns would read the
// parity shards between them too (half as much again from the disk in a
// cold read, bench/peers.sh). It is opened with O_DIRECT where the file
// system takes it: a storage node reads a shard once, for a peer that keeps
// it, so filling the page cache with it only cost the node CPU (allocating
// and zeroing pages, then copying out of them: 18% of six peers' CPU while
// a mount read 256 MiB cold from them, perf record -a). p.mu is held.
func (p *packs) exactFile(num uint32) (exactPack, error) {
	if e, ok := p.exact[num]; ok {
		return e, nil
	}
	e := exactPack{direct: directReads}
	var f *os.File
	var err error
	if e.direct {
		f, err = os.OpenFile(p.path(num), os.O_RDONLY|unix.O_DIRECT, 0)
	}
	if !e.direct || errors.Is(err, unix.EINVAL) {
		e.direct = false
		f, err = os.Open(p.path(num))
	}
	if err != nil {
		return e, fmt.Errorf("pack %d: %w", num, err)
	}
	if !e.direct {
		// Best effort: without it, reads only cost more disk time.
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	}
	e.f = f
	p.exact[num] = e
	return e, nil
}

// readFrom reads loc's bytes onto the end of dst (into its spare capacity
// if it has room), exactly (exactFile) or through the page cache, and
// returns the extended slice; on an error, nil if dst was nil, else dst as
// it was.
func (p *packs) readFrom(dst []byte, loc chunkLoc, exact bool) ([]byte, error) {
	var f *os.File
	var err error
	direct := false
	p.mu.Lock()
	if exact {
		var e exactPack
		e, err = p.exactFile(loc.pack)
		f, direct = e.f, e.direct
	} else {
		f, err = p.file(loc.pack)
	}
	p.mu.Unlock()
	if err != nil {
		return dst, err
	}
	n := len(dst)
	b := slices.Grow(dst, int(loc.len))[:n+int(loc.len)]
	read := f.ReadAt
	if direct {
		read = func(out []byte, off int64) (int, error) { return readDirect(f, out, off) }
	}
	m, err := read(b[n:], int64(loc.off))
	if direct && m < int(loc.len) && errors.Is(err, unix.EINVAL) {
		// An alignment the device wants beyond directAlign: read
		// through the page cache.
		p.mu.Lock()
		f, err = p.file(loc.pack)
		p.mu.Unlock()
		if err != nil {
			return dst, err
		}
		m, err = f.ReadAt(b[n:], int64(loc.off))
	}
	if m < int(loc.len) {
		return dst, fmt.Errorf("pack %d at %d: short read of %d bytes: %w: %v", loc.pack, loc.off, m, ErrCorrupt, err)
	}
	return b, nil
}

// directReads says to open packs for exact reads with O_DIRECT; tests turn
// it off to test the other way.
var directReads = true

// directAlign is what O_DIRECT reads align their offset, length and buffer
// to: the page size, which covers the logical block size of the disks
// this runs on.
const directAlign = 4096

// directBufs holds aligned buffers for readDirect (*[]byte).
var directBufs sync.Pool

// readDirect is f.ReadAt for f opened with O_DIRECT: it reads the aligned
// range around out's bytes into an aligned buffer and copies them out.
func readDirect(f *os.File, out []byte, off int64) (int, error) {
	start := off &^ (directAlign - 1)
	size := int(alignUp(uint64(off+int64(len(out)))) - uint64(start))
	var buf []byte
	if b, ok := directBufs.Get().(*[]byte); ok && cap(*b) >= size {
		buf = (*b)[:size]
	} else {
		buf = alignedSlice(size, size)
	}
	defer func() {
		if cap(buf) <= 8<<20 {
			directBufs.Put(&buf)
		}
	}()
	m, err := f.ReadAt(buf, start)
	n := copy(out, buf[min(int(off-start), m):m])
	if n == len(out) {
		err = nil // the aligned range may end past the file's end
	}
	return n, err
}

// willNeed asks the kernel to start reading loc's bytes into the page
// cache, without waiting for them.
func (p *packs) willNeed(loc chunkLoc) {
	p.mu.Lock()
	f, err := p.file(loc.pack)
	p.mu.Unlock()
	if err != nil || loc.len == 0 {
		return
	}
	// Best effort: it is only a hint.
	_ = unix.Fadvise(int(f.Fd()), int64(loc.off), int64(loc.len), unix.FADV_WILLNEED)
}

// punch frees the bytes of deleted chunks.
func (p *packs) punch(locs []chunkLoc) {
	for _, l := range locs {
		p.mu.Lock()
		f, err := p.file(l.pack)
		p.mu.Unlock()
		if err != nil || l.len == 0 {
			continue
		}
		// Best effort: a hole that cannot be punched only wastes space.
		_ = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(l.off), int64(l.len))
	}
}

// sync makes every append so far durable. Syncs run one at a time: one
// that found nothing dirty because another had just taken the set must not
// return before that one's fdatasync has.
func (p *packs) sync() error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.mu.Lock()
	var fs []*os.File
	for num := range p.dirty {
		fs = append(fs, p.files[num])
	}
	p.dirty = map[uint32]bool{}
	p.mu.Unlock()
	if packSyncHook != nil {
		packSyncHook()
	}
	for _, f := range fs {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			p.mu.Lock()
			for num, g := range p.files {
				if g == f {
					p.dirty[num] = true
				}
			}
			p.mu.Unlock()
			return fmt.Errorf("sync %s: %w", f.Name(), err)
		}
	}
	return nil
}

func (p *packs) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, f := range p.files {
		errs = append(errs, f.Close())
	}
	for _, e := range p.exact {
		errs = append(errs, e.f.Close())
	}
	for _, f := range p.direct {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// ChunkFile returns the pack file and offset of chunk id's sealed bytes, for
// tests that damage them.
func (db *DB) ChunkFile(id peerdrive.ChunkID) (path string, off int64, size int, err error) {
	err = db.View(func(t *Txn) error {
		loc, err := t.blobLoc(chunkKey(id))
		if err != nil {
			return err
		}
		path, off, size = db.packs.path(loc.pack), int64(loc.off), int(loc.len)
		return nil
	})
	return path, off, size, err
}
