package net

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

// ShardStore is what the shard server needs of a storage node's store
// (store.Shards implements it). owner is the remote peer's ID string, as
// authenticated by the connection's security handshake.
//
// Errors are classified with errors.Is, because this package does not know
// the store's sentinels: fs.ErrNotExist is not-found (Get of an absent
// shard, Delete of a shard not stored), syscall.ENOSPC is full (Put beyond
// the capacity or the disk), fs.ErrPermission is not-owner (Delete by a peer
// without a hold). Any other error is reported to the peer as internal and
// logged.
type ShardStore interface {
	// Put stores data as shard id for owner; idempotent for the same owner.
	// data is the server's buffer, reused once Put returns: Put must not
	// keep it.
	Put(ctx context.Context, owner string, id peerdrive.ShardID, data []byte) error
	// Get returns shard id's bytes.
	Get(ctx context.Context, id peerdrive.ShardID) ([]byte, error)
	// Has reports whether shard id is stored.
	Has(ctx context.Context, id peerdrive.ShardID) (bool, error)
	// Delete removes owner's hold on shard id (the shard goes with the last).
	Delete(ctx context.Context, owner string, id peerdrive.ShardID) error
	// Usage reports bytes stored, bytes contributed and shards stored.
	Usage() (used, capacity, count int64)
}

// Server limits and deadlines (docs/protocol.md §2.6).
const (
	maxStreamsPerPeer = 8
	maxInFlight       = 256 << 20
	bulkTimeout       = 60 * time.Second // PUT and GET streams
	shortTimeout      = 10 * time.Second // HAS, DELETE, STAT streams; any request header
)

// shardServer serves the shard protocol from a ShardStore.
type shardServer struct {
	n     *Node
	store ShardStore

	limits // open streams per remote peer, bytes of PUT and GET bodies held

	// Streams served, by transport (for tests and status).
	tcpStreams, otherStreams atomic.Int64
}

// ServeShards serves the shard protocol from s, replacing any store served
// before. Peers see the protocol in identify (pushed to connected peers) and
// count this node among their StoragePeers; the node advertises itself in
// the DHT as a storage node.
func (n *Node) ServeShards(s ShardStore) {
	sv := &shardServer{n: n, store: s, limits: newLimits(maxInFlight)}
	n.mu.Lock()
	n.shards = sv
	n.mu.Unlock()
	n.h.SetStreamHandler(ShardProtocol, sv.handle)
	if n.disc != nil {
		n.disc.kick() // advertise soon
	}
}

// isTCP reports whether c is a direct (not relayed) TCP connection.
func isTCP(c network.Conn) bool {
	a := c.RemoteMultiaddr()
	if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return false
	}
	_, err := a.ValueForProtocol(ma.P_TCP)
	return err == nil
}

// handle serves one stream: one request, one reply.
func (sv *shardServer) handle(s network.Stream) {
	start := time.Now()
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(start.Add(shortTimeout))
	if isTCP(s.Conn()) {
		sv.tcpStreams.Add(1)
	} else {
		sv.otherStreams.Add(1)
	}
	log := slog.With("peer", remote)

	br := bufio.NewReaderSize(s, 512)
	b, err := br.ReadByte()
	if err != nil {
		s.Reset()
		return
	}
	t := msgType(b)
	switch t {
	case typePut, typeGet, typeHas, typeDelete, typeStat, typeAudit, typeRenew, typeClaim:
	default:
		// No reply type to answer with: not our protocol.
		log.Debug("shard stream with unknown message type", "type", t)
		s.Reset()
		return
	}
	rt := t | replyBit
	if !sv.acquireStream(remote) {
		log.Debug("shard stream refused: too many streams from peer")
		sv.refuse(s, rt, StatusBusy, "too many streams")
		return
	}
	defer sv.releaseStream(remote)

	rq, ok := readHeader(s, br, t, log, func(st Status, msg string) { sv.refuse(s, rt, st, msg) })
	if ok {
		sv.serve(s, br, rq, remote, start, log)
	}
}

// serve answers a decoded request.
func (sv *shardServer) serve(s network.Stream, br *bufio.Reader, rq request, remote peer.ID, start time.Time, log *slog.Logger) {
	deadline := start.Add(shortTimeout)
	if rq.typ == typePut || rq.typ == typeGet {
		deadline = start.Add(bulkTimeout)
		_ = s.SetDeadline(deadline)
	}
	ctx, cancel := context.WithDeadline(sv.n.ctx, deadline)
	defer cancel()
	rt := rq.typ | replyBit
	owner := sv.n.OwnerOf(remote) // the owner's account if it sent a delegation (lease.go)

	switch rq.typ {
	case typePut:
		size := int64(rq.size)
		if err := sv.n.admitPut(remote, size); err != nil { // the ledger (docs/ledger.md §3)
			log.Debug("shard put refused: peer does not give back", "shard", rq.id.Short(), "size", size, "err", err)
			sv.refuse(s, rt, admitStatus(err), err.Error())
			return
		}
		if !sv.reserve(size) {
			log.Debug("shard put refused: too many bytes in flight", "shard", rq.id.Short(), "size", size)
			sv.refuse(s, rt, StatusBusy, "too many bytes in flight")
			return
		}
		defer sv.unreserve(size)
		data := getBody(int(size), 0)
		defer putBody(data)
		if _, err := io.ReadFull(br, data); err != nil {
			log.Debug("shard put: body not received", "shard", rq.id.Short(), "err", err)
			s.Reset()
			return
		}
		if peerdrive.ShardID(crypto.ContentID(data)) != rq.id {
			log.Debug("shard put refused: bytes do not match id", "shard", rq.id.Short())
			sv.refuse(s, rt, StatusBadHash, "bytes do not match the id")
			return
		}
		err := sv.store.Put(ctx, owner, rq.id, data)
		w := sv.storeReply(err, log, "put", rq.id)
		if err == nil {
			// The uploader places by free space (docs/protocol.md §3).
			used, capacity, _ := sv.store.Usage()
			w.Used, w.Capacity = uint64(max(used, 0)), uint64(max(capacity, 0))
		}
		writeReply(s, rt, w, nil)

	case typeGet:
		data, done, err := sv.get(ctx, rq.id)
		defer done()
		if err != nil {
			writeReply(s, rt, sv.storeReply(err, log, "get", rq.id), nil)
			return
		}
		if len(data) > MaxShardSize {
			log.Error("stored shard over the protocol's size limit", "shard", rq.id.Short(), "size", len(data))
			writeReply(s, rt, wireReply{Status: StatusInternal, Message: "internal error"}, nil)
			return
		}
		if !sv.reserve(int64(len(data))) {
			sv.refuse(s, rt, StatusBusy, "too many bytes in flight")
			return
		}
		defer sv.unreserve(int64(len(data)))
		writeReply(s, rt, wireReply{Status: StatusOK, Size: uint64(len(data))}, data)

	case typeHas:
		have := make([]bool, len(rq.ids))
		for i, id := range rq.ids {
			ok, err := sv.store.Has(ctx, id)
			if err != nil {
				writeReply(s, rt, sv.storeReply(err, log, "has", id), nil)
				return
			}
			have[i] = ok
		}
		writeReply(s, rt, wireReply{Status: StatusOK, Have: have}, nil)

	case typeDelete:
		err := sv.deleteHold(ctx, owner, remote, rq.id)
		writeReply(s, rt, sv.storeReply(err, log, "delete", rq.id), nil)

	case typeAudit:
		sv.serveAudit(ctx, s, rq, log)

	case typeRenew, typeClaim:
		sv.serveLease(ctx, s, rq, remote, log)

	case typeStat:
		used, capacity, count := sv.store.Usage()
		writeReply(s, rt, wireReply{
			Status:   StatusOK,
			Used:     uint64(max(used, 0)),
			Capacity: uint64(max(capacity, 0)),
			Shards:   uint64(max(count, 0)),
		}, nil)
	}
}

// storeReply maps a ShardStore error to a reply. Messages never carry the
// store's own error text (it names local paths).
func (sv *shardServer) storeReply(err error, log *slog.Logger, op string, id peerdrive.ShardID) wireReply {
	switch {
	case err == nil:
		return wireReply{Status: StatusOK}
	case errors.Is(err, fs.ErrNotExist):
		return wireReply{Status: StatusNotFound}
	case errors.Is(err, syscall.ENOSPC):
		return wireReply{Status: StatusFull}
	case errors.Is(err, fs.ErrPermission):
		return wireReply{Status: StatusNotOwner}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return wireReply{Status: StatusBusy, Message: "timed out"}
	}
	log.Error("shard store failed", "op", op, "shard", id.Short(), "err", err)
	return wireReply{Status: StatusInternal, Message: "internal error"}
}

// refuse replies with a refusal and closes the stream in both directions
// without reading the rest of the request: the muxer drops what the peer
// still sends, and its flow control stops the peer.
func (sv *shardServer) refuse(s network.Stream, t msgType, st Status, msg string) {
	writeReply(s, t, wireReply{Status: st, Message: msg}, nil)
}

// shardGetterInto is a ShardStore that can read a shard into a given
// buffer (store.Shards can): the server then reads shards into pooled
// buffers too.
type shardGetterInto interface {
	GetInto(ctx context.Context, id peerdrive.ShardID, dst []byte) ([]byte, error)
}

// get returns shard id's bytes from the store and a function to call once
// they are sent (a stream's Write copies them or is done with them when it
// returns).
func (sv *shardServer) get(ctx context.Context, id peerdrive.ShardID) ([]byte, func(), error) {
	g, ok := sv.store.(shardGetterInto)
	if !ok {
		data, err := sv.store.Get(ctx, id)
		return data, func() {}, err
	}
	data, err := g.GetInto(ctx, id, getBody(0, getBodyCap))
	return data, func() { putBody(data) }, err
}

// PUT bodies are read into pooled buffers: a fresh megabyte per shard cost
// its page faults and zeroing (about a twentieth of a storage peer's CPU
// while it took a sync's shards). They are page-aligned, their capacity a
// whole number of pages, so that a store that writes shards with O_DIRECT
// (store.Shards) takes them as they are, without a copy.
var bodies sync.Pool // *[]byte

// bodyAlign is the alignment of bodies: the page size.
const bodyAlign = 4096

// getBodyCap is the room of a fresh buffer for a GET's reply: a shard of a
// full segment (4 MiB in 4 data shards) fits.
const getBodyCap = 2 << 20

// getBody returns a buffer of n bytes, its contents undefined; a fresh one
// has room for at least room.
func getBody(n, room int) []byte {
	if b, ok := bodies.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	size := (max(n, room) + bodyAlign - 1) &^ (bodyAlign - 1)
	raw := make([]byte, size+bodyAlign)
	skip := (bodyAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%bodyAlign)) % bodyAlign
	return raw[skip : skip+n : skip+size]
}

// putBody returns b to the pool: large ones are not kept, nor ones that
// grew out of their aligned array.
func putBody(b []byte) {
	if cap(b) > 4<<20 || cap(b)%bodyAlign != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%bodyAlign != 0 {
		return
	}
	bodies.Put(&b)
}
