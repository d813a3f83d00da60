package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
)

// memNet is an in-memory peer network for unit tests; the integration
// tests run the real libp2p one.
type memNet struct {
	mu    sync.Mutex
	peers map[peer.ID]map[peerdrive.ShardID][]byte
	down  map[peer.ID]bool
	liar  map[peer.ID]bool
	v1    map[peer.ID]bool // older peers: version 1 audit proofs
	puts  int
	// audits and repair (repair_test.go)
	distrusted map[peer.ID]bool
	deletes    int
	putLog     []peerdrive.ShardID
}

func newMemNet(n int) *memNet {
	m := &memNet{peers: map[peer.ID]map[peerdrive.ShardID][]byte{}, down: map[peer.ID]bool{}, liar: map[peer.ID]bool{}}
	for i := range n {
		m.peers[peer.ID(fmt.Sprintf("peer-%02d", i))] = map[peerdrive.ShardID][]byte{}
	}
	return m
}

func (m *memNet) StoragePeers() []peer.ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []peer.ID
	for p := range m.peers {
		if !m.down[p] {
			out = append(out, p)
		}
	}
	return out
}

func (m *memNet) RankPeers(ps []peer.ID) []peer.ID { return ps }

func (m *memNet) PutShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[p] {
		return errors.New("peer down")
	}
	m.peers[p][id] = append([]byte(nil), data...)
	m.puts++
	m.putLog = append(m.putLog, id)
	return nil
}

func (m *memNet) GetShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[p] {
		return nil, errors.New("peer down")
	}
	b, ok := m.peers[p][id]
	if !ok {
		return nil, fmt.Errorf("shard %s: %w", id.Short(), fs.ErrNotExist)
	}
	b = append([]byte(nil), b...)
	if m.liar[p] {
		b[0] ^= 1
	}
	if peerdrive.ShardID(crypto.ContentID(b)) != id {
		// The real client verifies too, and distrusts the peer.
		if m.distrusted == nil {
			m.distrusted = map[peer.ID]bool{}
		}
		m.distrusted[p] = true
		return nil, errors.New("bad shard")
	}
	return b, nil
}

// putChunks stores sealed chunks and queues them, as tree does.
func putChunks(t *testing.T, db *store.DB, r *Replica, n, size int) map[peerdrive.ChunkID][]byte {
	t.Helper()
	out := map[peerdrive.ChunkID][]byte{}
	for range n {
		b := make([]byte, size)
		rand.Read(b)
		id := peerdrive.ChunkID(crypto.ContentID(b))
		out[id] = b
		err := db.Update(int64(size), func(tx *store.Txn) error {
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], uint32(size))
			if err := tx.PutChunk(id, b); err != nil {
				return err
			}
			return tx.Set(QueueKey(id), v[:])
		})
		if err != nil {
			t.Fatal(err)
		}
		r.Queued(id, int64(size))
	}
	return out
}

func newTestReplica(t *testing.T, net Network, cache int64) (*store.DB, *Replica) {
	t.Helper()
	return newTestReplicaWith(t, net, Options{Params: segment.Params{K: 4, M: 2}, CacheBytes: cache, PackDelay: 50 * time.Millisecond})
}

// newTestReplicaWith starts a replica with options o on a fresh store.
func newTestReplicaWith(t *testing.T, net Network, o Options) (*store.DB, *Replica) {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(db, net, o)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close(); db.Close() })
	return db, r
}

func TestUploadEvictFetch(t *testing.T) {
	net := newMemNet(6)
	db, r := newTestReplica(t, net, 1<<20)
	chunks := putChunks(t, db, r, 40, 100<<10) // 4 MB: many segments, small chunks packed
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Sync(ctx, nil); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	st := r.Stats()
	if st.PendingBytes != 0 {
		t.Fatalf("pending after sync = %d", st.PendingBytes)
	}
	// Health counts what the sync placed at once, not at the keeper's next
	// check: 4+2 over 6 peers.
	if st.PeerLossTolerated != 2 || st.UnderReplicated != 0 {
		t.Fatalf("after sync: %d peers may be lost, %d chunks under-replicated; want 2 and 0", st.PeerLossTolerated, st.UnderReplicated)
	}
	if st.CachedBytes > 1<<20 {
		t.Fatalf("cache holds %d bytes, bound 1 MiB", st.CachedBytes)
	}
	// Shards spread over distinct peers: 6 shards per segment on 6 peers.
	net.mu.Lock()
	for p, m := range net.peers {
		if len(m) == 0 {
			net.mu.Unlock()
			t.Fatalf("peer %s holds no shard", p)
		}
	}
	net.mu.Unlock()
	// Two peers down, one lying: still k=4 good shards of 6? 6-2-1=3 < 4, so
	// only two faults at a time: one down, one lying.
	ps := net.StoragePeers()
	net.mu.Lock()
	net.down[ps[0]] = true
	net.liar[ps[1]] = true
	net.mu.Unlock()
	for id, want := range chunks {
		got, err := r.Fetch(ctx, id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Fetch %s: %v (equal %v)", id.Short(), err, bytes.Equal(got, want))
		}
	}
	// Three bad peers: data is unavailable, never wrong.
	net.mu.Lock()
	net.down[ps[2]] = true
	net.mu.Unlock()
	r.mu.Lock()
	r.opts.CacheBytes = 1 // evict everything
	r.evictLocked()
	r.mu.Unlock()
	r.fetchMu.Lock()
	r.recent = nil // and forget the last segment fetched
	r.fetchMu.Unlock()
	for id := range chunks {
		if _, err := r.Fetch(ctx, id); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Fetch with 3 of 6 shards bad = %v, want ErrUnavailable", err)
		}
		break
	}
}

func TestNoPeersKeepsQueue(t *testing.T) {
	net := newMemNet(0)
	db, r := newTestReplica(t, net, 0)
	putChunks(t, db, r, 3, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := r.Sync(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with no peers = %v, want deadline", err)
	}
	if r.Stats().PendingBytes != 3000 {
		t.Fatalf("pending = %d, want 3000", r.Stats().PendingBytes)
	}
	// Peers arrive: the queue drains.
	net.mu.Lock()
	for i := range 6 {
		net.peers[peer.ID(fmt.Sprintf("late-%d", i))] = map[peerdrive.ShardID][]byte{}
	}
	net.mu.Unlock()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := r.Sync(ctx2, nil); err != nil {
		t.Fatalf("Sync once peers came = %v", err)
	}
}

func TestTolerated(t *testing.T) {
	for _, tc := range []struct {
		per  map[string]int
		n, k int
		want int
	}{
		{map[string]int{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}, 6, 4, 2},
		{map[string]int{"a": 2, "b": 2, "c": 2}, 6, 4, 1},
		{map[string]int{"a": 6}, 6, 4, 0},
		{map[string]int{"a": 4, "b": 4, "c": 4, "d": 4}, 16, 12, 1},
	} {
		if got := tolerated(tc.per, tc.n, tc.k); got != tc.want {
			t.Errorf("tolerated(%v, %d, %d) = %d, want %d", tc.per, tc.n, tc.k, got, tc.want)
		}
	}
}

// A writer that keeps adding chunks holds uploads back until it pauses for
// YieldGap, unless YieldBytes already wait; then they run with no sync.
func TestUploadsYieldToWriter(t *testing.T) {
	for _, c := range []struct {
		name       string
		yieldBytes int64
		wantHeld   bool
	}{
		{"held while the writer goes on", 1 << 30, true},
		{"not held past YieldBytes", 256 << 10, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			net := newMemNet(6)
			db, r := newTestReplicaWith(t, net, Options{Params: segment.Params{K: 4, M: 2}, PackDelay: 20 * time.Millisecond,
				YieldGap: 2 * time.Second, YieldBytes: c.yieldBytes}) // far above a put, even on a loaded machine
			// 20 chunks of 64 KiB, one every 50 ms: a segment's worth
			// (1 MiB) waits after 16 of them.
			for range 20 {
				putChunks(t, db, r, 1, 64<<10)
				time.Sleep(50 * time.Millisecond)
			}
			net.mu.Lock()
			puts := net.puts
			net.mu.Unlock()
			if held := puts == 0; held != c.wantHeld {
				t.Fatalf("%d shard puts while the writer went on; want held %v", puts, c.wantHeld)
			}
			deadline := time.Now().Add(10 * time.Second)
			for r.Stats().PendingBytes > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d bytes still pending 10 s after the writer stopped", r.Stats().PendingBytes)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestSyncAfterSync: a sync right after an upload does not wait for the
// uploader's next scan. Publish syncs three times in a row (tree, late
// records, manifest); each waited out the gap between scans.
func TestSyncAfterSync(t *testing.T) {
	old := minScanGap
	minScanGap = time.Hour // a sync that waits for the next scan times out
	t.Cleanup(func() { minScanGap = old })
	net := newMemNet(6)
	db, r := newTestReplica(t, net, 0)
	for i := range 3 {
		putChunks(t, db, r, 2, 100<<10)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := r.Sync(ctx, nil)
		cancel()
		if err != nil {
			t.Fatalf("sync %d: %v", i+1, err)
		}
	}
}
