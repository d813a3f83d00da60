package compute

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func roundTrip(t testing.TB, typ msgType, v any) any {
	var buf bytes.Buffer
	if err := writeMsg(&buf, typ, v); err != nil {
		t.Fatal(err)
	}
	gt, b, err := readMsg(bufio.NewReader(&buf))
	if err != nil || gt != typ {
		t.Fatalf("read: %v %v", gt, err)
	}
	got, err := decodeMsg(gt, b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestWireRoundTrip(t *testing.T) {
	lease := bytes.Repeat([]byte{1}, leaseLen)
	a := &assignMsg{Lease: lease, Job: bytes.Repeat([]byte{2}, jobIDLen), Unit: 3, Key: bytes.Repeat([]byte{3}, 32),
		Module: []byte("wasm"), Inputs: map[string][]byte{"a": {1}}, Args: []string{"x"}, Env: map[string]string{"K": "V"},
		Memory: 1 << 20, Deadline: 5e9, Urgency: 2, Heartbeat: 1e9, LeaseTTL: 3e9, Checkpoint: []byte{9}, CkptSeq: 4}
	if got := roundTrip(t, typeAssign, a); !reflect.DeepEqual(got, a) {
		t.Errorf("assign: got %+v", got)
	}
	r := &replyMsg{Status: statusOK, Capacity: &Capacity{Slots: 2, Free: 1, Memory: 1 << 30, WindowLeft: 5, Score: 300, Uptime: 7}}
	if got := roundTrip(t, typeCapacity|replyBit, r); !reflect.DeepEqual(got, r) {
		t.Errorf("reply: got %+v", got)
	}
	res := &resultMsg{Lease: lease, Fail: failMemory, Reason: "over 64 MiB", CPU: 12}
	if got := roundTrip(t, typeResult, res); !reflect.DeepEqual(got, res) {
		t.Errorf("result: got %+v", got)
	}
}

func TestWireRefuses(t *testing.T) {
	for name, raw := range map[string][]byte{
		"unknown type":  {0x7f, 1, 0xa0},
		"huge length":   {0x03, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"zero length":   {0x03, 0},
		"truncated":     {0x03, 10, 0xa0},
		"short lease":   append([]byte{0x03, 4}, 0xa1, 0x01, 0x41, 0x00),
		"not cbor":      {0x06, 1, 0xff},
		"trailing data": {0x01, 2, 0xa0, 0xa0},
	} {
		typ, b, err := readMsg(bufio.NewReader(bytes.NewReader(raw)))
		if err == nil {
			_, err = decodeMsg(typ, b)
		}
		if !errors.Is(err, errMalformed) && !errors.Is(err, errTooLarge) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// FuzzWire feeds arbitrary bytes to the framing and every decoder; it must
// never panic, and whatever decodes must re-encode and decode the same.
func FuzzWire(f *testing.F) {
	lease := bytes.Repeat([]byte{1}, leaseLen)
	for typ, v := range map[msgType]any{
		typeAssign:              &assignMsg{Lease: lease, Job: make([]byte, jobIDLen), Key: make([]byte, 32), Module: []byte{0, 'a', 's', 'm'}},
		typeHeartbeat:           &heartbeatMsg{Lease: lease, Progress: 0.5},
		typeCheckpoint:          &checkpointMsg{Lease: lease, Seq: 3, Files: []byte{1, 2}},
		typeResult:              &resultMsg{Lease: lease, Body: []byte{1}},
		typeCancel:              &cancelMsg{Lease: lease},
		typeCapacity:            &struct{}{},
		typeCapacity | replyBit: &replyMsg{Capacity: &Capacity{Slots: 1}},
	} {
		var buf bytes.Buffer
		if err := writeMsg(&buf, typ, v); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		typ, b, err := readMsg(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		v, err := decodeMsg(typ, b)
		if err != nil {
			return
		}
		again := roundTrip(t, typ, v)
		if !reflect.DeepEqual(again, v) {
			t.Fatalf("re-decoded %+v, want %+v", again, v)
		}
	})
}

func TestReceipt(t *testing.T) {
	priv, _, err := lcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := peer.IDFromPrivateKey(priv)
	otherPriv, _, _ := lcrypto.GenerateEd25519Key(nil)
	other, _ := peer.IDFromPrivateKey(otherPriv)
	sup := peer.ID("supplier")
	lease := []byte{1, 2, 3}
	r, err := signReceipt(priv, req, sup, lease, 3*time.Second, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(req, sup, lease); err != nil {
		t.Fatalf("valid receipt: %v", err)
	}
	// Through the wire, as a reply.
	got := roundTrip(t, typeResult|replyBit, &replyMsg{Receipt: r})
	if err := got.(*replyMsg).Receipt.Verify(req, sup, lease); err != nil {
		t.Fatalf("after the wire: %v", err)
	}
	forged, _ := signReceipt(otherPriv, req, sup, lease, time.Second, time.Unix(1, 0)) // signed by another key
	more := *r
	more.CPU *= 10
	for name, tc := range map[string]struct {
		r                   *Receipt
		requester, supplier peer.ID
		lease               []byte
	}{
		"none":            {nil, req, sup, lease},
		"inflated CPU":    {&more, req, sup, lease},
		"forged":          {forged, req, sup, lease},
		"other requester": {r, other, sup, lease},
		"other supplier":  {r, req, other, lease},
		"other lease":     {r, req, sup, []byte{9}},
	} {
		if err := tc.r.Verify(tc.requester, tc.supplier, tc.lease); !errors.Is(err, ErrBadReceipt) {
			t.Errorf("%s: %v, want ErrBadReceipt", name, err)
		}
	}
}
