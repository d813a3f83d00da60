package net

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/audit"
)

// The shard protocol's messages, framing and limits: docs/protocol.md §2.
// The root protocol (§5) uses the same framing, with message types of its
// own.

// ShardProtocol is the protocol ID of the shard protocol.
const ShardProtocol = "/peerdrive/shard/1.0.0"

// Protocol limits.
const (
	MaxShardSize = 32 << 20 // bytes in one shard
	MaxHasIDs    = 1024     // shard IDs in one HAS request
	maxMessage   = 256      // bytes of a reply's message text
)

// msgType is the first byte of every message.
type msgType uint8

// Request types; a reply has its request's type with replyBit set.
const (
	typePut    msgType = 0x01
	typeGet    msgType = 0x02
	typeHas    msgType = 0x03
	typeDelete msgType = 0x04
	typeStat   msgType = 0x05
	// Root protocol requests (docs/protocol.md §5).
	typePutRoot msgType = 0x06
	typeGetRoot msgType = 0x07
	typeAudit   msgType = 0x08 // proof of storage (docs/audit.md §2)
	typeRenew   msgType = 0x09 // extend leases on holds (docs/gc.md §5)
	typeClaim   msgType = 0x0A // owner delegation (docs/gc.md §5)
	replyBit    msgType = 0x80
)

func (t msgType) String() string {
	names := [...]string{typePut: "PUT", typeGet: "GET", typeHas: "HAS", typeDelete: "DELETE", typeStat: "STAT",
		typePutRoot: "PUTROOT", typeGetRoot: "GETROOT", typeAudit: "AUDIT", typeRenew: "RENEW", typeClaim: "CLAIM"}
	base := t &^ replyBit
	if base == 0 || int(base) >= len(names) {
		return fmt.Sprintf("type 0x%02x", uint8(t))
	}
	if t&replyBit != 0 {
		return names[base] + " reply"
	}
	return names[base]
}

// headerLimit is the largest header a message of type t may have; 0 for an
// unknown type.
func headerLimit(t msgType) int {
	switch t {
	case typePut, typeGet, typeDelete, typePutRoot, typeGetRoot:
		return 128
	case typeHas:
		return 36 << 10
	case typeStat:
		return 16
	case typePut | replyBit, typeGet | replyBit, typeDelete | replyBit, typeStat | replyBit,
		typePutRoot | replyBit, typeGetRoot | replyBit:
		return 512
	case typeHas | replyBit:
		return 2 << 10
	case typeAudit, typeAudit | replyBit:
		return auditHeaderLimit(t)
	case typeRenew, typeRenew | replyBit, typeClaim, typeClaim | replyBit:
		return leaseHeaderLimit(t)
	}
	return 0
}

// Status is the outcome a server reports in a reply.
type Status uint64

// Statuses (docs/protocol.md §2.3). 0 is not a status: a reply without one
// is malformed.
const (
	StatusOK         Status = 1
	StatusNotFound   Status = 2
	StatusFull       Status = 3
	StatusNotOwner   Status = 4
	StatusBadRequest Status = 5
	StatusBusy       Status = 6
	StatusTooLarge   Status = 7
	StatusBadHash    Status = 8
	StatusInternal   Status = 9
	// Root protocol only (docs/protocol.md §5.3).
	StatusBadSignature Status = 10
	StatusStale        Status = 11
	// Admission (docs/ledger.md §3): the peer takes more than it gives.
	StatusGiveBack Status = 12
)

func (s Status) String() string {
	names := [...]string{"", "ok", "not-found", "full", "not-owner", "bad-request", "busy", "too-large", "bad-hash", "internal",
		"bad-signature", "stale", "give-back-first"}
	if s == 0 || s >= Status(len(names)) {
		return fmt.Sprintf("status %d", uint64(s))
	}
	return names[s]
}

// wireRequest is a request header as encoded.
type wireRequest struct {
	ID     []byte   `cbor:"1,keyasint,omitempty"`
	Size   uint64   `cbor:"2,keyasint,omitempty"`
	IDs    [][]byte `cbor:"3,keyasint,omitempty"`
	Leaves []uint64 `cbor:"4,keyasint,omitempty"` // AUDIT (docs/audit.md §2)
	Claim  []byte   `cbor:"5,keyasint,omitempty"` // CLAIM (docs/gc.md §5)
	Proofs uint64   `cbor:"6,keyasint,omitempty"` // AUDIT: proof version asked for, absent = 1
}

// wireReply is a reply header as encoded.
type wireReply struct {
	Status   Status `cbor:"1,keyasint"`
	Message  string `cbor:"2,keyasint,omitempty"`
	Size     uint64 `cbor:"3,keyasint,omitempty"`
	Have     []bool `cbor:"4,keyasint,omitempty"`
	Used     uint64 `cbor:"5,keyasint,omitempty"`
	Capacity uint64 `cbor:"6,keyasint,omitempty"`
	Shards   uint64 `cbor:"7,keyasint,omitempty"`
	Seq      uint64 `cbor:"8,keyasint,omitempty"` // PUTROOT, stale: the Seq the peer holds
}

// request is a decoded, validated request header.
type request struct {
	typ    msgType
	id     peerdrive.ShardID   // PUT, GET, DELETE; GETROOT: the owner key
	size   int                 // PUT, PUTROOT
	ids    []peerdrive.ShardID // HAS
	leaves []int               // AUDIT
	proofs byte                // AUDIT: proof version, audit.Version1 or Version2
	claim  []byte              // CLAIM
}

// Framing errors. errTooLarge and errMalformed are the peer's fault;
// anything else from readMessage is the stream's.
var (
	errTooLarge  = errors.New("message too large")
	errMalformed = errors.New("malformed message")
)

var (
	wireEnc cbor.EncMode
	wireDec cbor.DecMode
)

func init() {
	var err error
	wireEnc, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	wireDec, err = cbor.DecOptions{
		MaxNestedLevels:  4,
		MaxArrayElements: MaxHasIDs,
		MaxMapPairs:      16,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// appendMessage appends a message of type t with header hdr (a *wireRequest
// or *wireReply) to b.
func appendMessage(b []byte, t msgType, hdr any) ([]byte, error) {
	h, err := wireEnc.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	if len(h) > headerLimit(t) {
		return nil, fmt.Errorf("encode %s: %d-byte header: %w", t, len(h), errTooLarge)
	}
	b = append(b, byte(t))
	b = binary.AppendUvarint(b, uint64(len(h)))
	return append(b, h...), nil
}

// readMessage reads one message's type and header (not its body) from r.
// ok says which types the reader accepts. A type not accepted or a header
// length not in 1..limit is refused before the header is read.
func readMessage(r *bufio.Reader, ok func(msgType) bool) (msgType, []byte, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	t := msgType(b)
	limit := headerLimit(t)
	if limit == 0 || !ok(t) {
		return t, nil, fmt.Errorf("unexpected %s: %w", t, errMalformed)
	}
	n, err := readUvarint(r, limit)
	if err != nil {
		return t, nil, fmt.Errorf("%s header length: %w", t, err)
	}
	h := make([]byte, n)
	if _, err := io.ReadFull(r, h); err != nil {
		return t, nil, fmt.Errorf("%s header: %w", t, noEOF(err))
	}
	return t, h, nil
}

// readUvarint reads a minimally encoded uvarint in 1..limit (limit < 2^21, so
// at most 3 bytes are read).
func readUvarint(r io.ByteReader, limit int) (int, error) {
	var v uint64
	for i := 0; i < 3; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if v > uint64(limit) {
			return 0, fmt.Errorf("length over %d: %w", limit, errTooLarge)
		}
		if b < 0x80 {
			if i > 0 && b == 0 {
				return 0, fmt.Errorf("non-minimal length: %w", errMalformed)
			}
			if v == 0 {
				return 0, fmt.Errorf("empty header: %w", errMalformed)
			}
			return int(v), nil
		}
	}
	return 0, fmt.Errorf("length over %d: %w", limit, errTooLarge)
}

// noEOF turns a clean EOF in the middle of a message into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func shardID(b []byte) (peerdrive.ShardID, bool) {
	var id peerdrive.ShardID
	if len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// decodeRequest decodes and validates the header of a request of type t.
func decodeRequest(t msgType, h []byte) (request, error) {
	var w wireRequest
	if err := wireDec.Unmarshal(h, &w); err != nil {
		return request{}, fmt.Errorf("%s: %w: %v", t, errMalformed, err)
	}
	rq := request{typ: t}
	var ok bool
	switch t {
	case typePut, typeGet, typeDelete:
		if rq.id, ok = shardID(w.ID); !ok {
			return rq, fmt.Errorf("%s: %d-byte id: %w", t, len(w.ID), errMalformed)
		}
		if t == typePut {
			if w.Size > MaxShardSize {
				return rq, fmt.Errorf("%s: %d-byte shard: %w", t, w.Size, errTooLarge)
			}
			rq.size = int(w.Size)
		}
	case typeHas:
		if len(w.IDs) == 0 || len(w.IDs) > MaxHasIDs {
			return rq, fmt.Errorf("%s: %d ids: %w", t, len(w.IDs), errMalformed)
		}
		rq.ids = make([]peerdrive.ShardID, len(w.IDs))
		for i, b := range w.IDs {
			if rq.ids[i], ok = shardID(b); !ok {
				return rq, fmt.Errorf("%s: %d-byte id: %w", t, len(b), errMalformed)
			}
		}
	case typeStat:
	case typePutRoot:
		if w.Size > peerdrive.MaxRootSize {
			return rq, fmt.Errorf("%s: %d-byte record: %w", t, w.Size, errTooLarge)
		}
		rq.size = int(w.Size)
	case typeGetRoot:
		if rq.id, ok = shardID(w.ID); !ok {
			return rq, fmt.Errorf("%s: %d-byte owner: %w", t, len(w.ID), errMalformed)
		}
	case typeAudit:
		return decodeAudit(rq, w)
	case typeRenew, typeClaim:
		return decodeLease(rq, w)
	default:
		return rq, fmt.Errorf("%s: %w", t, errMalformed)
	}
	return rq, nil
}

// encodeRequest is decodeRequest's inverse.
func encodeRequest(rq request) ([]byte, error) {
	var w wireRequest
	switch rq.typ {
	case typePut, typeGet, typeDelete:
		w.ID = rq.id[:]
		if rq.typ == typePut {
			w.Size = uint64(rq.size)
		}
	case typeHas:
		w.IDs = make([][]byte, len(rq.ids))
		for i := range rq.ids {
			w.IDs[i] = rq.ids[i][:]
		}
	case typePutRoot:
		w.Size = uint64(rq.size)
	case typeGetRoot:
		w.ID = rq.id[:]
	case typeAudit:
		w.ID, w.Leaves = rq.id[:], encodeLeaves(rq.leaves)
		if rq.proofs != audit.Version1 {
			w.Proofs = uint64(rq.proofs)
		}
	case typeRenew, typeClaim:
		encodeLease(rq, &w)
	}
	return appendMessage(nil, rq.typ, &w)
}

// decodeReply decodes and validates the header of a reply of type t.
// The caller checks what depends on its request (the length of Have).
func decodeReply(t msgType, h []byte) (wireReply, error) {
	var w wireReply
	if err := wireDec.Unmarshal(h, &w); err != nil {
		return w, fmt.Errorf("%s: %w: %v", t, errMalformed, err)
	}
	if w.Status == 0 {
		return w, fmt.Errorf("%s without status: %w", t, errMalformed)
	}
	if len(w.Message) > maxMessage || !utf8.ValidString(w.Message) {
		return w, fmt.Errorf("%s: %d-byte message: %w", t, len(w.Message), errMalformed)
	}
	if w.Status == StatusOK && t == typeGet|replyBit && w.Size > MaxShardSize {
		return w, fmt.Errorf("%s: %d-byte shard: %w", t, w.Size, errMalformed)
	}
	if w.Status == StatusOK && t == typeGetRoot|replyBit && w.Size > peerdrive.MaxRootSize {
		return w, fmt.Errorf("%s: %d-byte record: %w", t, w.Size, errMalformed)
	}
	return w, nil
}

// encodeReply appends a reply of type t to b. A message longer than the
// limit is cut (at a rune boundary).
func encodeReply(b []byte, t msgType, w wireReply) ([]byte, error) {
	if len(w.Message) > maxMessage {
		m := w.Message[:maxMessage]
		for len(m) > 0 && !utf8.ValidString(m) {
			m = m[:len(m)-1]
		}
		w.Message = m
	}
	return appendMessage(b, t, &w)
}
