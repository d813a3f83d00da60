package net

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// limits bound what one protocol server takes on: streams per remote peer
// (so that one peer flooding requests cannot starve the others) and bytes
// of message bodies held at once.
type limits struct {
	mu          sync.Mutex
	streams     map[peer.ID]int
	inFlight    int64
	maxInFlight int64
}

func newLimits(maxInFlight int64) limits {
	return limits{streams: map[peer.ID]int{}, maxInFlight: maxInFlight}
}

// acquireStream admits one more stream from p, unless p has
// maxStreamsPerPeer open.
func (l *limits) acquireStream(p peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[p] >= maxStreamsPerPeer {
		return false
	}
	l.streams[p]++
	return true
}

func (l *limits) releaseStream(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[p]--; l.streams[p] <= 0 {
		delete(l.streams, p)
	}
}

// reserve admits n more bytes in flight, unless that passes the bound.
func (l *limits) reserve(n int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight+n > l.maxInFlight {
		return false
	}
	l.inFlight += n
	return true
}

func (l *limits) unreserve(n int64) {
	l.mu.Lock()
	l.inFlight -= n
	l.mu.Unlock()
}
