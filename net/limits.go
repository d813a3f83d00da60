package net

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
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

// readHeader reads and decodes the header of a request of type t (its
// type byte already read) on a server stream. A header too large or
// malformed is answered with refuse; one cut short resets the stream.
// ok is false in both cases: the stream is done with.
func readHeader(s network.Stream, br *bufio.Reader, t msgType, log *slog.Logger, refuse func(Status, string)) (rq request, ok bool) {
	n, err := readUvarint(br, headerLimit(t))
	if err == nil {
		h := make([]byte, n)
		if _, err = io.ReadFull(br, h); err != nil {
			s.Reset()
			return rq, false
		}
		if rq, err = decodeRequest(t, h); err == nil {
			return rq, true
		}
	}
	switch {
	case errors.Is(err, errTooLarge):
		log.Debug("request refused: too large", "protocol", s.Protocol(), "type", t, "err", err)
		refuse(StatusTooLarge, err.Error())
	case errors.Is(err, errMalformed):
		log.Debug("request refused: malformed", "protocol", s.Protocol(), "type", t, "err", err)
		refuse(StatusBadRequest, err.Error())
	default:
		s.Reset()
	}
	return rq, false
}
