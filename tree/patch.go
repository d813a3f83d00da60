package tree

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// ErrStaleBase is returned by CommitPatched when a patch's base is no longer
// the chunk the file's map names: the caller seals the chunk whole instead.
var ErrStaleBase = errors.New("patch base is not the stored chunk")

// PatchAt is patch number Seq of chunk Idx of a file: a chunk's patches
// are numbered from 0, and each holds what was written since the one before.
type PatchAt struct {
	Idx   int64
	Seq   uint32
	Patch peerdrive.Patch
}

// CommitPatched is Commit that also stores patches of other chunks of ino
// (docs/format.md §5.9) in the same transaction: an fsync of a file rewritten
// in small pieces writes the pieces, not whole chunks. A chunk's patches stay
// until it is committed whole (Commit, CommitFiles, Truncate, Purge), which
// deletes them. Each patch's Base must be the ID of the chunk the map holds
// at Idx (zero for a hole), else nothing is committed and the error wraps
// ErrStaleBase.
func (t *Tree) CommitPatched(ctx context.Context, ino peerdrive.Ino, chunks []Sealed, patches []PatchAt) error {
	if len(patches) == 0 {
		return t.Commit(ctx, ino, chunks)
	}
	var need int64
	for _, c := range chunks {
		need += int64(len(c.Sealed))
	}
	for _, p := range patches {
		for _, e := range p.Patch.Extents {
			need += int64(len(e.Data))
		}
	}
	return t.update(ctx, need, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
		in, err := t.mod(touched, ino)
		if err != nil {
			return err
		}
		for _, c := range chunks {
			delta, err := t.commitOne(tx, ino, c)
			if err != nil {
				return err
			}
			addAlloc(in, delta)
		}
		for _, p := range patches {
			var ref peerdrive.ChunkRef
			if err := t.getRecord(tx, mapKey(ino, p.Idx), &ref); errors.Is(err, ErrNotFound) {
				ref.ID = peerdrive.ChunkID{}
			} else if err != nil {
				return err
			}
			if ref.ID != p.Patch.Base {
				return fmt.Errorf("inode %d chunk %d: %w", ino, p.Idx, ErrStaleBase)
			}
			t.patched[ino] = true // a hint: harmless if the transaction fails
			if err := t.putRecord(tx, patchKey(ino, p.Idx, p.Seq), &p.Patch); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropPatch deletes the patches of chunk idx of ino, if it may have some:
// the chunk is being committed whole.
func (t *Tree) dropPatch(tx *store.Txn, ino peerdrive.Ino, idx int64) error {
	if !t.patched[ino] {
		return nil
	}
	return deletePrefix(tx, patchKey(ino, idx), nil)
}

// dropPatches deletes the patches of ino's chunks from index from on.
func (t *Tree) dropPatches(tx *store.Txn, ino peerdrive.Ino, from int64) error {
	if !t.patched[ino] {
		return nil
	}
	return deletePrefix(tx, inoKey(tagPatch, ino), patchKey(ino, from))
}

// deletePrefix deletes the keys under prefix, from start on (nil: all).
func deletePrefix(tx *store.Txn, prefix, start []byte) error {
	var keys [][]byte
	err := tx.Iterate(prefix, start, false, func(k, _ []byte) (bool, error) {
		keys = append(keys, append([]byte(nil), k...))
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ReplayPatches applies the patches a crash left in the store: each patched
// chunk is sealed and committed whole, which deletes its patches. It runs
// when a store is opened for writing, before anything reads the tree's
// files, and returns the number of chunks it patched. Patches whose base is
// no longer their chunk's are deleted with a warning (a later commit holds
// their bytes). A base chunk that cannot be read (it lives on peers that do
// not answer) fails the replay, and the patches stay for the next try.
func (t *Tree) ReplayPatches(ctx context.Context) (int, error) {
	type chunk struct {
		ino peerdrive.Ino
		idx int64
		ps  []peerdrive.Patch
	}
	var all []*chunk
	err := t.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagPatch}, nil, true, func(k, v []byte) (bool, error) {
			if len(k) != 21 {
				return false, fmt.Errorf("patch key %x: %w", k, ErrCorrupt)
			}
			ino, idx := peerdrive.Ino(beUint64(k[1:])), int64(beUint64(k[9:]))
			if seq := binary.BigEndian.Uint32(k[17:]); len(all) == 0 || all[len(all)-1].ino != ino || all[len(all)-1].idx != idx {
				if seq != 0 {
					return false, fmt.Errorf("inode %d chunk %d: patches start at %d: %w", ino, idx, seq, ErrCorrupt)
				}
				all = append(all, &chunk{ino: ino, idx: idx})
			} else if c := all[len(all)-1]; int(seq) != len(c.ps) {
				return false, fmt.Errorf("inode %d chunk %d: patch %d after %d: %w", ino, idx, seq, len(c.ps), ErrCorrupt)
			}
			var p peerdrive.Patch
			if err := t.openRecordInto(k, v, &p); err != nil {
				return false, err
			}
			c := all[len(all)-1]
			c.ps = append(c.ps, p)
			return true, nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("patches: %w", err)
	}
	for _, c := range all {
		t.mu.Lock()
		t.patched[c.ino] = true
		t.mu.Unlock()
		if err := t.replayOne(ctx, c.ino, c.idx, c.ps); err != nil {
			return 0, fmt.Errorf("inode %d chunk %d: patch: %w", c.ino, c.idx, err)
		}
	}
	return len(all), nil
}

func (t *Tree) replayOne(ctx context.Context, ino peerdrive.Ino, idx int64, ps []peerdrive.Patch) error {
	_, ierr := t.Inode(ctx, ino)
	if ierr != nil && !errors.Is(ierr, ErrNotFound) {
		return ierr
	}
	ref, ok, err := t.ChunkRef(ctx, ino, idx)
	if err != nil {
		return err
	}
	base := ps[0].Base
	if ierr != nil || ok != (base != peerdrive.ChunkID{}) || ok && ref.ID != base {
		t.log.Warn("stale patches deleted", "ino", ino, "chunk", idx)
		return t.db.Update(0, func(tx *store.Txn) error { return deletePrefix(tx, patchKey(ino, idx), nil) })
	}
	var plain []byte
	if ok {
		if plain, err = t.ReadChunk(ctx, ref); err != nil {
			return err
		}
	}
	if plain, err = peerdrive.ApplyPatches(plain, ps); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	s := t.Seal(idx, plain)
	defer t.Recycle(&s)
	return t.Commit(ctx, ino, []Sealed{s})
}
