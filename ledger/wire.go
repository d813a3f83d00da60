package ledger

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The ledger protocol, /peerdrive/ledger/1.0.0 (docs/ledger.md §5): nodes
// report their accounts to a coordinator and ask it for the network's
// totals of peers.

// Protocol is the ledger protocol's ID.
const Protocol = "/peerdrive/ledger/1.0.0"

// Message types; a reply has its request's type with replyBit set.
const (
	typeReport = 0x01
	typeQuery  = 0x02
	replyBit   = 0x80
)

// Limits of the protocol.
const (
	MaxReportEntries = 4096 // accounts in one REPORT
	MaxQueryPeers    = 1024 // peers in one QUERY
	maxPeerIDLen     = 64   // bytes of one binary peer ID
	maxMessage       = 256  // bytes of a reply's message
	maxCount         = 1 << 62
)

// Statuses of a reply (the shard protocol's values, docs/protocol.md §2.3).
const (
	statusOK         = 1
	statusBadRequest = 5
	statusInternal   = 9
)

// headerLimit is the largest header a message of type t may have; 0 for an
// unknown type.
func headerLimit(t byte) int {
	switch t {
	case typeReport:
		return 512 << 10
	case typeQuery:
		return 96 << 10
	case typeReport | replyBit:
		return 512
	case typeQuery | replyBit:
		return 256 << 10
	}
	return 0
}

// ReportEntry is one node's account of one peer, as reported.
type ReportEntry struct {
	Peer         []byte `cbor:"1,keyasint"`
	HeldFor      uint64 `cbor:"2,keyasint,omitempty"` // the peer takes
	Gives        uint64 `cbor:"3,keyasint,omitempty"` // the peer gives: our data and probes it holds
	AuditsPassed uint64 `cbor:"4,keyasint,omitempty"`
	AuditsFailed uint64 `cbor:"5,keyasint,omitempty"`
	CPUGivenMs   uint64 `cbor:"6,keyasint,omitempty"` // we gave the peer
	CPUTakenMs   uint64 `cbor:"7,keyasint,omitempty"` // we took from the peer
}

// Totals is the network's view of one peer: the sums of every other node's
// report about it.
type Totals struct {
	Peer         string `json:"peer" cbor:"-"`
	PeerBytes    []byte `json:"-" cbor:"1,keyasint"`
	Taken        int64  `json:"taken_bytes" cbor:"2,keyasint,omitempty"`
	Given        int64  `json:"given_bytes" cbor:"3,keyasint,omitempty"`
	Reporters    int    `json:"reporters" cbor:"4,keyasint,omitempty"`
	AuditsPassed uint64 `json:"audits_passed" cbor:"5,keyasint,omitempty"`
	AuditsFailed uint64 `json:"audits_failed" cbor:"6,keyasint,omitempty"`
}

// message is every header of the protocol; which keys a type uses is in
// docs/ledger.md §5.2.
type message struct {
	Status  uint64        `cbor:"1,keyasint,omitempty"`
	Message string        `cbor:"2,keyasint,omitempty"`
	Entries []ReportEntry `cbor:"3,keyasint,omitempty"` // REPORT
	Peers   [][]byte      `cbor:"4,keyasint,omitempty"` // QUERY
	Totals  []Totals      `cbor:"5,keyasint,omitempty"` // QUERY reply
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  MaxReportEntries,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// ErrMalformed is a message that does not decode or break the protocol's
// rules.
var ErrMalformed = errors.New("ledger: malformed message")

// writeMessage writes one framed message.
func writeMessage(w io.Writer, t byte, m *message) error {
	h, err := encMode.Marshal(m)
	if err != nil {
		return err
	}
	if len(h) > headerLimit(t) {
		return fmt.Errorf("ledger: %d-byte message of type 0x%02x over its limit: %w", len(h), t, ErrMalformed)
	}
	b := append([]byte{t}, binary.AppendUvarint(nil, uint64(len(h)))...)
	_, err = w.Write(append(b, h...))
	return err
}

// readMessage reads one framed message whose type must be want, and
// decodes and checks it.
func readMessage(r *bufio.Reader, want byte) (*message, error) {
	t, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if t != want {
		return nil, fmt.Errorf("%w: type 0x%02x, want 0x%02x", ErrMalformed, t, want)
	}
	n, err := readLength(r)
	if err != nil {
		return nil, err
	}
	if n == 0 || n > uint64(headerLimit(t)) {
		return nil, fmt.Errorf("%w: length %d", ErrMalformed, n)
	}
	h := make([]byte, n)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, err
	}
	return decodeMessage(t, h)
}

// readLength reads a header length: a minimal uvarint of at most 3 bytes.
func readLength(r io.ByteReader) (uint64, error) {
	var n uint64
	for i := 0; i < 3; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: length not minimally encoded", ErrMalformed)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%w: length over 3 bytes", ErrMalformed)
}

// decodeMessage decodes the header of a message of type t strictly: CBOR
// as the shard protocol's (no indefinite lengths, tags, duplicate keys,
// unknown keys), and every peer ID, count and list within the limits.
func decodeMessage(t byte, h []byte) (*message, error) {
	var m message
	if err := decMode.Unmarshal(h, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	bad := func(why string, a ...any) (*message, error) {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(why, a...))
	}
	if len(m.Message) > maxMessage {
		return bad("message of %d bytes", len(m.Message))
	}
	switch t {
	case typeReport:
		if m.Status != 0 || len(m.Peers) > 0 || len(m.Totals) > 0 {
			return bad("REPORT with reply keys")
		}
		for _, e := range m.Entries {
			if err := checkPeer(e.Peer); err != nil {
				return nil, err
			}
			if e.HeldFor > maxCount || e.Gives > maxCount || e.AuditsPassed > maxCount || e.AuditsFailed > maxCount ||
				e.CPUGivenMs > maxCount || e.CPUTakenMs > maxCount {
				return bad("count out of range")
			}
		}
	case typeQuery:
		if len(m.Peers) == 0 || len(m.Peers) > MaxQueryPeers {
			return bad("QUERY of %d peers", len(m.Peers))
		}
		for _, p := range m.Peers {
			if err := checkPeer(p); err != nil {
				return nil, err
			}
		}
	case typeReport | replyBit, typeQuery | replyBit:
		if m.Status == 0 {
			return bad("reply without status")
		}
		if len(m.Totals) > MaxQueryPeers {
			return bad("%d totals", len(m.Totals))
		}
		for i := range m.Totals {
			tt := &m.Totals[i]
			if err := checkPeer(tt.PeerBytes); err != nil {
				return nil, err
			}
			if tt.Taken < 0 || tt.Given < 0 || tt.Reporters < 0 || tt.AuditsPassed > maxCount || tt.AuditsFailed > maxCount {
				return bad("totals out of range")
			}
			p, _ := peer.IDFromBytes(tt.PeerBytes)
			tt.Peer = p.String()
		}
	default:
		return bad("type 0x%02x", t)
	}
	return &m, nil
}

func checkPeer(b []byte) error {
	if len(b) == 0 || len(b) > maxPeerIDLen {
		return fmt.Errorf("%w: peer ID of %d bytes", ErrMalformed, len(b))
	}
	if _, err := peer.IDFromBytes(b); err != nil {
		return fmt.Errorf("%w: peer ID: %v", ErrMalformed, err)
	}
	return nil
}
