package replica

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// intoNet is a memNet that reads shards into the caller's array, as
// net.Node's GetShardInto does.
type intoNet struct {
	*memNet
	into int // shards read into the given array
}

func (n *intoNet) GetShardInto(ctx context.Context, p peer.ID, id peerdrive.ShardID, buf []byte) ([]byte, error) {
	b, err := n.GetShard(ctx, p, id)
	if err != nil || cap(buf) < len(b) {
		return b, err
	}
	n.mu.Lock()
	n.into++
	n.mu.Unlock()
	return append(buf[:0], b...), nil
}

// forgetFetched empties r's cache and its last fetched segment, so that the
// next Fetch goes to the peers.
func forgetFetched(r *Replica) {
	r.mu.Lock()
	r.opts.CacheBytes = 1
	r.evictLocked()
	r.mu.Unlock()
	r.fetchMu.Lock()
	r.recent = nil
	r.fetchMu.Unlock()
}

// Segments rebuilt from shards read in place (every data shard there, or
// some rebuilt from parity) give back the chunks' bytes.
func TestFetchInPlace(t *testing.T) {
	net := &intoNet{memNet: newMemNet(6)}
	db, r := newTestReplica(t, net, 1<<20)
	chunks := putChunks(t, db, r, 24, 300<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Sync(ctx, nil); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	forget := func() { forgetFetched(r) }
	check := func(what string) {
		t.Helper()
		for id, want := range chunks {
			got, err := r.Fetch(ctx, id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: Fetch %s: %v (equal %v)", what, id.Short(), err, bytes.Equal(got, want))
			}
		}
	}
	forget()
	check("all peers up")
	net.mu.Lock()
	into := net.into
	net.mu.Unlock()
	if into == 0 {
		t.Fatal("no shard was read in place")
	}
	ps := net.StoragePeers()
	net.mu.Lock()
	net.down[ps[0]] = true
	net.liar[ps[1]] = true
	net.mu.Unlock()
	forget()
	check("one peer down, one lying")
}

// FetchVerified gives back the chunks' bytes; when a chunk's location record
// points at another chunk of its segment (the segment's chunk list says
// otherwise), it hashes what it found and refuses it instead of returning
// the other chunk's bytes, as plain Fetch would.
func TestFetchVerified(t *testing.T) {
	net := newMemNet(6)
	db, r := newTestReplica(t, net, 1<<20)
	chunks := putChunks(t, db, r, 12, 100<<10) // packed several to a segment
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Sync(ctx, nil); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	forget := func() { forgetFetched(r) }
	forget()
	for id, want := range chunks {
		got, err := r.FetchVerified(ctx, id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("FetchVerified %s: %v (equal %v)", id.Short(), err, bytes.Equal(got, want))
		}
	}
	// Two chunks of one segment; a's location record gets b's place.
	locs := map[peerdrive.ChunkID]Location{}
	err := db.View(func(tx *store.Txn) error {
		for id := range chunks {
			v, err := tx.Get(idKey(tagLocation, id))
			if err != nil {
				return err
			}
			var l Location
			if err := peerdrive.Unmarshal(v, &l); err != nil {
				return err
			}
			locs[id] = l
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var a, b peerdrive.ChunkID
	for x, lx := range locs {
		for y, ly := range locs {
			if x != y && lx.Seg == ly.Seg {
				a, b = x, y
			}
		}
	}
	if a == b {
		t.Fatal("no two chunks share a segment")
	}
	v, err := peerdrive.Marshal(locs[b])
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(0, func(tx *store.Txn) error { return tx.Set(idKey(tagLocation, a), v) }); err != nil {
		t.Fatal(err)
	}
	forget()
	if got, err := r.Fetch(ctx, a); err != nil || !bytes.Equal(got, chunks[b]) {
		t.Fatalf("Fetch of the misplaced chunk: %v; want b's bytes (the test's premise)", err)
	}
	forget()
	if got, err := r.FetchVerified(ctx, a); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("FetchVerified of the misplaced chunk: %d bytes, %v; want ErrCorrupt", len(got), err)
	}
	if got, err := r.FetchVerified(ctx, b); err != nil || !bytes.Equal(got, chunks[b]) {
		t.Fatalf("FetchVerified of the other chunk: %v", err)
	}
}
