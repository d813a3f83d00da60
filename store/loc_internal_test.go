package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/peerdrive/peerdrive"
)

// TestLocEncoding: a location encodes to 16 bytes (formats 1 and 2, and
// shards) or, with a tail check, 32 bytes (format 3), and decodes back;
// other lengths, and a check of fewer bytes than a tail, are corrupt.
func TestLocEncoding(t *testing.T) {
	check := [checkSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, c := range []struct {
		name string
		loc  chunkLoc
		size int
	}{
		{"plain", chunkLoc{pack: 7, off: 1 << 33, len: 1 << 20}, 16},
		{"checked", chunkLoc{pack: 1, off: 5, len: 1<<20 + 41, hasCheck: true, check: check}, 32},
		{"checked, as short as a tail", chunkLoc{pack: 1, off: 0, len: tailSize, hasCheck: true, check: check}, 32},
	} {
		b := c.loc.encode()
		if len(b) != c.size {
			t.Fatalf("%s: %d bytes, want %d", c.name, len(b), c.size)
		}
		got, err := decodeLoc(b)
		if err != nil || got != c.loc {
			t.Fatalf("%s: decoded %+v, %v; want %+v", c.name, got, err, c.loc)
		}
	}
	short := chunkLoc{len: tailSize - 1, hasCheck: true}.encode()
	for _, b := range [][]byte{nil, make([]byte, 15), make([]byte, 17), make([]byte, 31), make([]byte, 33), short} {
		if _, err := decodeLoc(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d bytes: %v, want ErrCorrupt", len(b), err)
		}
	}
	if _, ok := tailCheck([]byte("key"), []byte("short")); ok {
		t.Error("a blob shorter than a tail got a check")
	}
}

// TestChunkTail: a chunk's location records a check of its ID and its last
// 16 bytes, which every read compares: bytes changed there, another
// chunk's bytes where the location points, or another chunk's whole
// location under its ID are ErrCorrupt, not bytes of another chunk. A
// location from before format 3 reads as before, untailed; shards get no
// check.
func TestChunkTail(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, b := bytes.Repeat([]byte("a"), 5000), bytes.Repeat([]byte("b"), 5000)
	a[len(a)-1], b[len(b)-1] = 'A', 'B'
	ida, idb := peerdrive.ChunkID{1}, peerdrive.ChunkID{2}
	var shard peerdrive.ShardID
	shard[0] = 3
	if err := db.Update(0, func(tx *Txn) error {
		if err := tx.PutChunk(ida, a); err != nil {
			return err
		}
		if err := tx.PutChunk(idb, b); err != nil {
			return err
		}
		return tx.PutBlob(shardKey(shard), a)
	}); err != nil {
		t.Fatal(err)
	}
	read := func(id peerdrive.ChunkID) ([]byte, bool, error) {
		var got []byte
		var tailed bool
		err := db.View(func(tx *Txn) error {
			var err error
			got, tailed, err = tx.AppendChunk(nil, id)
			return err
		})
		return got, tailed, err
	}
	if got, tailed, err := read(ida); err != nil || !tailed || !bytes.Equal(got, a) {
		t.Fatalf("stored chunk: tailed %v, %v, equal %v", tailed, err, bytes.Equal(got, a))
	}
	if v := mustGet(t, db, shardKey(shard)); len(v) != locSize {
		t.Fatalf("shard location of %d bytes, want %d (no tail)", len(v), locSize)
	}

	// a's location pointing at b's bytes, with a's check or b's (wrong
	// index entries).
	va, vb := mustGet(t, db, chunkKey(ida)), mustGet(t, db, chunkKey(idb))
	wrong, _ := decodeLoc(vb)
	right, _ := decodeLoc(va)
	wrong.check = right.check
	for _, v := range [][]byte{wrong.encode(), vb} {
		mustSet(t, db, chunkKey(ida), v)
		if _, _, err := read(ida); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("location at another chunk's bytes: %v, want ErrCorrupt", err)
		}
	}
	mustSet(t, db, chunkKey(ida), va)

	// The last byte of a changed on the disk.
	path, off, size, err := db.ChunkFile(ida)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{'x'}, off+int64(size)-1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(ida); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("changed tail: %v, want ErrCorrupt", err)
	}
	if _, err := f.WriteAt([]byte{'A'}, off+int64(size)-1); err != nil {
		t.Fatal(err)
	}

	// A location written before format 3: read, untailed.
	mustSet(t, db, chunkKey(ida), va[:locSize])
	if got, tailed, err := read(ida); err != nil || tailed || !bytes.Equal(got, a) {
		t.Fatalf("untailed location: tailed %v, %v, equal %v", tailed, err, bytes.Equal(got, a))
	}
}

func mustGet(t *testing.T, db *DB, key []byte) []byte {
	t.Helper()
	var v []byte
	if err := db.View(func(tx *Txn) error {
		var err error
		v, err = tx.Get(key)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustSet(t *testing.T, db *DB, key, v []byte) {
	t.Helper()
	if err := db.Update(0, func(tx *Txn) error { return tx.Set(key, v) }); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeLoc feeds the location decoder: what it accepts encodes back
// to the same bytes, and all it refuses is ErrCorrupt.
func FuzzDecodeLoc(f *testing.F) {
	f.Add(chunkLoc{pack: 1, off: 4096, len: 1 << 20}.encode())
	f.Add(chunkLoc{pack: 1, off: 4096, len: 1 << 20, hasCheck: true, check: [checkSize]byte{7}}.encode())
	f.Add(make([]byte, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLoc(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if again := l.encode(); !bytes.Equal(again, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, l, again)
		}
	})
}
