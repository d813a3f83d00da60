package compute

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
)

// Protocol is the libp2p protocol ID of the compute protocol.
const Protocol = "/peerdrive/compute/1.0.0"

// Message types. A reply carries its request's type with the high bit set.
type msgType byte

const (
	typeCapacity   msgType = 0x01 // requester → supplier: what can you take?
	typeAssign     msgType = 0x02 // requester → supplier: run this unit under this lease
	typeHeartbeat  msgType = 0x03 // supplier → requester: lease alive, progress
	typeCheckpoint msgType = 0x04 // supplier → requester: a committed checkpoint
	typeResult     msgType = 0x05 // supplier → requester: the unit's result or failure
	typeCancel     msgType = 0x06 // requester → supplier: stop this lease
	replyBit       msgType = 0x80
)

// maxMessage bounds one message (a module with its inputs, a result).
const maxMessage = 64 << 20

// Reply statuses.
const (
	statusOK      = 0
	statusRefused = 1 // the supplier will not take the unit (full, window, memory, credit)
	statusUnknown = 2 // no such lease: the receiver drops the unit
	statusBad     = 3 // malformed request
)

// Capacity is what a supplier advertises in reply to typeCapacity.
type Capacity struct {
	Slots      int     `cbor:"1,keyasint,omitempty"`
	Free       int     `cbor:"2,keyasint,omitempty"`
	Memory     int64   `cbor:"3,keyasint,omitempty"` // bytes one unit may use
	WindowLeft int64   `cbor:"4,keyasint,omitempty"` // ns the supplier stays open; MaxInt64 always
	Score      float64 `cbor:"5,keyasint,omitempty"` // benchmark: MB/s of SHA-256 on one core
	Uptime     int64   `cbor:"6,keyasint,omitempty"` // ns since the node started
	Busy       bool    `cbor:"7,keyasint,omitempty"` // suspended: the owner uses the machine
}

// assignMsg hands one run of a unit to a supplier. Module, inputs and the
// checkpoint are sealed objects (docs/compute.md §3) under Key.
type assignMsg struct {
	Lease      []byte            `cbor:"1,keyasint"`
	Job        []byte            `cbor:"2,keyasint"`
	Unit       int               `cbor:"3,keyasint"`
	Key        []byte            `cbor:"4,keyasint"`
	Module     []byte            `cbor:"5,keyasint"`
	Inputs     map[string][]byte `cbor:"6,keyasint,omitempty"`
	Checkpoint []byte            `cbor:"7,keyasint,omitempty"`
	CkptSeq    int               `cbor:"8,keyasint,omitempty"`
	Args       []string          `cbor:"9,keyasint,omitempty"`
	Env        map[string]string `cbor:"10,keyasint,omitempty"`
	Memory     int64             `cbor:"11,keyasint,omitempty"`
	Deadline   int64             `cbor:"12,keyasint,omitempty"` // ns of run time
	Urgency    float64           `cbor:"13,keyasint,omitempty"`
	Heartbeat  int64             `cbor:"14,keyasint,omitempty"` // ns between heartbeats
	LeaseTTL   int64             `cbor:"15,keyasint,omitempty"` // ns without a heartbeat that ends the lease
}

// heartbeatMsg keeps a lease alive.
type heartbeatMsg struct {
	Lease     []byte  `cbor:"1,keyasint"`
	Progress  float64 `cbor:"2,keyasint,omitempty"`
	CPU       int64   `cbor:"3,keyasint,omitempty"`
	Suspended bool    `cbor:"4,keyasint,omitempty"`
}

// checkpointMsg ships a committed checkpoint: Files is a sealed object.
type checkpointMsg struct {
	Lease    []byte  `cbor:"1,keyasint"`
	Seq      int     `cbor:"2,keyasint"`
	Progress float64 `cbor:"3,keyasint,omitempty"`
	Files    []byte  `cbor:"4,keyasint"`
}

// resultMsg ends a run: Body is the sealed result object, or Fail names the
// failure kind (failInvalid…) with Reason in words.
type resultMsg struct {
	Lease  []byte `cbor:"1,keyasint"`
	Body   []byte `cbor:"2,keyasint,omitempty"`
	Fail   string `cbor:"3,keyasint,omitempty"`
	Reason string `cbor:"4,keyasint,omitempty"`
	CPU    int64  `cbor:"5,keyasint,omitempty"`
}

// cancelMsg tells a supplier to stop a lease.
type cancelMsg struct {
	Lease []byte `cbor:"1,keyasint"`
}

// replyMsg answers every request.
type replyMsg struct {
	Status   int       `cbor:"1,keyasint"`
	Message  string    `cbor:"2,keyasint,omitempty"`
	Capacity *Capacity `cbor:"3,keyasint,omitempty"`
	Receipt  *Receipt  `cbor:"4,keyasint,omitempty"` // to a result (receipt.go)
}

// Framing errors: the peer's fault.
var (
	errTooLarge  = errors.New("compute: message too large")
	errMalformed = errors.New("compute: malformed message")
)

var (
	wireEnc cbor.EncMode
	wireDec cbor.DecMode
)

func init() {
	var err error
	if wireEnc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	wireDec, err = cbor.DecOptions{
		MaxNestedLevels:  6,
		MaxArrayElements: 4096,
		MaxMapPairs:      4096,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// writeMsg writes one message: type:u8 len:uvarint CBOR[len].
func writeMsg(w io.Writer, t msgType, v any) error {
	b, err := wireEnc.Marshal(v)
	if err != nil {
		return fmt.Errorf("compute: encode %#x: %w", byte(t), err)
	}
	if len(b) > maxMessage {
		return fmt.Errorf("compute: encode %#x: %d bytes: %w", byte(t), len(b), errTooLarge)
	}
	hdr := binary.AppendUvarint([]byte{byte(t)}, uint64(len(b)))
	if _, err := w.Write(append(hdr, b...)); err != nil {
		return fmt.Errorf("compute: write: %w", err)
	}
	return nil
}

// readMsg reads one message's type and CBOR bytes.
func readMsg(r *bufio.Reader) (msgType, []byte, error) {
	tb, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: length: %v", errMalformed, err)
	}
	if n == 0 || n > maxMessage {
		return 0, nil, fmt.Errorf("%w: %d bytes", errTooLarge, n)
	}
	// Grow as the bytes arrive: a lying length allocates nothing up front.
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return 0, nil, fmt.Errorf("compute: read: %w", err)
	}
	if uint64(len(b)) != n {
		return 0, nil, fmt.Errorf("%w: truncated", errMalformed)
	}
	return msgType(tb), b, nil
}

// decodeMsg decodes a message body of type t into the matching struct.
func decodeMsg(t msgType, b []byte) (any, error) {
	var v any
	switch t {
	case typeCapacity:
		v = &struct{}{}
	case typeAssign:
		v = &assignMsg{}
	case typeHeartbeat:
		v = &heartbeatMsg{}
	case typeCheckpoint:
		v = &checkpointMsg{}
	case typeResult:
		v = &resultMsg{}
	case typeCancel:
		v = &cancelMsg{}
	default:
		if t&replyBit != 0 {
			v = &replyMsg{}
			break
		}
		return nil, fmt.Errorf("%w: type %#x", errMalformed, byte(t))
	}
	if err := wireDec.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if err := validate(v); err != nil {
		return nil, err
	}
	return v, nil
}

func validate(v any) error {
	lease := func(l []byte) error {
		if len(l) != leaseLen {
			return fmt.Errorf("%w: lease of %d bytes", errMalformed, len(l))
		}
		return nil
	}
	switch m := v.(type) {
	case *assignMsg:
		if len(m.Job) != jobIDLen || len(m.Key) != 32 || m.Unit < 0 || m.Memory < 0 || m.Deadline < 0 || m.CkptSeq < 0 {
			return fmt.Errorf("%w: assign fields", errMalformed)
		}
		return lease(m.Lease)
	case *heartbeatMsg:
		return lease(m.Lease)
	case *checkpointMsg:
		if m.Seq < 0 {
			return fmt.Errorf("%w: checkpoint seq", errMalformed)
		}
		return lease(m.Lease)
	case *resultMsg:
		return lease(m.Lease)
	case *cancelMsg:
		return lease(m.Lease)
	}
	return nil
}
