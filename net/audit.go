package net

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/audit"
)

// The AUDIT request of the shard protocol: docs/audit.md §2.

// MaxAuditLeaves is the most leaves one AUDIT request may ask for.
const MaxAuditLeaves = 16

const (
	// maxAuditIndex bounds a leaf index: the leaf count of the largest shard.
	maxAuditIndex = MaxShardSize / audit.LeafSize
	// maxAuditBody bounds an AUDIT reply's body.
	maxAuditBody = 128 << 10
)

// auditHeaderLimit is the header limit of AUDIT messages.
func auditHeaderLimit(t msgType) int {
	if t&replyBit != 0 {
		return 512
	}
	return 128
}

// decodeAudit validates an AUDIT request header.
func decodeAudit(rq request, w wireRequest) (request, error) {
	t := rq.typ
	var ok bool
	if rq.id, ok = shardID(w.ID); !ok {
		return rq, fmt.Errorf("%s: %d-byte id: %w", t, len(w.ID), errMalformed)
	}
	if len(w.Leaves) == 0 || len(w.Leaves) > MaxAuditLeaves {
		return rq, fmt.Errorf("%s: %d leaves: %w", t, len(w.Leaves), errMalformed)
	}
	rq.leaves = make([]int, len(w.Leaves))
	for i, l := range w.Leaves {
		if l >= maxAuditIndex {
			return rq, fmt.Errorf("%s: leaf %d: %w", t, l, errMalformed)
		}
		for _, prev := range w.Leaves[:i] {
			if prev == l {
				return rq, fmt.Errorf("%s: leaf %d twice: %w", t, l, errMalformed)
			}
		}
		rq.leaves[i] = int(l)
	}
	switch w.Proofs {
	case 0, audit.Version1:
		rq.proofs = audit.Version1
	case audit.Version2:
		rq.proofs = audit.Version2
	default:
		return rq, fmt.Errorf("%s: proof version %d: %w", t, w.Proofs, errMalformed)
	}
	return rq, nil
}

// uvarintLen is the length of n's minimal uvarint encoding.
func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

func encodeLeaves(leaves []int) []uint64 {
	out := make([]uint64, len(leaves))
	for i, l := range leaves {
		out[i] = uint64(l)
	}
	return out
}

// serveAudit answers an AUDIT request: the leaves asked for with their
// proofs of the version asked for, computed from the stored shard.
func (sv *shardServer) serveAudit(ctx context.Context, s network.Stream, rq request, log *slog.Logger) {
	rt := rq.typ | replyBit
	data, done, err := sv.get(ctx, rq.id)
	defer done()
	if err != nil {
		writeReply(s, rt, sv.storeReply(err, log, "audit", rq.id), nil)
		return
	}
	prove := audit.ProveAll
	if rq.proofs == audit.Version2 {
		prove = audit.ProveAllV2
	}
	_, proofs, err := prove(data, rq.leaves)
	if err != nil {
		sv.refuse(s, rt, StatusBadRequest, "leaf index past the shard's end")
		return
	}
	body, err := encodeAuditBody(data, rq.leaves, proofs, rq.proofs)
	if err != nil {
		log.Error("audit reply does not encode", "shard", rq.id.Short(), "err", err)
		writeReply(s, rt, wireReply{Status: StatusInternal, Message: "internal error"}, nil)
		return
	}
	writeReply(s, rt, wireReply{Status: StatusOK, Size: uint64(len(body))}, body)
}

// encodeAuditBody lays out the leaves and their proofs of version v
// (docs/audit.md §2).
func encodeAuditBody(data []byte, leaves []int, proofs []audit.Proof, v byte) ([]byte, error) {
	var b []byte
	for k, i := range leaves {
		leaf := audit.Leaf(data, i)
		b = binary.AppendUvarint(b, uint64(len(leaf)))
		b = append(b, leaf...)
		var err error
		if b, err = proofs[k].AppendVersion(b, v); err != nil {
			return nil, err
		}
	}
	if len(b) > maxAuditBody {
		return nil, fmt.Errorf("%d-byte audit body: %w", len(b), errTooLarge)
	}
	return b, nil
}

// decodeAuditBody decodes the body of an AUDIT reply to leaves: exactly one
// per requested index, in order, and nothing after them.
func decodeAuditBody(b []byte, leaves []int) ([]audit.Answer, error) {
	out := make([]audit.Answer, len(leaves))
	for k, i := range leaves {
		n, m := binary.Uvarint(b)
		if m <= 0 || m != uvarintLen(n) || n > audit.LeafSize || uint64(len(b)-m) < n {
			return nil, fmt.Errorf("leaf %d length: %w", i, errMalformed)
		}
		b = b[m:]
		data := b[:n:n]
		b = b[n:]
		p, v, rest, err := audit.DecodeProof(b)
		if err != nil {
			return nil, fmt.Errorf("leaf %d proof: %w: %v", i, errMalformed, err)
		}
		b = rest
		out[k] = audit.Answer{Index: i, Data: data, Proof: p, Version: v}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the leaves: %w", len(b), errMalformed)
	}
	return out, nil
}

// AuditShard asks peer p for the given leaves of shard id with their
// version 2 proofs, whose root is the shard ID (docs/audit.md §2). It
// returns them unverified (a peer older than version 2 answers version 1:
// audit.CheckV2 says ErrVersion); ErrNotFound (which also matches
// fs.ErrNotExist) if p does not hold the shard.
func (n *Node) AuditShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, leaves []int) ([]audit.Answer, error) {
	return n.auditVersion(ctx, p, id, leaves, audit.Version2)
}

func (n *Node) auditVersion(ctx context.Context, p peer.ID, id peerdrive.ShardID, leaves []int, v byte) ([]audit.Answer, error) {
	out, lat, err := n.auditShard(ctx, p, id, leaves, v)
	return out, notExist(n.finish(p, "audit", id.Short(), err, lat))
}

// notExist makes ErrNotFound match fs.ErrNotExist too, for callers that do
// not import net (replica).
func notExist(err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w (%w)", err, fs.ErrNotExist)
	}
	return err
}

func (n *Node) auditShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, leaves []int, v byte) ([]audit.Answer, time.Duration, error) {
	if len(leaves) == 0 || len(leaves) > MaxAuditLeaves {
		return nil, 0, fmt.Errorf("%d leaves (1 to %d): %w", len(leaves), MaxAuditLeaves, ErrRefused)
	}
	rq := request{typ: typeAudit, id: id, leaves: leaves, proofs: v}
	c, err := n.dial(ctx, p, typeAudit)
	if err != nil {
		return nil, 0, err
	}
	w, sentAt, err := c.smallRequest(rq)
	if err != nil {
		return nil, 0, c.done(err)
	}
	lat := c.replyAt.Sub(sentAt)
	if w.Size == 0 || w.Size > maxAuditBody {
		return nil, 0, c.done(fmt.Errorf("%w: %d-byte audit body", ErrProtocol, w.Size))
	}
	body := make([]byte, w.Size)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, 0, c.done(fmt.Errorf("audit body: %w", noEOF(err)))
	}
	out, err := decodeAuditBody(body, leaves)
	if err != nil {
		return nil, 0, c.done(fmt.Errorf("%w: %v", ErrProtocol, err))
	}
	c.done(nil)
	return out, lat, nil
}

// AuditFailed records that p failed an audit (a proof that does not
// verify, or a shard it should hold and does not): a bad shard for its
// score, which makes p unhealthy for good.
func (n *Node) AuditFailed(p peer.ID) { n.scores.BadShard(p) }

// Distrusted reports whether p ever served a bad shard or failed an audit:
// the shards it holds are not counted on.
func (n *Node) Distrusted(p peer.ID) bool { return n.scores.Get(p).BadShards > 0 }
