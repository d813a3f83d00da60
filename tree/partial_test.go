package tree

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// evictPlain drops id's plaintext from the chunk cache, as a full cache
// would, and keeps what is known of its envelope.
func evictPlain(tr *Tree, id peerdrive.ChunkID) {
	c := tr.chunks
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.order.Remove(e)
		delete(c.m, id)
		c.size -= len(e.Value.(*cached).data)
	}
}

// TestReadChunkAt: reads of parts of a chunk out of the cache give the
// chunk's bytes, whether its envelope was sealed here or never seen (the
// first read opens it whole); an envelope replaced on the disk since it
// was opened is read whole again, and caught by the tag its location
// records.
func TestReadChunkAt(t *testing.T) {
	ctx := context.Background()
	tr, ino := openTreeWithFile(t)
	r := rand.New(rand.NewPCG(3, 4))
	plain := make([]byte, peerdrive.ChunkSize-1000)
	for i := range plain {
		plain[i] = byte(r.Uint32())
	}
	if err := tr.Commit(ctx, ino, []Sealed{tr.Seal(0, plain)}); err != nil {
		t.Fatal(err)
	}
	ref, ok, err := tr.ChunkRef(ctx, ino, 0)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	partial := crypto.PartialOpen(mustEnvelope(t, tr, ref.ID))
	check := func(when string) {
		t.Helper()
		for range 200 {
			off := r.IntN(len(plain) + 10)
			out := make([]byte, 1+r.IntN(8192))
			evictPlain(tr, ref.ID)
			n, err := tr.ReadChunkAt(ctx, ref, off, out)
			want := plain[min(off, len(plain)):min(off+len(out), len(plain))]
			if err != nil || n != len(want) || !bytes.Equal(out[:n], want) {
				t.Fatalf("%s: %d bytes at %d: got %d, %v", when, len(out), off, n, err)
			}
		}
		// A part was decrypted, not the whole chunk into the cache.
		if _, cached := tr.chunks.get(ref.ID); cached == partial {
			t.Fatalf("%s: chunk in the cache %v after small reads, want %v", when, cached, !partial)
		}
	}
	if _, ok := tr.chunks.openedEnv(ref.ID); ok != partial {
		t.Fatalf("sealed here: known %v, want %v (version 2 envelope)", ok, partial)
	}
	check("sealed here")
	tr.chunks.drop(ref.ID) // forgets the envelope too: never seen
	check("never seen")    // the first read opens it whole
	if _, ok := tr.chunks.openedEnv(ref.ID); ok != partial {
		t.Fatalf("after a whole read: known %v, want %v", ok, partial)
	}
	// Another envelope of the same plaintext (another nonce, the same
	// length) where the chunk's lies on the disk: not the one opened, nor
	// the one stored.
	orig := mustEnvelope(t, tr, ref.ID)
	other := tr.keys.SealChunk(nil, plain)
	overwrite(t, tr, ref.ID, other)
	evictPlain(tr, ref.ID)
	if _, err := tr.ReadChunkAt(ctx, ref, 100, make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replaced envelope: %v, want ErrCorrupt", err)
	}
	if _, ok := tr.chunks.openedEnv(ref.ID); ok {
		t.Fatal("the replaced envelope is still taken for the one opened")
	}
	overwrite(t, tr, ref.ID, orig)
	// A chunk gone from the store (deleted under a reader) is an error,
	// not bytes read from where it was.
	evictPlain(tr, ref.ID)
	if n, err := tr.ReadChunkAt(ctx, ref, 100, make([]byte, 10)); err != nil || n != 10 {
		t.Fatalf("envelope back under its ID: %d, %v", n, err)
	}
	if err := tr.db.Update(0, func(tx *store.Txn) error { return tx.DeleteChunk(ref.ID) }); err != nil {
		t.Fatal(err)
	}
	evictPlain(tr, ref.ID)
	if _, err := tr.ReadChunkAt(ctx, ref, 100, make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("deleted chunk: %v, want ErrCorrupt", err)
	}
}

// overwrite writes env over the bytes of chunk id in its pack, as a disk
// that changed them would.
func overwrite(t *testing.T, tr *Tree, id peerdrive.ChunkID, env []byte) {
	t.Helper()
	path, off, size, err := tr.db.ChunkFile(id)
	if err != nil || size != len(env) {
		t.Fatalf("chunk file: %d bytes, %v; want %d bytes", size, err, len(env))
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(env, off); err != nil {
		t.Fatal(err)
	}
}

func mustEnvelope(t *testing.T, tr *Tree, id peerdrive.ChunkID) []byte {
	t.Helper()
	var env []byte
	if err := tr.db.View(func(tx *store.Txn) error {
		var err error
		env, err = tx.GetChunk(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return env
}

func BenchmarkReadChunkAt4K(b *testing.B) {
	ctx := context.Background()
	tr, ino := openTreeWithFile(b)
	plain := bytes.Repeat([]byte("benchmark"), peerdrive.ChunkSize/9)
	if err := tr.Commit(ctx, ino, []Sealed{tr.Seal(0, plain)}); err != nil {
		b.Fatal(err)
	}
	ref, _, _ := tr.ChunkRef(ctx, ino, 0)
	out := make([]byte, 4096)
	b.SetBytes(4096)
	for b.Loop() {
		evictPlain(tr, ref.ID)
		tr.ReadChunkAt(ctx, ref, 500000, out)
	}
}

// TestLocalReadHashes: a chunk read whole from the local store is hashed to
// its ID only if its location is older than format 3; a tailed one is
// known by its tag. Either way a location that points at another chunk's
// envelope (which opens under the same key) is ErrCorrupt, never that
// chunk's bytes.
func TestLocalReadHashes(t *testing.T) {
	ctx := context.Background()
	tr, ino := openTreeWithFile(t)
	pa, pb := bytes.Repeat([]byte("a"), 100_000), bytes.Repeat([]byte("b"), 100_000)
	if err := tr.Commit(ctx, ino, []Sealed{tr.Seal(0, pa), tr.Seal(1, pb)}); err != nil {
		t.Fatal(err)
	}
	ra, _, _ := tr.ChunkRef(ctx, ino, 0)
	rb, _, _ := tr.ChunkRef(ctx, ino, 1)
	var hashes int
	defer func(orig func([]byte) [32]byte) { contentID = orig }(contentID)
	contentID = func(b []byte) [32]byte { hashes++; return crypto.ContentID(b) }
	keyA, keyB := append([]byte{'C'}, ra.ID[:]...), append([]byte{'C'}, rb.ID[:]...)
	get := func(k []byte) []byte {
		var v []byte
		if err := tr.db.View(func(tx *store.Txn) error {
			var err error
			v, err = tx.Get(k)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	set := func(k, v []byte) {
		if err := tr.db.Update(0, func(tx *store.Txn) error { return tx.Set(k, v) }); err != nil {
			t.Fatal(err)
		}
	}
	locA, locB := get(keyA), get(keyB)
	for _, c := range []struct {
		name       string
		locA       []byte
		wantHashes int
		wantErr    error
	}{
		{"tailed", locA, 0, nil},
		{"before format 3", locA[:16], 1, nil},
		{"tailed, at the other chunk", locB, 0, ErrCorrupt},
		{"before format 3, at the other chunk", locB[:16], 1, ErrCorrupt},
	} {
		set(keyA, c.locA)
		tr.chunks.drop(ra.ID) // never seen in this run
		hashes = 0
		got, err := tr.ReadChunk(ctx, ra)
		if !errors.Is(err, c.wantErr) || err == nil && !bytes.Equal(got, pa) {
			t.Errorf("%s: %v (right bytes: %v), want %v", c.name, err, bytes.Equal(got, pa), c.wantErr)
		}
		if hashes != c.wantHashes {
			t.Errorf("%s: %d hashes, want %d", c.name, hashes, c.wantHashes)
		}
	}
}
