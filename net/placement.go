package net

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Placement weights (docs/protocol.md §3): how strongly a new segment's
// shards prefer fast peers and peers with much room.
const (
	maxLatencyWeight = 16 // a peer 16× faster than defaultLatency, or more
	maxSpaceWeight   = 64 // a peer with 64× the median free space, or more
)

// PlacementOrder orders peers for the shards of a new segment: usable peers
// (healthy, not recently full) first, in a random order weighted toward
// low latency and much free space, then the others as RankPeers orders
// them. The uploader gives a segment's shards to distinct peers in this
// order, so with more peers than shards the fast and roomy ones take more
// and every usable peer still takes some: the network fills its peers in
// proportion to their free space, not the fastest ones first.
func (n *Node) PlacementOrder(peers []peer.ID) []peer.ID {
	return n.scores.placementOrder(peers, time.Now(), rand.ExpFloat64)
}

// placementOrder is PlacementOrder with the time and the source of
// exponential variates given (tests make them fixed).
//
// The order is weighted random sampling without replacement
// (Efraimidis–Spirakis): each usable peer draws E/w with E exponential and
// w its weight, and the smallest draws go first; a peer's chance to come
// before another is proportional to its weight.
func (s *Scores) placementOrder(peers []peer.ID, now time.Time, exp func() float64) []peer.ID {
	scores := make([]PeerScore, len(peers))
	s.mu.Lock()
	for i, p := range peers {
		if v := s.m[p]; v != nil {
			scores[i] = *v
		}
	}
	s.mu.Unlock()

	// Free space counts relative to the median of the peers that told us
	// theirs; a peer that has not is taken to have the median.
	var frees []int64
	for _, ps := range scores {
		if f, ok := ps.Free(); ok {
			frees = append(frees, f)
		}
	}
	ref := int64(1)
	if len(frees) > 0 {
		slices.Sort(frees)
		ref = max(frees[len(frees)/2], 1)
	}

	type drawn struct {
		p   peer.ID
		key float64
	}
	var good []drawn
	var bad []peer.ID
	for i, p := range peers {
		ps := scores[i]
		if !ps.usable(now) {
			bad = append(bad, p)
			continue
		}
		good = append(good, drawn{p, exp() / placementWeight(ps, ref)})
	}
	slices.SortFunc(good, func(a, b drawn) int { return cmp.Compare(a.key, b.key) })
	out := make([]peer.ID, 0, len(peers))
	for _, d := range good {
		out = append(out, d.p)
	}
	return append(out, s.Rank(bad)...)
}

// placementWeight is a usable peer's weight: the inverse of its latency
// relative to defaultLatency times its free space relative to refFree, each
// bounded.
func placementWeight(ps PeerScore, refFree int64) float64 {
	lat := ps.Latency
	if lat <= 0 {
		lat = defaultLatency
	}
	w := clamp(float64(defaultLatency)/float64(lat), 1.0/maxLatencyWeight, maxLatencyWeight)
	if f, ok := ps.Free(); ok {
		w *= clamp(float64(f)/float64(refFree), 1.0/maxSpaceWeight, maxSpaceWeight)
	}
	return w
}

func clamp(x, lo, hi float64) float64 { return min(max(x, lo), hi) }
