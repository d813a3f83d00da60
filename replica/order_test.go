package replica

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/segment"
)

// latNet is memNet with measured latencies and failing peers.
type latNet struct {
	*memNet
	lat  map[peer.ID]time.Duration
	sick map[peer.ID]bool
}

func (n latNet) PeerLatency(p peer.ID) (time.Duration, bool) { return n.lat[p], !n.sick[p] }

// TestShardOrder: data shards first while their peers are about as fast
// as enough others; a slow or failing data peer goes after the fast parity
// peers; distrusted and disconnected peers last.
func TestShardOrder(t *testing.T) {
	ms := time.Millisecond
	p := func(i int) peer.ID { return peer.ID([]byte{'p', byte('0' + i)}) }
	rec := Segment{Params: segment.Params{K: 4, M: 3}}
	for i := range 7 {
		rec.Shards = append(rec.Shards, ShardLoc{Peer: []byte(p(i))})
	}
	for _, c := range []struct {
		name string
		lat  map[int]time.Duration // 0: never measured
		sick []int                 // failing lately
		bad  []int                 // served bad bytes
		down []int                 // not connected
		want []int
	}{
		{"all alike", map[int]time.Duration{0: 5 * ms, 1: 6 * ms, 2: 5 * ms, 3: 7 * ms, 4: 5 * ms, 5: 9 * ms, 6: 6 * ms}, nil, nil, nil, []int{0, 1, 2, 3, 4, 6, 5}},
		{"never measured", nil, nil, nil, nil, []int{0, 1, 2, 3, 4, 5, 6}},
		{"a slow data peer", map[int]time.Duration{0: 5 * ms, 1: 900 * ms, 2: 5 * ms, 3: 7 * ms, 4: 5 * ms, 5: 9 * ms, 6: 6 * ms}, nil, nil, nil, []int{0, 2, 3, 4, 6, 5, 1}},
		{"a failing data peer", nil, []int{2}, nil, nil, []int{0, 1, 3, 4, 5, 6, 2}},
		{"distrusted and down", nil, nil, []int{0}, []int{1}, []int{2, 3, 4, 5, 6, 0, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mn := newMemNet(0)
			n := latNet{memNet: mn, lat: map[peer.ID]time.Duration{}, sick: map[peer.ID]bool{}}
			for i := range 7 {
				mn.peers[p(i)] = nil
				n.lat[p(i)] = c.lat[i]
			}
			for _, i := range c.sick {
				n.sick[p(i)] = true
			}
			for _, i := range c.bad {
				mn.AuditFailed(p(i))
			}
			for _, i := range c.down {
				mn.down[p(i)] = true
			}
			r := &Replica{net: n}
			if got := r.shardOrder(rec); !slices.Equal(got, c.want) {
				t.Fatalf("order %v, want %v", got, c.want)
			}
		})
	}
}
