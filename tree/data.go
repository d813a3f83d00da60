package tree

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

func marshalAny(r any) ([]byte, error)     { return peerdrive.Marshal(r) }
func unmarshalAny(b []byte, r any) error   { return peerdrive.Unmarshal(b, r) }
func marshalPlain(r any) ([]byte, error)   { return peerdrive.Marshal(r) }
func unmarshalPlain(b []byte, r any) error { return peerdrive.Unmarshal(b, r) }
func beUint64(b []byte) uint64             { return binary.BigEndian.Uint64(b) }

// Sealed is a chunk made ready for Commit by Seal: encrypted and hashed, or a
// hole (all zero bytes, stored as no chunk at all).
type Sealed struct {
	Idx    int64
	Hole   bool
	Len    uint32
	ID     peerdrive.ChunkID
	Dedup  [32]byte
	Sealed []byte
}

// Seal encrypts and hashes the plaintext of chunk idx. It takes no lock and
// does no I/O: callers run it in parallel.
func (t *Tree) Seal(idx int64, plain []byte) Sealed {
	if isZero(plain) {
		return Sealed{Idx: idx, Hole: true, Len: uint32(len(plain))}
	}
	s := Sealed{Idx: idx, Len: uint32(len(plain)), Dedup: t.keys.DedupHash(plain)}
	s.Sealed = t.keys.SealChunk(sealDst(len(plain)), plain)
	s.ID = peerdrive.ChunkID(contentID(s.Sealed))
	return s
}

// sealSlack is room for a chunk envelope's header and tag.
const sealSlack = 64

// sealBufs holds buffers for sealing whole chunks: a sequential writer
// seals one per MiB, and fresh ones cost their zeroing and the garbage
// collections they bring about.
var sealBufs = sync.Pool{New: func() any { b := make([]byte, 0, peerdrive.ChunkSize+sealSlack); return &b }}

func sealDst(n int) []byte {
	if n < peerdrive.ChunkSize/2 {
		return make([]byte, 0, n+sealSlack)
	}
	return (*sealBufs.Get().(*[]byte))[:0]
}

// Recycle gives the sealed bytes of s back for reuse once Commit returned;
// s holds none after it.
func (t *Tree) Recycle(s *Sealed) {
	if cap(s.Sealed) == peerdrive.ChunkSize+sealSlack {
		b := s.Sealed[:0]
		sealBufs.Put(&b)
	}
	s.Sealed = nil
}

// IsHole reports whether Seal makes plain a hole, which stores nothing.
func IsHole(plain []byte) bool { return isZero(plain) }

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Commit puts sealed chunks into ino's chunk map in one atomic batch,
// together with ino's current attributes. A chunk whose plaintext is already
// stored is shared instead of stored again; chunks no longer referenced are
// deleted. With no chunks it does nothing: attributes changed in memory
// alone are written by the next Flush or Sync (a transaction on every close
// would cost a round trip to the store per file).
func (t *Tree) Commit(ctx context.Context, ino peerdrive.Ino, chunks []Sealed) error {
	return t.CommitFiles(ctx, []FileChunks{{Ino: ino, Chunks: chunks}})
}

// FileChunks are sealed chunks of one file, for CommitFiles.
type FileChunks struct {
	Ino    peerdrive.Ino
	Chunks []Sealed
}

// CommitFiles is Commit for several files in one atomic batch: a run of
// small files costs one store transaction, not one each. If any file fails,
// none is committed.
func (t *Tree) CommitFiles(ctx context.Context, files []FileChunks) error {
	var need int64
	n := 0
	for _, f := range files {
		n += len(f.Chunks)
		for _, c := range f.Chunks {
			need += int64(len(c.Sealed))
		}
	}
	if n == 0 {
		return nil
	}
	return t.update(ctx, need, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		for _, f := range files {
			if len(f.Chunks) == 0 {
				continue
			}
			in, err := t.mod(touched, f.Ino)
			if err != nil {
				return err
			}
			for _, c := range f.Chunks {
				delta, err := t.commitOne(tx, f.Ino, c)
				if err != nil {
					return err
				}
				addAlloc(in, delta)
			}
		}
		return nil
	})
}

// addAlloc changes in's count of data bytes by delta, if it is known. A
// count that would go below nothing is wrong: it becomes unknown (0).
func addAlloc(in *peerdrive.Inode, delta int64) {
	if in.Alloc > 0 {
		in.Alloc = uint64(max(int64(in.Alloc)+delta, 0))
	}
}

// commitOne puts c in ino's chunk map and returns the change in the bytes
// of data the map holds.
func (t *Tree) commitOne(tx *store.Txn, ino peerdrive.Ino, c Sealed) (int64, error) {
	if err := t.dropPatch(tx, ino, c.Idx); err != nil {
		return 0, err
	}
	mk := mapKey(ino, c.Idx)
	var old peerdrive.ChunkRef
	hadOld := true
	e := t.cache[ino]
	if e != nil && e.noChunks {
		hadOld = false
	} else if err := t.getRecord(tx, mk, &old); errors.Is(err, ErrNotFound) {
		hadOld = false
	} else if err != nil {
		return 0, err
	}
	var oldLen int64
	if hadOld {
		oldLen = int64(old.Len)
	}
	if c.Hole {
		if hadOld {
			if err := tx.Delete(mk); err != nil {
				return 0, err
			}
			return -oldLen, t.decRef(tx, old.ID)
		}
		return 0, nil
	}
	id := c.ID
	// Deduplicate by the keyed hash of the plaintext.
	var info peerdrive.ChunkInfo // of the stored chunk, if dv is set
	dv, err := tx.Get(idKey(tagDedup, c.Dedup))
	switch {
	case err == nil && len(dv) == 32:
		copy(id[:], dv)
		// The dedup index is not sealed: trust it only if the chunk's own
		// sealed record carries the same dedup hash.
		if ierr := t.getRecord(tx, idKey(tagInfo, id), &info); ierr != nil || info.Dedup != c.Dedup {
			t.log.Warn("dedup index entry does not match its chunk; storing anew", "chunk", id.Short())
			id, dv = c.ID, nil
		}
	case err == nil || errors.Is(err, store.ErrNotFound):
		dv = nil
	default:
		return 0, err
	}
	if hadOld && old.ID == id {
		return 0, nil // same content again
	}
	if dv != nil {
		info.Refs++
		if err := t.putRecord(tx, idKey(tagInfo, id), &info); err != nil {
			return 0, err
		}
	} else {
		if err := tx.PutChunk(id, c.Sealed); err != nil {
			return 0, err
		}
		// Sealed here: the envelope needs no check before a partial read.
		// (Should the transaction fail, a partial read finds no such
		// envelope and reads the chunk whole.)
		t.chunks.noteOpened(id, c.Sealed)
		info = peerdrive.ChunkInfo{Refs: 1, Dedup: c.Dedup, Len: c.Len, Sealed: uint32(len(c.Sealed))}
		if err := t.putRecord(tx, idKey(tagInfo, id), &info); err != nil {
			return 0, err
		}
		if err := tx.Set(idKey(tagDedup, c.Dedup), id[:]); err != nil {
			return 0, err
		}
		if t.remote != nil {
			var sz [4]byte
			binary.BigEndian.PutUint32(sz[:], uint32(len(c.Sealed)))
			if err := tx.Set(idKey(tagQueue, id), sz[:]); err != nil {
				return 0, err
			}
			t.queued = append(t.queued, chunkEvent{id, int64(len(c.Sealed))})
		}
		t.stats.Chunks++
		t.stats.Used += uint64(c.Len)
		t.stats.Stored += uint64(len(c.Sealed))
	}
	if err := t.putRecord(tx, mk, &peerdrive.ChunkRef{ID: id, Len: c.Len}); err != nil {
		return 0, err
	}
	if e != nil {
		e.noChunks = false // rollback restores it (mod saved e)
	}
	delta := int64(c.Len) - oldLen
	if hadOld {
		return delta, t.decRef(tx, old.ID)
	}
	return delta, nil
}

func (t *Tree) decRef(tx *store.Txn, id peerdrive.ChunkID) error {
	var info peerdrive.ChunkInfo
	if err := t.getRecord(tx, idKey(tagInfo, id), &info); err != nil {
		return fmt.Errorf("chunk %s info: %w", id.Short(), err)
	}
	if info.Refs > 1 {
		info.Refs--
		return t.putRecord(tx, idKey(tagInfo, id), &info)
	}
	t.chunks.drop(id)
	t.stats.Chunks--
	t.stats.Used -= uint64(info.Len)
	t.stats.Stored -= uint64(info.Sealed)
	if err := tx.Delete(idKey(tagDedup, info.Dedup)); err != nil {
		return err
	}
	if err := tx.Delete(idKey(tagInfo, id)); err != nil {
		return err
	}
	if t.remote != nil {
		if err := tx.Delete(idKey(tagQueue, id)); err != nil {
			return err
		}
		if err := tx.Delete(idKey(tagLocation, id)); err != nil {
			return err
		}
		t.dropped = append(t.dropped, chunkEvent{id, int64(info.Sealed)})
	}
	return tx.DeleteChunk(id)
}

// dropChunks removes ino's chunk map entries from index from on and returns
// the bytes of data they held.
func (t *Tree) dropChunks(tx *store.Txn, ino peerdrive.Ino, from int64) (int64, error) {
	freed, _, err := t.dropChunksMax(tx, ino, from, 0)
	return freed, err
}

// dropChunksMax is dropChunks of at most limit chunks (0: all), the first
// ones; more says chunks are left.
func (t *Tree) dropChunksMax(tx *store.Txn, ino peerdrive.Ino, from int64, limit int) (freed int64, more bool, err error) {
	type ent struct {
		key []byte
		ref peerdrive.ChunkRef
	}
	var drop []ent
	err = tx.Iterate(inoKey(tagMap, ino), mapKey(ino, from), true, func(k, v []byte) (bool, error) {
		if limit > 0 && len(drop) == limit {
			more = true
			return false, nil
		}
		var r peerdrive.ChunkRef
		if err := t.openRecordInto(k, v, &r); err != nil {
			return false, err
		}
		drop = append(drop, ent{append([]byte(nil), k...), r})
		return true, nil
	})
	if err != nil {
		return 0, false, err
	}
	for _, e := range drop {
		if err := tx.Delete(e.key); err != nil {
			return 0, false, err
		}
		if err := t.decRef(tx, e.ref.ID); err != nil {
			return 0, false, err
		}
		freed += int64(e.ref.Len)
	}
	return freed, more, nil
}

// dropTail drops ino's chunks from index from on, last first, purgeChunks
// per transaction, until at most purgeChunks are left for Truncate's own
// (see dropUnlinkedChunks: in one transaction, cutting a file of thousands
// of chunks failed). The size is left alone until Truncate's transaction:
// a crash half-way leaves the file at its old size, its end zeroed, never
// a size over chunks that should be gone. The caller keeps writers of ino
// out meanwhile (fs holds the file's lock).
func (t *Tree) dropTail(ctx context.Context, ino peerdrive.Ino, from int64) error {
	idxs, _, err := t.ChunkRefs(ctx, ino, from)
	if err != nil {
		return err
	}
	for end := len(idxs) - purgeChunks; end > 0; end -= purgeChunks {
		err := t.update(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
			in, err := t.mod(touched, ino)
			if err != nil {
				return err
			}
			freed, err := t.dropChunks(tx, ino, idxs[end])
			if err != nil {
				return err
			}
			addAlloc(in, -freed)
			return t.dropPatches(tx, ino, idxs[end])
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Truncate sets ino's size. Chunks wholly past the new end are dropped; tail,
// if not nil, replaces the chunk the new end falls in (the caller cut it).
func (t *Tree) Truncate(ctx context.Context, ino peerdrive.Ino, size uint64, tail *Sealed) (peerdrive.Inode, error) {
	var out peerdrive.Inode
	need := int64(0)
	if tail != nil {
		need = int64(len(tail.Sealed))
	}
	from := int64((size + peerdrive.ChunkSize - 1) / peerdrive.ChunkSize)
	if err := t.dropTail(ctx, ino, from); err != nil {
		return out, err
	}
	err := t.update(ctx, need, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		in, err := t.mod(touched, ino)
		if err != nil {
			return err
		}
		freed, err := t.dropChunks(tx, ino, from)
		if err != nil {
			return err
		}
		if err := t.dropPatches(tx, ino, from); err != nil {
			return err
		}
		addAlloc(in, -freed)
		if tail != nil {
			delta, err := t.commitOne(tx, ino, *tail)
			if err != nil {
				return err
			}
			addAlloc(in, delta)
		}
		now := Now()
		in.Size = size
		in.Mtime, in.Ctime = now, now
		out = *in
		return nil
	})
	return out, err
}

// ChunkRef returns the chunk at index idx of ino; ok is false for a hole.
func (t *Tree) ChunkRef(ctx context.Context, ino peerdrive.Ino, idx int64) (ref peerdrive.ChunkRef, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return ref, false, err
	}
	err = t.db.View(func(tx *store.Txn) error { return t.getRecord(tx, mapKey(ino, idx), &ref) })
	if errors.Is(err, ErrNotFound) {
		return ref, false, nil
	}
	if err != nil {
		return ref, false, fmt.Errorf("inode %d chunk %d: %w", ino, idx, err)
	}
	return ref, true, nil
}

// ChunkRefs returns ino's chunk map from index from on, in order.
func (t *Tree) ChunkRefs(ctx context.Context, ino peerdrive.Ino, from int64) (idx []int64, refs []peerdrive.ChunkRef, err error) {
	err = t.db.View(func(tx *store.Txn) error {
		return tx.Iterate(inoKey(tagMap, ino), mapKey(ino, from), true, func(k, v []byte) (bool, error) {
			var r peerdrive.ChunkRef
			if err := t.openRecordInto(k, v, &r); err != nil {
				return false, err
			}
			idx = append(idx, int64(beUint64(k[9:])))
			refs = append(refs, r)
			return true, nil
		})
	})
	return idx, refs, err
}

// PrefetchChunks starts reading the chunks from index from to index to of
// ino (inclusive) from the local disk in the background; see
// store.DB.PrefetchChunks. Chunks in the cache are skipped.
func (t *Tree) PrefetchChunks(ino peerdrive.Ino, from, to int64) {
	var ids []peerdrive.ChunkID
	_ = t.db.View(func(tx *store.Txn) error {
		for i := from; i <= to; i++ {
			var ref peerdrive.ChunkRef
			if err := t.getRecord(tx, mapKey(ino, i), &ref); err != nil {
				continue // a hole, or an error the real read reports
			}
			if _, ok := t.chunks.get(ref.ID); !ok {
				ids = append(ids, ref.ID)
			}
		}
		return nil
	})
	if len(ids) > 0 {
		t.db.PrefetchChunks(ids)
	}
}

// KeepChunk puts a copy of the plaintext of chunk id, just committed, in the
// cache of decrypted chunks, where the next ReadChunk of it finds it.
func (t *Tree) KeepChunk(id peerdrive.ChunkID, plain []byte) {
	t.chunks.put(id, slices.Clone(plain))
}

// ReadChunk returns the verified plaintext of ref, from the local store or
// else from the remote. Only a fetch from the remote honours the
// cancellation of ctx. The returned slice is shared with a cache: callers
// must not change it.
func (t *Tree) ReadChunk(ctx context.Context, ref peerdrive.ChunkRef) ([]byte, error) {
	if b, ok := t.chunks.get(ref.ID); ok {
		return b, nil
	}
	// One load per chunk at a time: a reader that catches up with the
	// read-ahead of its chunk waits for it instead of doing it again.
	l, first := t.chunks.loading(ref.ID)
	if !first {
		select {
		case <-l.done:
		case <-ctx.Done():
			// Interrupted: a local chunk is read all the same (local
			// reads are never cut short); a fetch honours ctx.
			return t.loadChunk(ctx, ref)
		}
		switch {
		case l.err == nil && len(l.data) == int(ref.Len):
			return l.data, nil
		case l.err != nil && !errors.Is(l.err, context.Canceled) && !errors.Is(l.err, context.DeadlineExceeded):
			return nil, l.err // a corrupt or unavailable chunk stays so
		}
		// The other load was interrupted: try ourselves.
		return t.loadChunk(ctx, ref)
	}
	l.data, l.err = t.loadChunk(ctx, ref)
	t.chunks.loaded(ref.ID, l)
	return l.data, l.err
}

// partialMax is the largest read ReadChunkAt serves by decrypting only
// its part of a chunk: larger ones (sequential readers) take the whole
// chunk into the cache.
const partialMax = 128 << 10

// ReadChunkAt copies the plaintext of ref from offset off on into out, as
// much as there is, and returns the bytes copied. A small read of a chunk
// out of the cache whose local envelope was opened whole before (checked
// to be its ID's and authenticated, loadChunk) decrypts only its part: the envelope's header
// and length are compared with those opened, and its bytes are taken to be
// the same, as the kernel's page cache of a plain file takes the disk's
// (docs/format.md §3). A random reader of a large file, which misses the
// cache, pays for the bytes it reads instead of a whole chunk each time.
func (t *Tree) ReadChunkAt(ctx context.Context, ref peerdrive.ChunkRef, off int, out []byte) (int, error) {
	if off < 0 || off >= int(ref.Len) {
		return 0, nil
	}
	if b, ok := t.chunks.get(ref.ID); ok && off < len(b) {
		return copy(out, b[off:]), nil
	}
	n := min(len(out), int(ref.Len)-off)
	if n <= partialMax {
		if o, ok := t.chunks.openedEnv(ref.ID); ok {
			if err := t.readPart(ref.ID, o, off, out[:n]); err == nil {
				return n, nil
			}
			t.chunks.forgetOpened(ref.ID) // the whole chunk is checked again below
		}
	}
	plain, err := t.ReadChunk(ctx, ref)
	if err != nil || off >= len(plain) {
		return 0, err
	}
	return copy(out, plain[off:]), nil
}

// readPart decrypts plaintext bytes [off, off+len(out)) of chunk id, whose
// envelope o was opened whole before, into out.
func (t *Tree) readPart(id peerdrive.ChunkID, o openedEnv, off int, out []byte) error {
	b := sealedBufs.Get().(*[]byte)
	defer putSealed(b)
	var loc store.Loc
	err := t.db.View(func(tx *store.Txn) error {
		var err error
		if loc, err = tx.ChunkLoc(id); err != nil {
			return err
		}
		h, err := tx.ReadAt((*b)[:0], loc, 0, crypto.ChunkHeaderSize)
		if err != nil {
			return err
		}
		if !o.same(h, loc.Size()) {
			return fmt.Errorf("chunk %s: envelope changed since it was opened: %w", id.Short(), ErrCorrupt)
		}
		*b, err = tx.ReadAt(h[:0], loc, int64(crypto.ChunkHeaderSize+off), int64(len(out)))
		return err
	})
	if err != nil {
		return err
	}
	// Still there? A chunk deleted while it was read may have had its
	// bytes freed (zeros) under the read; its deletion commits before
	// that, so a lookup after the read sees it.
	err = t.db.View(func(tx *store.Txn) error {
		now, err := tx.ChunkLoc(id)
		if err == nil && now != loc {
			err = fmt.Errorf("chunk %s moved while read: %w", id.Short(), ErrCorrupt)
		}
		return err
	})
	if err != nil {
		return err
	}
	_, err = t.keys.DecryptChunkRange(out[:0], o.header[:], *b, int64(off))
	return err
}

// sealedBufs holds buffers for sealed chunks read from the local store:
// they live only until decrypted, and a fresh megabyte per read cost its
// zeroing (a tenth of the daemon's CPU under random reads of a file open
// for writing, which miss the kernel's page cache).
var sealedBufs = sync.Pool{New: func() any { b := make([]byte, 0, peerdrive.ChunkSize+sealSlack); return &b }}

// readSealed reads chunk id's sealed bytes from the local store into a
// buffer of sealedBufs, which the caller puts back (also after an error).
func (t *Tree) readSealed(id peerdrive.ChunkID) (b *[]byte, tailed bool, err error) {
	b = sealedBufs.Get().(*[]byte)
	err = t.db.View(func(tx *store.Txn) error {
		var err error
		*b, tailed, err = tx.AppendChunk((*b)[:0], id)
		return err
	})
	if err != nil {
		err = fmt.Errorf("chunk %s: %w", id.Short(), err)
	}
	return b, tailed, err
}

// putSealed gives b back to sealedBufs, unless an object larger than any
// chunk made it grow.
func putSealed(b *[]byte) {
	if cap(*b) <= peerdrive.ChunkSize+sealSlack {
		*b = (*b)[:0]
		sealedBufs.Put(b)
	}
}

// loadChunk reads, verifies and decrypts ref and puts it in the cache.
func (t *Tree) loadChunk(ctx context.Context, ref peerdrive.ChunkRef) ([]byte, error) {
	// The local store answers at once: only a fetch from peers is worth
	// cancelling (an interrupt may come from any signal).
	sealed, tailed, err := t.readSealed(ref.ID)
	defer putSealed(sealed)
	// verified: the bytes are known to be ref.ID's, which its hash would
	// show. A local envelope whose location recorded its tag, which it
	// ends with, is the one stored under ref.ID once checked against it
	// (store.Txn.AppendChunk): the AEAD, opened below, authenticates the
	// rest of it. That saves hashing a megabyte for every chunk read from
	// the disk, a fifth of the CPU of a cold sequential read.
	verified := tailed
	local := false
	var env []byte
	switch {
	case err == nil:
		env = *sealed
		local = true
		if t.remote != nil {
			t.remote.Accessed(ref.ID)
		}
	case errors.Is(err, store.ErrNotFound) && t.remote != nil:
		if vr, ok := t.remote.(verifyingRemote); ok {
			env, err = vr.FetchVerified(ctx, ref.ID)
			verified = err == nil
		} else {
			env, err = t.remote.Fetch(ctx, ref.ID)
		}
		if cerr := ctx.Err(); err != nil && cerr != nil {
			return nil, fmt.Errorf("chunk %s: fetch: %w", ref.ID.Short(), cerr)
		}
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w: %v", ref.ID.Short(), ErrUnavailable, err)
		}
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("chunk %s missing: %w", ref.ID.Short(), ErrCorrupt)
	default:
		return nil, err
	}
	if local && !verified {
		// An envelope opened whole before (or sealed here) in this run
		// is not hashed again: its header and length say it is the same
		// one, and the AEAD still authenticates all of it.
		if o, ok := t.chunks.openedEnv(ref.ID); ok && o.same(env, int64(len(env))) {
			verified = true
		}
	}
	if !verified && peerdrive.ChunkID(contentID(env)) != ref.ID {
		return nil, fmt.Errorf("chunk %s: hash mismatch: %w", ref.ID.Short(), ErrCorrupt)
	}
	plain, err := t.keys.OpenChunk(make([]byte, 0, ref.Len), env)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w: %v", ref.ID.Short(), ErrCorrupt, err)
	}
	if len(plain) != int(ref.Len) {
		return nil, fmt.Errorf("chunk %s: %d bytes, map says %d: %w", ref.ID.Short(), len(plain), ref.Len, ErrCorrupt)
	}
	t.chunks.put(ref.ID, plain)
	if local {
		t.chunks.noteOpened(ref.ID, env)
	}
	return plain, nil
}
