package replica

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// Health is the redundancy of placed data as seen from here: a shard counts
// as healthy while its peer is connected and trusted and the shard has not
// failed an audit (docs/audit.md §5).
type Health struct {
	Segments int
	// Chunks counts the chunks the segment records list, live or not yet
	// collected (docs/gc.md).
	Chunks          int
	UnderReplicated int // chunks with fewer than n healthy shards
	Lost            int // chunks with fewer than k healthy shards and no local copy
	// PeerLossTolerated is how many peers may be lost without losing data:
	// the worst case over all segments, given how shards are spread.
	PeerLossTolerated int
}

func (r *Replica) checkHealth() {
	connected := map[peer.ID]bool{}
	for _, p := range r.net.StoragePeers() {
		connected[p] = true
	}
	judge, _ := r.net.(peerJudge)
	var marked map[markKey]bool
	if m := r.maint; m != nil {
		m.mu.Lock()
		marked = make(map[markKey]bool, len(m.marked))
		for k := range m.marked {
			marked[k] = true
		}
		m.mu.Unlock()
	}
	states := map[peer.ID]PeerState{}
	state := func(p peer.ID) PeerState {
		ps, ok := states[p]
		if !ok {
			ps = PeerState{Connected: connected[p], LastSeen: time.Now()}
			if judge != nil && connected[p] {
				ps.Distrusted = judge.Distrusted(p)
			}
			states[p] = ps
		}
		return ps
	}
	held := map[peer.ID]int64{}
	var h Health
	h.PeerLossTolerated = -1
	err := r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			var s Segment
			if err := peerdrive.Unmarshal(v, &s); err != nil {
				return false, err
			}
			h.Segments++
			ss := int64(s.Params.ShardSize(int(s.Size)))
			healthy := 0
			perPeer := map[string]int{}
			for _, sh := range s.Shards {
				p := peer.ID(sh.Peer)
				perPeer[string(sh.Peer)]++
				held[p] += ss
				if shardHealthy(state(p), marked[markKey{sh.ID, p}]) {
					healthy++
				}
			}
			h.Chunks += len(s.Chunks)
			// Which chunks are live, and which have a local copy, matters
			// only for a segment short of shards: two lookups a chunk
			// were most of a check's time.
			live, local := 0, 0
			if healthy < s.Params.N() {
				for _, c := range s.Chunks {
					ok, err := tx.Has(idKey(tagLocation, c.ID))
					if err != nil || !ok {
						continue
					}
					live++
					if has, _ := tx.HasChunk(c.ID); has {
						local++
					}
				}
			}
			if healthy < s.Params.N() {
				h.UnderReplicated += live
			}
			if healthy < s.Params.K {
				h.Lost += live - local
			}
			t := tolerated(perPeer, s.Params.N(), s.Params.K)
			if h.PeerLossTolerated < 0 || t < h.PeerLossTolerated {
				h.PeerLossTolerated = t
			}
			return true, nil
		})
	})
	if err != nil {
		r.log.Warn("health check failed", "err", err)
		return
	}
	if h.PeerLossTolerated < 0 {
		h.PeerLossTolerated = 0
	}
	r.setHeld(held)
	r.mu.Lock()
	r.health = h
	r.mu.Unlock()
}

// tolerated is the largest j such that losing any j peers leaves at least k
// of n shards: the worst case loses the peers holding the most shards.
func tolerated(perPeer map[string]int, n, k int) int {
	counts := make([]int, 0, len(perPeer))
	for _, c := range perPeer {
		counts = append(counts, c)
	}
	slices.Sort(counts)
	slices.Reverse(counts)
	lost, j := 0, 0
	for _, c := range counts {
		if n-(lost+c) < k {
			break
		}
		lost += c
		j++
	}
	return j
}
