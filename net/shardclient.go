package net

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	msmux "github.com/multiformats/go-multistream"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

// Errors of the shard client that callers branch on. A refusal by the peer
// is a *StatusError that wraps one of them; a transport failure is returned
// as is (wrapped with context), and an ended context as the context's error.
var (
	ErrNotFound = errors.New("not found on peer")
	ErrFull     = errors.New("peer has no room for the shard")
	ErrBusy     = errors.New("peer is busy")
	ErrBadShard = errors.New("shard bytes do not match its ID")
	ErrNotOwner = errors.New("not an owner of the shard on that peer")
	ErrRefused  = errors.New("peer refused the request")
	ErrProtocol = errors.New("peer broke the shard protocol")
	// ErrStale is the root protocol's refusal of a record older than
	// (or, at the same Seq, different from) the one the peer holds; it
	// comes with ErrRefused.
	ErrStale = errors.New("peer holds a newer root record")
)

// StatusError is a reply other than ok. errors.Is matches it against the
// sentinel for its status (docs/protocol.md §2.3).
type StatusError struct {
	Peer    peer.ID
	Status  Status
	Message string // the peer's text, for logs only
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("peer %s: %s", e.Peer, e.Status)
	}
	return fmt.Sprintf("peer %s: %s: %q", e.Peer, e.Status, e.Message)
}

func (e *StatusError) Unwrap() []error {
	switch e.Status {
	case StatusNotFound:
		return []error{ErrNotFound}
	case StatusFull:
		return []error{ErrFull}
	case StatusNotOwner:
		return []error{ErrNotOwner}
	case StatusBusy:
		return []error{ErrBusy}
	case StatusBadHash:
		return []error{ErrBadShard}
	case StatusBadSignature:
		return []error{ErrRefused, peerdrive.ErrBadSignature}
	case StatusStale:
		return []error{ErrRefused, ErrStale}
	case StatusGiveBack:
		return []error{ErrRefused, ErrGiveBack}
	}
	return []error{ErrRefused}
}

// PeerStat is a storage peer's answer to STAT.
type PeerStat struct {
	Used     int64 // bytes of shards stored
	Capacity int64 // bytes contributed
	Shards   int64 // shards stored
}

// Free is the room left for new shards.
func (s PeerStat) Free() int64 { return max(s.Capacity-s.Used, 0) }

// StoragePeers returns the connected peers that serve the shard protocol
// (as their identify says), sorted by peer ID.
func (n *Node) StoragePeers() []peer.ID {
	var out []peer.ID
	for _, p := range n.h.Network().Peers() {
		if n.h.Network().Connectedness(p) != network.Connected {
			continue
		}
		if ps, err := n.h.Peerstore().SupportsProtocols(p, ShardProtocol); err == nil && len(ps) > 0 {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// call is one request on one stream.
type call struct {
	n       *Node
	p       peer.ID
	typ     msgType
	ctx     context.Context // with the protocol's deadline
	cancel  context.CancelFunc
	s       network.Stream
	br      *bufio.Reader
	stop    func() bool // un-registers the reset on ctx end
	replyAt time.Time
}

// dial opens a shard stream to p for a request of type t, with the deadline
// the protocol sets for t (or the caller's, if earlier). When ctx ends the
// stream is reset.
func (n *Node) dial(ctx context.Context, p peer.ID, t msgType) (*call, error) {
	timeout := shortTimeout
	if t == typePut || t == typeGet {
		timeout = bulkTimeout
	}
	n.claimFor(ctx, p, t) // owner delegation, once per connection (lease.go)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	s, err := n.openShardStream(cctx, p)
	if err != nil {
		if cctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", cctx.Err(), err)
		}
		cancel()
		return nil, err
	}
	c := &call{n: n, p: p, typ: t, ctx: cctx, cancel: cancel, s: s, br: bufio.NewReaderSize(s, 4096)}
	c.stop = context.AfterFunc(cctx, func() { s.Reset() })
	return c, nil
}

// done releases the call; err says whether the stream is still good. It
// returns err, or for a transport error after the call's context ended (the
// stream was reset for it, or its deadline passed) the context's error.
func (c *call) done(err error) error {
	expired := c.ctx.Err()
	c.stop()
	if err != nil {
		c.s.Reset()
	} else {
		c.s.Close()
	}
	c.cancel()
	var se *StatusError
	if err == nil || errors.As(err, &se) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrBadShard) {
		return err
	}
	if expired == nil && isTimeout(err) {
		expired = context.DeadlineExceeded
	}
	if expired != nil {
		return fmt.Errorf("%w (%v)", expired, err)
	}
	return err
}

// isTimeout reports whether err is a deadline error (of a stream).
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &t) && t.Timeout())
}

// readReply reads and validates the reply header.
func (c *call) readReply() (wireReply, error) {
	t, h, err := readMessage(c.br, func(t msgType) bool { return t == c.typ|replyBit })
	if err != nil {
		if errors.Is(err, errMalformed) || errors.Is(err, errTooLarge) {
			return wireReply{}, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		return wireReply{}, err
	}
	c.replyAt = time.Now()
	w, err := decodeReply(t, h)
	if err != nil {
		return w, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return w, nil
}

// statusError returns nil for ok, else a *StatusError.
func (c *call) statusError(w wireReply) error {
	if w.Status == StatusOK {
		return nil
	}
	return &StatusError{Peer: c.p, Status: w.Status, Message: w.Message}
}

// finish scores the outcome of a request (docs/protocol.md §3) and gives the
// error its context. latency ≤ 0 is not recorded.
func (n *Node) finish(p peer.ID, op string, id string, err error, latency time.Duration) error {
	switch {
	case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, ErrNotOwner):
		n.scores.Success(p, latency)
		if op == "put" && err == nil {
			n.scores.SetFull(p, false)
		}
	case errors.Is(err, ErrFull), errors.Is(err, ErrGiveBack): // a refusal to store: place elsewhere
		n.scores.Success(p, latency)
		n.scores.SetFull(p, true)
	case errors.Is(err, ErrBadShard):
		if op == "get" {
			n.scores.BadShard(p)
		} else {
			// The peer found our bytes wrong: it answered correctly.
			n.scores.Success(p, latency)
		}
	case errors.Is(err, ErrBusy), errors.Is(err, context.Canceled):
		// Neither the peer's fault nor a sign of health.
	default:
		n.scores.Failure(p)
	}
	if err == nil {
		return nil
	}
	if id != "" {
		return fmt.Errorf("net: %s shard %s on %s: %w", op, id, p, err)
	}
	return fmt.Errorf("net: %s on %s: %w", op, p, err)
}

// PutShard stores data as shard id on peer p, owned by this node. The peer
// verifies the bytes against id (ErrBadShard if they differ) and refuses with
// ErrFull when it has no room, ErrBusy when overloaded.
func (n *Node) PutShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, data []byte) error {
	if len(data) > MaxShardSize {
		return fmt.Errorf("net: put shard %s: %d bytes, over %d: %w", id.Short(), len(data), MaxShardSize, ErrRefused)
	}
	w, lat, err := n.putShard(ctx, p, id, data)
	if err == nil {
		n.observePut(p, id, len(data)) // the ledger (admission.go)
		n.scores.SetSpace(p, w.Used, w.Capacity)
	}
	return n.finish(p, "put", id.Short(), err, lat)
}

func (n *Node) putShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, data []byte) (wireReply, time.Duration, error) {
	msg, err := encodeRequest(request{typ: typePut, id: id, size: len(data)})
	if err != nil {
		return wireReply{}, 0, err
	}
	c, err := n.dial(ctx, p, typePut)
	if err != nil {
		return wireReply{}, 0, err
	}
	return c.upload(msg, data)
}

// upload writes a request and its body while reading the reply, so that a
// refusal is seen (and the upload stopped) before the whole body is sent.
// It returns the reply and the time from the end of the upload to it.
func (c *call) upload(msg, body []byte) (wireReply, time.Duration, error) {
	type sent struct {
		err error
		at  time.Time
	}
	wrote := make(chan sent, 1)
	go func() {
		_, err := c.s.Write(msg)
		if err == nil && len(body) > 0 {
			_, err = c.s.Write(body)
		}
		if err == nil {
			err = c.s.CloseWrite()
		}
		wrote <- sent{err, time.Now()}
	}()
	w, err := c.readReply()
	if err == nil {
		err = c.statusError(w)
	}
	if err != nil {
		c.s.Reset()
		<-wrote
		return wireReply{}, 0, c.done(err)
	}
	// The peer replies only after reading the whole body.
	wr := <-wrote
	c.done(nil)
	return w, c.replyAt.Sub(wr.at), nil
}

// GetShard fetches shard id from peer p and verifies it: bytes that do not
// hash to id are never returned (ErrBadShard, and the peer's score drops).
func (n *Node) GetShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) ([]byte, error) {
	b, lat, err := n.getShard(ctx, p, id)
	return b, notExist(n.finish(p, "get", id.Short(), err, lat))
}

// GetShardInto is GetShard reading the shard into buf's backing array when
// it has room (cap(buf) ≥ the shard's size), else into a new slice. buf's
// bytes are undefined after an error.
func (n *Node) GetShardInto(ctx context.Context, p peer.ID, id peerdrive.ShardID, buf []byte) ([]byte, error) {
	b, lat, err := n.getShardInto(ctx, p, id, buf)
	return b, notExist(n.finish(p, "get", id.Short(), err, lat))
}

func (n *Node) getShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) ([]byte, time.Duration, error) {
	return n.getShardInto(ctx, p, id, nil)
}

func (n *Node) getShardInto(ctx context.Context, p peer.ID, id peerdrive.ShardID, buf []byte) ([]byte, time.Duration, error) {
	c, err := n.dial(ctx, p, typeGet)
	if err != nil {
		return nil, 0, err
	}
	w, sentAt, err := c.smallRequest(request{typ: typeGet, id: id})
	if err != nil {
		err = c.done(err)
		return nil, 0, err
	}
	lat := c.replyAt.Sub(sentAt)
	var data []byte
	if uint64(cap(buf)) >= w.Size {
		data = buf[:w.Size]
	} else {
		data = make([]byte, w.Size)
	}
	if _, err := io.ReadFull(c.br, data); err != nil {
		err = fmt.Errorf("shard body: %w", noEOF(err))
		err = c.done(err)
		return nil, 0, err
	}
	if peerdrive.ShardID(crypto.ContentID(data)) != id {
		return nil, 0, c.done(ErrBadShard)
	}
	c.done(nil)
	return data, lat, nil
}

// smallRequest sends a request without a body, closes the write side and
// reads the reply header. A reply other than ok is an error.
func (c *call) smallRequest(rq request) (wireReply, time.Time, error) {
	msg, err := encodeRequest(rq)
	if err != nil {
		return wireReply{}, time.Time{}, err
	}
	if _, err := c.s.Write(msg); err != nil {
		return wireReply{}, time.Time{}, err
	}
	if err := c.s.CloseWrite(); err != nil {
		return wireReply{}, time.Time{}, err
	}
	sentAt := time.Now()
	w, err := c.readReply()
	if err == nil {
		err = c.statusError(w)
	}
	return w, sentAt, err
}

// HasShards asks peer p which of ids it stores (in batches of MaxHasIDs).
func (n *Node) HasShards(ctx context.Context, p peer.ID, ids []peerdrive.ShardID) ([]bool, error) {
	return n.askIDs(ctx, p, typeHas, "has", ids)
}

// askIDs sends ids to peer p in requests of type t, MaxHasIDs at a time,
// and returns the answer for each (HAS and RENEW).
func (n *Node) askIDs(ctx context.Context, p peer.ID, t msgType, op string, ids []peerdrive.ShardID) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), MaxHasIDs)]
		ids = ids[len(batch):]
		have, lat, err := n.askBatch(ctx, p, t, batch)
		if err := n.finish(p, op, "", err, lat); err != nil {
			return nil, err
		}
		out = append(out, have...)
	}
	return out, nil
}

func (n *Node) askBatch(ctx context.Context, p peer.ID, t msgType, ids []peerdrive.ShardID) ([]bool, time.Duration, error) {
	c, err := n.dial(ctx, p, t)
	if err != nil {
		return nil, 0, err
	}
	w, sentAt, err := c.smallRequest(request{typ: t, ids: ids})
	if err == nil && len(w.Have) != len(ids) {
		err = fmt.Errorf("%w: %d answers to %d ids", ErrProtocol, len(w.Have), len(ids))
	}
	err = c.done(err)
	if err != nil {
		return nil, 0, err
	}
	return w.Have, c.replyAt.Sub(sentAt), nil
}

// DeleteShard removes this node's hold on shard id at peer p. The peer
// frees the shard when no other owner holds it. ErrNotOwner if this node
// holds none of it; ErrNotFound if the peer does not store it at all (a
// retried delete whose first reply was lost).
func (n *Node) DeleteShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) error {
	c, err := n.dial(ctx, p, typeDelete)
	var lat time.Duration
	if err == nil {
		var sentAt time.Time
		_, sentAt, err = c.smallRequest(request{typ: typeDelete, id: id})
		err = c.done(err)
		lat = c.replyAt.Sub(sentAt)
	}
	return n.finish(p, "delete", id.Short(), err, lat)
}

// StatPeer asks peer p for its used and contributed space.
func (n *Node) StatPeer(ctx context.Context, p peer.ID) (PeerStat, error) {
	var st PeerStat
	c, err := n.dial(ctx, p, typeStat)
	var lat time.Duration
	if err == nil {
		var w wireReply
		var sentAt time.Time
		w, sentAt, err = c.smallRequest(request{typ: typeStat})
		err = c.done(err)
		lat = c.replyAt.Sub(sentAt)
		if err == nil && (w.Used > 1<<62 || w.Capacity > 1<<62 || w.Shards > 1<<62) {
			err = fmt.Errorf("%w: stat out of range", ErrProtocol)
		}
		st = PeerStat{Used: int64(w.Used), Capacity: int64(w.Capacity), Shards: int64(w.Shards)}
	}
	if err = n.finish(p, "stat", "", err, lat); err != nil {
		return PeerStat{}, err
	}
	n.scores.SetFull(p, st.Free() == 0)
	n.scores.SetSpace(p, uint64(st.Used), uint64(st.Capacity))
	return st, nil
}

// openShardStream opens a shard-protocol stream to p, over a direct TCP
// connection if one exists (docs/protocol.md §1), else over the connection
// libp2p picks or dials (the node's dial ranker tries TCP first).
func (n *Node) openShardStream(ctx context.Context, p peer.ID) (network.Stream, error) {
	for _, c := range n.h.Network().ConnsToPeer(p) {
		if c.IsClosed() || c.Stat().Limited || !isTCP(c) {
			continue
		}
		s, err := c.NewStream(ctx)
		if err != nil {
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = s.SetDeadline(dl)
		}
		if err := s.SetProtocol(ShardProtocol); err != nil {
			s.Reset()
			return nil, err
		}
		if ps, err := n.h.Peerstore().SupportsProtocols(p, ShardProtocol); err == nil && len(ps) > 0 {
			// Known to speak it: negotiate lazily, with the first write.
			return &negotiated{Stream: s, rw: msmux.NewMSSelect(s, ShardProtocol)}, nil
		}
		if err := msmux.SelectProtoOrFail(ShardProtocol, s); err != nil {
			s.Reset()
			return nil, fmt.Errorf("negotiate %s: %w", ShardProtocol, err)
		}
		return s, nil
	}
	s, err := n.h.NewStream(ctx, p, ShardProtocol)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	return s, nil
}

// negotiated is a stream whose protocol is negotiated by rw on first use.
type negotiated struct {
	network.Stream
	rw io.ReadWriter
}

func (s *negotiated) Read(b []byte) (int, error)  { return s.rw.Read(b) }
func (s *negotiated) Write(b []byte) (int, error) { return s.rw.Write(b) }
