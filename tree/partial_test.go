package tree

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
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
// first read opens it whole); an envelope replaced in the store since it
// was opened is read whole again, and caught by its hash.
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
	// length) under the chunk's ID: not the one opened.
	orig := mustEnvelope(t, tr, ref.ID)
	other := tr.keys.SealChunk(nil, plain)
	if err := tr.db.Update(int64(len(other)), func(tx *store.Txn) error {
		if err := tx.DeleteChunk(ref.ID); err != nil {
			return err
		}
		return tx.PutChunk(ref.ID, other)
	}); err != nil {
		t.Fatal(err)
	}
	evictPlain(tr, ref.ID)
	if _, err := tr.ReadChunkAt(ctx, ref, 100, make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replaced envelope: %v, want ErrCorrupt", err)
	}
	if _, ok := tr.chunks.openedEnv(ref.ID); ok {
		t.Fatal("the replaced envelope is still taken for the one opened")
	}
	// A chunk gone from the store (deleted under a reader) is an error,
	// not bytes read from where it was.
	if err := tr.db.Update(0, func(tx *store.Txn) error {
		if err := tx.DeleteChunk(ref.ID); err != nil {
			return err
		}
		return tx.PutChunk(ref.ID, orig)
	}); err != nil {
		t.Fatal(err)
	}
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
