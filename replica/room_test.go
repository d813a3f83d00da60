package replica

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/segment"
)

// refusingNet is memNet whose peers take no shard (full, or giving back).
type refusingNet struct{ *memNet }

func (refusingNet) PutShard(context.Context, peer.ID, peerdrive.ShardID, []byte) error {
	return errors.New("refused")
}

// TestWaitRoom: a cache full of data not on peers holds writers back while
// uploads go on, and lets them through when nothing can drain it: no peer
// connected, or no segment placed for StallAfter. Either way the data
// stays queued.
func TestWaitRoom(t *testing.T) {
	for _, c := range []struct {
		name string
		net  func() Network
	}{
		{"no peers", func() Network {
			m := newMemNet(6)
			for p := range m.peers {
				m.down[p] = true
			}
			return m
		}},
		{"peers refuse", func() Network { return refusingNet{newMemNet(6)} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, r := newTestReplicaWith(t, c.net(), Options{Params: segment.Params{K: 4, M: 2},
				CacheBytes: 1 << 20, PackDelay: 50 * time.Millisecond, StallAfter: 200 * time.Millisecond})
			putChunks(t, db, r, 8, 256<<10) // 2 MiB waiting, twice the bound
			if !r.Full() {
				t.Fatal("cache not full with twice its bound waiting")
			}
			done := make(chan struct{})
			go func() { r.WaitRoom(nil); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("WaitRoom still waits with nothing to drain the cache")
			}
			if st := r.Stats(); st.PendingBytes != 8*256<<10 {
				t.Fatalf("pending %d bytes, want all %d still queued", st.PendingBytes, 8*256<<10)
			}
		})
	}
	// With peers that take shards, a writer waits until the uploads have
	// made room.
	db, r := newTestReplicaWith(t, newMemNet(6), Options{Params: segment.Params{K: 4, M: 2},
		CacheBytes: 1 << 20, PackDelay: 50 * time.Millisecond, StallAfter: time.Hour})
	putChunks(t, db, r, 8, 256<<10)
	r.WaitRoom(nil)
	if r.Full() {
		t.Fatal("WaitRoom returned with the cache still full while uploads went on")
	}
}
