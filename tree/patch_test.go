package tree

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// patchKeys returns the keys of every patch in the store.
func patchKeys(t *testing.T, db *store.DB) [][]byte {
	t.Helper()
	var keys [][]byte
	err := db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagPatch}, nil, false, func(k, _ []byte) (bool, error) {
			keys = append(keys, bytes.Clone(k))
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func ext(off int, data string) peerdrive.PatchExtent {
	return peerdrive.PatchExtent{Off: uint32(off), Data: []byte(data)}
}

func readChunk(t *testing.T, tr *Tree, ino peerdrive.Ino, idx int64) []byte {
	t.Helper()
	ref, ok, err := tr.ChunkRef(context.Background(), ino, idx)
	if err != nil || !ok {
		t.Fatalf("chunk %d: %v, %v", idx, ok, err)
	}
	b, err := tr.ReadChunk(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPatchReplay: patches left by a crash (the store closed with no whole
// commit of their chunks) are applied in order by the next ReplayPatches,
// over a stored chunk and over a hole, and are gone after it.
func TestPatchReplay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tr, db := openTestTree(t, dir)
	ino := newFile(t, tr, "f")
	base := bytes.Repeat([]byte("A"), 100<<10)
	s := tr.Seal(0, base)
	if err := tr.Commit(ctx, ino, []Sealed{s}); err != nil {
		t.Fatal(err)
	}
	id := s.ID
	steps := [][]PatchAt{
		{{Idx: 0, Seq: 0, Patch: peerdrive.Patch{Base: id, Len: 100 << 10, Extents: []peerdrive.PatchExtent{ext(10, "xyz")}}},
			{Idx: 1, Seq: 0, Patch: peerdrive.Patch{Len: 12, Extents: []peerdrive.PatchExtent{ext(5, "hole")}}}},
		{{Idx: 0, Seq: 1, Patch: peerdrive.Patch{Base: id, Len: 120 << 10, Extents: []peerdrive.PatchExtent{ext(11, "QQ"), ext(110<<10, "tail")}}}},
	}
	for _, ps := range steps {
		if err := tr.CommitPatched(ctx, ino, nil, ps); err != nil {
			t.Fatal(err)
		}
	}
	// A patch of another base is refused, and nothing of its transaction
	// is written.
	stale := []PatchAt{
		{Idx: 2, Seq: 0, Patch: peerdrive.Patch{Len: 1, Extents: []peerdrive.PatchExtent{ext(0, "s")}}},
		{Idx: 0, Seq: 2, Patch: peerdrive.Patch{Len: 1, Extents: []peerdrive.PatchExtent{ext(0, "s")}}},
	}
	if err := tr.CommitPatched(ctx, ino, nil, stale); !errors.Is(err, ErrStaleBase) {
		t.Fatalf("patch of a hole over a stored chunk: err = %v, want ErrStaleBase", err)
	}
	if got := len(patchKeys(t, db)); got != 3 {
		t.Fatalf("%d patches stored, want 3", got)
	}
	db.Close()

	tr, db = openTestTree(t, dir)
	defer db.Close()
	n, err := tr.ReplayPatches(ctx)
	if err != nil || n != 2 {
		t.Fatalf("ReplayPatches = %d, %v; want 2 chunks", n, err)
	}
	want0 := make([]byte, 120<<10)
	copy(want0, base)
	copy(want0[10:], "xQQ")
	copy(want0[110<<10:], "tail")
	if got := readChunk(t, tr, ino, 0); !bytes.Equal(got, want0) {
		t.Errorf("chunk 0 after replay: %d bytes, differs from the patched base", len(got))
	}
	if got := readChunk(t, tr, ino, 1); string(got) != "\x00\x00\x00\x00\x00hole\x00\x00\x00" {
		t.Errorf("chunk 1 after replay = %q", got)
	}
	if keys := patchKeys(t, db); len(keys) != 0 {
		t.Errorf("%d patches left after replay", len(keys))
	}
	if n, err := tr.ReplayPatches(ctx); n != 0 || err != nil {
		t.Errorf("second replay = %d, %v", n, err)
	}
}

// TestPatchesDropped: every change that replaces a chunk's stored bytes
// deletes its patches, and only its own.
func TestPatchesDropped(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		change func(tr *Tree, ino peerdrive.Ino, data []byte) error
		left   int // patches left, of the two (chunks 0 and 3)
	}{
		{"commit whole", func(tr *Tree, ino peerdrive.Ino, data []byte) error {
			return tr.Commit(ctx, ino, []Sealed{tr.Seal(0, append(bytes.Clone(data), 'x'))})
		}, 1},
		{"commit same content", func(tr *Tree, ino peerdrive.Ino, data []byte) error {
			return tr.Commit(ctx, ino, []Sealed{tr.Seal(0, data)})
		}, 1},
		{"commit hole", func(tr *Tree, ino peerdrive.Ino, data []byte) error {
			return tr.Commit(ctx, ino, []Sealed{tr.Seal(3, make([]byte, 10))})
		}, 1},
		{"truncate", func(tr *Tree, ino peerdrive.Ino, data []byte) error {
			_, err := tr.Truncate(ctx, ino, peerdrive.ChunkSize, nil)
			return err
		}, 1},
		{"truncate to zero", func(tr *Tree, ino peerdrive.Ino, data []byte) error {
			_, err := tr.Truncate(ctx, ino, 0, nil)
			return err
		}, 0},
		{"unlink and purge", func(tr *Tree, ino peerdrive.Ino, data []byte) error {
			if _, _, err := tr.Unlink(ctx, peerdrive.RootIno, "f"); err != nil {
				return err
			}
			return tr.Purge(ctx, ino)
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, db := openTestTree(t, t.TempDir())
			defer db.Close()
			ino := newFile(t, tr, "f")
			data := []byte("stored chunk zero")
			s := tr.Seal(0, data)
			if err := tr.Commit(ctx, ino, []Sealed{s}); err != nil {
				t.Fatal(err)
			}
			err := tr.CommitPatched(ctx, ino, nil, []PatchAt{
				{Idx: 0, Patch: peerdrive.Patch{Base: s.ID, Len: uint32(len(data)), Extents: []peerdrive.PatchExtent{ext(0, "S")}}},
				{Idx: 3, Patch: peerdrive.Patch{Len: 10, Extents: []peerdrive.PatchExtent{ext(2, "h")}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.change(tr, ino, data); err != nil {
				t.Fatal(err)
			}
			if got := len(patchKeys(t, db)); got != c.left {
				t.Errorf("%d patches left, want %d", got, c.left)
			}
		})
	}
}

// TestStalePatchDeleted: a patch whose base is not its chunk's (which this
// code never writes) is deleted by the replay, which leaves the chunk alone.
func TestStalePatchDeleted(t *testing.T) {
	ctx := context.Background()
	tr, db := openTestTree(t, t.TempDir())
	defer db.Close()
	ino := newFile(t, tr, "f")
	data := []byte("current")
	if err := tr.Commit(ctx, ino, []Sealed{tr.Seal(0, data)}); err != nil {
		t.Fatal(err)
	}
	p := peerdrive.Patch{Base: peerdrive.ChunkID{1}, Len: 7, Extents: []peerdrive.PatchExtent{ext(0, "STALE")}}
	if err := db.Update(0, func(tx *store.Txn) error { return tr.putRecord(tx, patchKey(ino, 0, 0), &p) }); err != nil {
		t.Fatal(err)
	}
	if n, err := tr.ReplayPatches(ctx); err != nil || n != 1 {
		t.Fatalf("ReplayPatches = %d, %v", n, err)
	}
	if got := readChunk(t, tr, ino, 0); string(got) != "current" {
		t.Errorf("chunk = %q after a stale patch, want %q", got, "current")
	}
	if got := len(patchKeys(t, db)); got != 0 {
		t.Errorf("%d patches left", got)
	}
}
