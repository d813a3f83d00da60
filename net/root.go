package net

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
)

// The root protocol (docs/protocol.md §5): storage peers hold drives' signed
// root records, so that a new machine with only the recovery key finds the
// latest one.

// RootProtocol is the protocol ID of the root protocol.
const RootProtocol = "/peerdrive/root/1.0.0"

// RootStore is what the root server needs of a node's store of root records
// (store.Roots implements it).
//
// Put keeps rec if it is newer (higher Seq) than the record held for its
// owner and reports whether it did; an older or equal record is not an
// error. Get returns the record held for owner.
//
// Errors are classified with errors.Is, because this package does not know
// the store's sentinels: fs.ErrNotExist is not-found (Get of an owner with
// no record), peerdrive.ErrBadSignature is bad-signature (Put of a record
// that does not verify), syscall.ENOSPC is full. Any other error is
// reported to the peer as internal and logged.
type RootStore interface {
	Put(ctx context.Context, rec *peerdrive.RootRecord) (stored bool, err error)
	Get(ctx context.Context, owner ed25519.PublicKey) (*peerdrive.RootRecord, error)
}

// Root server limits (docs/protocol.md §5.4). Streams per peer and deadlines
// are the shard protocol's.
const maxRootInFlight = 64 << 20 // bytes of PUTROOT and GETROOT bodies held

// rootServer serves the root protocol from a RootStore.
type rootServer struct {
	n     *Node
	store RootStore

	limits // open streams per remote peer, bytes of records held
}

// ServeRoots serves the root protocol from s, replacing any store served
// before. Peers see the protocol in identify (pushed to connected peers) and
// count this node among their RootPeers.
func (n *Node) ServeRoots(s RootStore) {
	sv := &rootServer{n: n, store: s, limits: newLimits(maxRootInFlight)}
	n.mu.Lock()
	n.roots = sv
	n.mu.Unlock()
	n.h.SetStreamHandler(RootProtocol, sv.handle)
}

// RootPeers returns the connected peers that serve the root protocol (as
// their identify says), sorted by peer ID.
func (n *Node) RootPeers() []peer.ID {
	var out []peer.ID
	for _, p := range n.h.Network().Peers() {
		if n.h.Network().Connectedness(p) != network.Connected {
			continue
		}
		if ps, err := n.h.Peerstore().SupportsProtocols(p, RootProtocol); err == nil && len(ps) > 0 {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// handle serves one stream: one request, one reply.
func (sv *rootServer) handle(s network.Stream) {
	start := time.Now()
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(start.Add(shortTimeout))
	log := slog.With("peer", remote)

	br := bufio.NewReaderSize(s, 512)
	b, err := br.ReadByte()
	if err != nil {
		s.Reset()
		return
	}
	t := msgType(b)
	if t != typePutRoot && t != typeGetRoot {
		log.Debug("root stream with unknown message type", "type", t)
		s.Reset()
		return
	}
	rt := t | replyBit
	if !sv.acquireStream(remote) {
		log.Debug("root stream refused: too many streams from peer")
		writeReply(s, rt, wireReply{Status: StatusBusy, Message: "too many streams"}, nil)
		return
	}
	defer sv.releaseStream(remote)

	rq, ok := readHeader(s, br, t, log, func(st Status, msg string) {
		writeReply(s, rt, wireReply{Status: st, Message: msg}, nil)
	})
	if ok {
		sv.serve(s, br, rq, start, log)
	}
}

// serve answers a decoded request.
func (sv *rootServer) serve(s network.Stream, br *bufio.Reader, rq request, start time.Time, log *slog.Logger) {
	ctx, cancel := context.WithDeadline(sv.n.ctx, start.Add(shortTimeout))
	defer cancel()
	rt := rq.typ | replyBit

	switch rq.typ {
	case typePutRoot:
		size := int64(rq.size)
		if !sv.reserve(size) {
			log.Debug("root put refused: too many bytes in flight", "size", size)
			writeReply(s, rt, wireReply{Status: StatusBusy, Message: "too many bytes in flight"}, nil)
			return
		}
		defer sv.unreserve(size)
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			log.Debug("root put: body not received", "err", err)
			s.Reset()
			return
		}
		rec, err := peerdrive.UnmarshalRoot(data)
		if err != nil {
			log.Debug("root put refused: record does not decode", "err", err)
			writeReply(s, rt, wireReply{Status: StatusBadRequest, Message: "record does not decode"}, nil)
			return
		}
		if err := rec.Verify(); err != nil {
			log.Debug("root put refused: bad signature", "owner", shortOwner(rec.Owner), "seq", rec.Seq)
			writeReply(s, rt, wireReply{Status: StatusBadSignature, Message: "signature does not verify"}, nil)
			return
		}
		stored, err := sv.store.Put(ctx, rec)
		if err != nil {
			writeReply(s, rt, sv.storeReply(err, log, "put", rec.Owner), nil)
			return
		}
		if stored {
			log.Debug("root record stored", "owner", shortOwner(rec.Owner), "seq", rec.Seq)
			writeReply(s, rt, wireReply{Status: StatusOK}, nil)
			return
		}
		held, err := sv.store.Get(ctx, rec.Owner)
		if err != nil {
			writeReply(s, rt, sv.storeReply(err, log, "get", rec.Owner), nil)
			return
		}
		if peerdrive.CompareRoots(held, rec) == 0 {
			// The record held already: a repeated PUTROOT is ok.
			writeReply(s, rt, wireReply{Status: StatusOK}, nil)
			return
		}
		writeReply(s, rt, wireReply{Status: StatusStale, Seq: held.Seq,
			Message: fmt.Sprintf("holds seq %d", held.Seq)}, nil)

	case typeGetRoot:
		owner := ed25519.PublicKey(bytes.Clone(rq.id[:]))
		rec, err := sv.store.Get(ctx, owner)
		if err != nil {
			writeReply(s, rt, sv.storeReply(err, log, "get", owner), nil)
			return
		}
		b, err := peerdrive.MarshalRoot(rec)
		if err != nil || !bytes.Equal(rec.Owner, owner) {
			log.Error("root store returned an unusable record", "owner", shortOwner(owner), "err", err)
			writeReply(s, rt, wireReply{Status: StatusInternal, Message: "internal error"}, nil)
			return
		}
		size := int64(len(b))
		if !sv.reserve(size) {
			writeReply(s, rt, wireReply{Status: StatusBusy, Message: "too many bytes in flight"}, nil)
			return
		}
		defer sv.unreserve(size)
		writeReply(s, rt, wireReply{Status: StatusOK, Size: uint64(len(b))}, b)
	}
}

// storeReply maps a RootStore error to a reply. Messages never carry the
// store's own error text.
func (sv *rootServer) storeReply(err error, log *slog.Logger, op string, owner ed25519.PublicKey) wireReply {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return wireReply{Status: StatusNotFound}
	case errors.Is(err, peerdrive.ErrBadSignature):
		return wireReply{Status: StatusBadSignature, Message: "signature does not verify"}
	case errors.Is(err, syscall.ENOSPC):
		return wireReply{Status: StatusFull}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return wireReply{Status: StatusBusy, Message: "timed out"}
	}
	log.Error("root store failed", "op", op, "owner", shortOwner(owner), "err", err)
	return wireReply{Status: StatusInternal, Message: "internal error"}
}

// writeReply writes a reply (and body) and closes the stream; on a refusal,
// without reading the rest of the request (docs/protocol.md §2.6).
func writeReply(s network.Stream, t msgType, w wireReply, body []byte) {
	b, err := encodeReply(make([]byte, 0, 64), t, w)
	if err != nil {
		s.Reset()
		return
	}
	if _, err := s.Write(b); err != nil {
		s.Reset()
		return
	}
	if len(body) > 0 {
		if _, err := s.Write(body); err != nil {
			s.Reset()
			return
		}
	}
	s.Close()
}

// shortOwner is the first 12 hex digits of an owner key, for logs.
func shortOwner(k ed25519.PublicKey) string { return fmt.Sprintf("%x", k[:min(len(k), 6)]) }

// rootValidator is the DHT's record validator for the "peerdrive-root"
// namespace: a value under RootKeyFor(owner) must be a canonical root
// record of that owner with a valid signature, and of several the one with
// the highest Seq wins (peerdrive.CompareRoots).
type rootValidator struct{}

func (rootValidator) Validate(key string, value []byte) error {
	_, err := rootFromDHT(key, value)
	return err
}

func (rootValidator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bestRec *peerdrive.RootRecord
	for i, v := range values {
		rec, err := rootFromDHT(key, v)
		if err != nil {
			continue
		}
		if best < 0 || peerdrive.CompareRoots(rec, bestRec) > 0 {
			best, bestRec = i, rec
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("net: no valid root record among %d values for %s", len(values), key)
	}
	return best, nil
}

// rootFromDHT decodes and checks a DHT value stored under key.
func rootFromDHT(key string, value []byte) (*peerdrive.RootRecord, error) {
	owner, err := peerdrive.ParseRootKey(key)
	if err != nil {
		return nil, err
	}
	rec, err := peerdrive.UnmarshalRoot(value)
	if err != nil {
		return nil, err
	}
	if err := rec.VerifyFor(owner); err != nil {
		return nil, err
	}
	return rec, nil
}
