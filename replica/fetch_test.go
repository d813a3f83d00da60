package replica

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
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
	forget := func() {
		r.mu.Lock()
		r.opts.CacheBytes = 1
		r.evictLocked()
		r.mu.Unlock()
		r.fetchMu.Lock()
		r.recent = nil
		r.fetchMu.Unlock()
	}
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
