package replica

import (
	"slices"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// Health is the redundancy of placed data as seen from here: a shard counts
// as healthy while its peer is connected.
type Health struct {
	Segments        int
	Chunks          int
	UnderReplicated int // chunks with fewer than n healthy shards
	Lost            int // chunks with fewer than k healthy shards and no local copy
	// PeerLossTolerated is how many peers may be lost without losing data:
	// the worst case over all segments, given how shards are spread.
	PeerLossTolerated int
}

func (r *Replica) checkHealth() {
	connected := map[string]bool{}
	for _, p := range r.net.StoragePeers() {
		connected[string(p)] = true
	}
	var h Health
	h.PeerLossTolerated = -1
	err := r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			var s Segment
			if err := peerdrive.Unmarshal(v, &s); err != nil {
				return false, err
			}
			h.Segments++
			healthy := 0
			perPeer := map[string]int{}
			for _, sh := range s.Shards {
				perPeer[string(sh.Peer)]++
				if connected[string(sh.Peer)] {
					healthy++
				}
			}
			live := 0
			local := 0
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
			h.Chunks += live
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
