package net

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Scoring parameters (docs/protocol.md §3).
const (
	latencyAlpha      = 0.3                   // weight of a new latency sample
	defaultLatency    = 50 * time.Millisecond // ranks a peer never measured
	unhealthyFailures = 3                     // failures in a row that make a peer unhealthy
	fullFor           = 10 * time.Minute      // a full peer is ranked down this long
)

// PeerScore is what the shard client has learned about one peer.
type PeerScore struct {
	Successes   uint64        // requests the peer answered correctly
	Failures    uint64        // transport errors, timeouts, protocol violations, bad shards
	BadShards   uint64        // GETs whose bytes did not match the ID
	InARow      int           // failures since the last success
	Latency     time.Duration // EWMA of the service latency; 0 if never measured
	Full        bool          // the peer last refused a PUT as full (and has not had room since)
	LastFailure time.Time     // zero if none
	// Used and Capacity are the peer's own figures from its last PUT or
	// STAT reply (Capacity 0: not known); SpaceAt is when they came.
	Used, Capacity int64
	SpaceAt        time.Time
	fullAt         time.Time
}

// Free is the peer's room for new shards as last reported, and whether it
// is known.
func (s PeerScore) Free() (int64, bool) {
	if s.Capacity <= 0 {
		return 0, false
	}
	return max(s.Capacity-s.Used, 0), true
}

// Healthy reports whether the peer has never sent a bad shard and has not
// failed unhealthyFailures times in a row.
func (s PeerScore) Healthy() bool { return s.BadShards == 0 && s.InARow < unhealthyFailures }

// isFull reports whether the peer said full recently.
func (s PeerScore) isFull(now time.Time) bool { return s.Full && now.Sub(s.fullAt) < fullFor }

// RecentlyFull reports whether the peer refused a PUT for room lately.
func (s PeerScore) RecentlyFull() bool { return s.isFull(time.Now()) }

// usable reports whether the peer is fit for new shards: healthy and not
// recently full.
func (s PeerScore) usable(now time.Time) bool { return s.Healthy() && !s.isFull(now) }

// Scores keeps a PeerScore per peer; the shard client updates it after every
// request. It is safe for concurrent use.
type Scores struct {
	mu sync.Mutex
	m  map[peer.ID]*PeerScore
}

// NewScores returns empty Scores.
func NewScores() *Scores { return &Scores{m: map[peer.ID]*PeerScore{}} }

// Get returns p's score (the zero PeerScore for a peer never seen).
func (s *Scores) Get(p peer.ID) PeerScore {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps := s.m[p]; ps != nil {
		return *ps
	}
	return PeerScore{}
}

func (s *Scores) update(p peer.ID, f func(*PeerScore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.m[p]
	if ps == nil {
		ps = &PeerScore{}
		s.m[p] = ps
	}
	f(ps)
}

// Success records a correct answer, with its latency (≤ 0: not measured).
func (s *Scores) Success(p peer.ID, latency time.Duration) {
	s.update(p, func(ps *PeerScore) {
		ps.Successes++
		ps.InARow = 0
		if latency > 0 {
			if ps.Latency == 0 {
				ps.Latency = latency
			} else {
				ps.Latency = time.Duration(latencyAlpha*float64(latency) + (1-latencyAlpha)*float64(ps.Latency))
			}
		}
	})
}

// Failure records a failed request.
func (s *Scores) Failure(p peer.ID) {
	s.update(p, func(ps *PeerScore) {
		ps.Failures++
		ps.InARow++
		ps.LastFailure = time.Now()
	})
}

// BadShard records a shard whose bytes did not match its ID: a failure that
// makes the peer unhealthy for good.
func (s *Scores) BadShard(p peer.ID) {
	s.update(p, func(ps *PeerScore) {
		ps.BadShards++
		ps.Failures++
		ps.InARow++
		ps.LastFailure = time.Now()
	})
}

// SetSpace records the peer's used and contributed space from a reply;
// a reply without them (capacity 0, an older peer) or out of range changes
// nothing.
func (s *Scores) SetSpace(p peer.ID, used, capacity uint64) {
	if capacity == 0 || capacity > 1<<62 || used > 1<<62 {
		return
	}
	s.update(p, func(ps *PeerScore) {
		ps.Used, ps.Capacity, ps.SpaceAt = int64(used), int64(capacity), time.Now()
	})
}

// SetFull records whether the peer has room for new shards.
func (s *Scores) SetFull(p peer.ID, full bool) {
	s.update(p, func(ps *PeerScore) {
		ps.Full = full
		if full {
			ps.fullAt = time.Now()
		}
	})
}

// Rank returns peers ordered best first: healthy before unhealthy, with room
// before full, then by latency (never measured counts as 50 ms), then by
// failure ratio, then by peer ID. The input is not modified.
func (s *Scores) Rank(peers []peer.ID) []peer.ID {
	type ranked struct {
		p       peer.ID
		healthy bool
		full    bool
		lat     time.Duration
		ratio   float64
	}
	now := time.Now()
	rs := make([]ranked, len(peers))
	s.mu.Lock()
	for i, p := range peers {
		var ps PeerScore
		if v := s.m[p]; v != nil {
			ps = *v
		}
		r := ranked{p: p, healthy: ps.Healthy(), full: ps.isFull(now), lat: ps.Latency}
		if r.lat == 0 {
			r.lat = defaultLatency
		}
		if n := ps.Successes + ps.Failures; n > 0 {
			r.ratio = float64(ps.Failures) / float64(n)
		}
		rs[i] = r
	}
	s.mu.Unlock()
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if a.healthy != b.healthy {
			if a.healthy {
				return -1
			}
			return 1
		}
		if a.full != b.full {
			if b.full {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(a.lat, b.lat); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ratio, b.ratio); c != 0 {
			return c
		}
		return cmp.Compare(a.p, b.p)
	})
	out := make([]peer.ID, len(rs))
	for i, r := range rs {
		out[i] = r.p
	}
	return out
}

// PeerScore returns what the shard client has learned about p.
func (n *Node) PeerScore(p peer.ID) PeerScore { return n.scores.Get(p) }

// RankPeers orders peers best first for placing or fetching shards (see
// Scores.Rank).
func (n *Node) RankPeers(peers []peer.ID) []peer.ID { return n.scores.Rank(peers) }

// PeerLatency returns p's measured service latency (0 if never measured)
// and whether p is healthy: the replica reads shards from fast healthy
// peers first.
func (n *Node) PeerLatency(p peer.ID) (time.Duration, bool) {
	s := n.scores.Get(p)
	return s.Latency, s.Healthy()
}

// Usable reports whether p is fit to receive new shards: healthy, and not
// recently found full.
func (n *Node) Usable(p peer.ID) bool { return n.scores.Get(p).usable(time.Now()) }

// Scores returns the node's peer scores.
func (n *Node) Scores() *Scores { return n.scores }
