package net

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/audit"
)

// TestAuditShard audits an honest peer, a peer whose store flips a bit and
// a peer without the shard, over real libp2p hosts, with version 2 proofs
// (against the shard ID) and, as an older owner asks, version 1 (against
// the audit root).
func TestAuditShard(t *testing.T) {
	a, honest := servingPair(t, openShards(t, 8<<20))
	liar := startNode(t, loopTCP)
	liar.ServeShards(lyingStore{openShards(t, 8<<20)})
	connect(t, a, liar)
	ctx := ctxT(t, 20*time.Second)
	hp, lp := honest.Host().ID(), liar.Host().ID()

	const size = 1<<20 + 300 // 257 leaves, the last one short
	id, data := testShard(size, 9)
	root := audit.Root(data)
	for _, p := range []peer.ID{hp, lp} {
		if err := a.PutShard(ctx, p, id, data); err != nil {
			t.Fatal(err)
		}
	}
	leaves := []int{0, 128, 255, 256} // the liar flips a bit in leaf 128
	got, err := a.AuditShard(ctx, hp, id, leaves)
	if err != nil {
		t.Fatalf("AuditShard on the honest peer: %v", err)
	}
	if len(got) != 4 || got[3].Index != 256 || len(got[3].Data) != 300 {
		t.Fatalf("AuditShard returned %d leaves", len(got))
	}
	if err := audit.CheckV2(id, size, got); err != nil {
		t.Fatalf("honest peer's proofs: %v", err)
	}
	got, err = a.AuditShard(ctx, lp, id, leaves)
	if err != nil {
		t.Fatalf("AuditShard on the liar: %v", err)
	}
	if err := audit.CheckV2(id, size, got); !errors.Is(err, audit.ErrMismatch) {
		t.Fatalf("liar's proofs verify: %v, want ErrMismatch", err)
	}
	for p, want := range map[peer.ID]error{hp: nil, lp: audit.ErrMismatch} {
		got, err := a.auditVersion(ctx, p, id, leaves, audit.Version1)
		if err != nil {
			t.Fatalf("version 1 audit: %v", err)
		}
		if err := audit.Check(root, size, got); !errors.Is(err, want) {
			t.Fatalf("version 1 proofs of %s: %v, want %v", p, err, want)
		}
	}
	other, _ := testShard(4096, 1)
	if _, err := a.AuditShard(ctx, hp, other, []int{0}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("AuditShard of a shard not held = %v, want ErrNotFound", err)
	}
	if _, err := a.AuditShard(ctx, hp, id, []int{257}); !errors.Is(err, ErrRefused) {
		t.Fatalf("AuditShard past the end = %v, want ErrRefused (bad-request)", err)
	}
	if _, err := a.AuditShard(ctx, hp, id, make([]int, MaxAuditLeaves+1)); !errors.Is(err, ErrRefused) {
		t.Fatalf("AuditShard of %d leaves = %v, want ErrRefused", MaxAuditLeaves+1, err)
	}
	a.AuditFailed(lp)
	if !a.Distrusted(lp) || a.Distrusted(hp) || a.Usable(lp) {
		t.Fatal("AuditFailed did not make the liar distrusted and unusable")
	}
}

// TestAuditCost measures what an audit moves on the wire against the
// shard's size (docs/audit.md §2, "Cost").
func TestAuditCost(t *testing.T) {
	for _, size := range []int{256 << 10, 1 << 20, 4 << 20} {
		id, data := testShard(size, 2)
		leaves := []int{1, 7, 30, 60}
		msg, err := encodeRequest(request{typ: typeAudit, id: id, leaves: leaves, proofs: audit.Version2})
		if err != nil {
			t.Fatal(err)
		}
		_, proofs, err := audit.ProveAllV2(data, leaves)
		if err != nil {
			t.Fatal(err)
		}
		body, err := encodeAuditBody(data, leaves, proofs, audit.Version2)
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := encodeReply(nil, typeAudit|replyBit, wireReply{Status: StatusOK, Size: uint64(len(body))})
		if err != nil {
			t.Fatal(err)
		}
		wire := len(msg) + len(hdr) + len(body)
		t.Logf("audit of 4 leaves of a %d KiB shard: %d bytes on the wire (request %d, reply %d), %.2f%% of the shard",
			size>>10, wire, len(msg), len(hdr)+len(body), 100*float64(wire)/float64(size))
		if wire*10 > size {
			t.Errorf("audit costs %d bytes for a %d-byte shard, want under 10%%", wire, size)
		}
	}
}

func TestAuditRequestRoundTrip(t *testing.T) {
	id, _ := testShard(10, 1)
	for _, v := range []byte{audit.Version1, audit.Version2} {
		rq := request{typ: typeAudit, id: id, leaves: []int{0, maxAuditIndex - 1, 5}, proofs: v}
		b, err := encodeRequest(rq)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readAuditRequest(b)
		if err != nil || !reflect.DeepEqual(got, rq) {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
	}
	for name, w := range map[string]wireRequest{
		"no leaves":   {ID: id[:]},
		"too many":    {ID: id[:], Leaves: make([]uint64, MaxAuditLeaves+1)},
		"duplicate":   {ID: id[:], Leaves: []uint64{3, 3}},
		"index large": {ID: id[:], Leaves: []uint64{maxAuditIndex}},
		"short id":    {ID: id[:5], Leaves: []uint64{1}},
		"version 3":   {ID: id[:], Leaves: []uint64{1}, Proofs: 3},
	} {
		if _, err := readAuditRequest(msgOf(t, typeAudit, &w)); !errors.Is(err, errMalformed) {
			t.Errorf("%s: %v, want errMalformed", name, err)
		}
	}
}

func readAuditRequest(b []byte) (request, error) {
	typ, h, err := readMessage(bufio.NewReader(bytes.NewReader(b)), func(t msgType) bool { return t == typeAudit })
	if err != nil {
		return request{}, err
	}
	return decodeRequest(typ, h)
}

// FuzzAuditRequest feeds the server's decoder AUDIT requests: one it
// accepts re-encodes to one that decodes the same.
func FuzzAuditRequest(f *testing.F) {
	id, _ := testShard(10, 1)
	for k, leaves := range [][]int{{0}, {1, 2, 3, 4}, {maxAuditIndex - 1}} {
		b, _ := encodeRequest(request{typ: typeAudit, id: id, leaves: leaves, proofs: byte(1 + k%2)})
		f.Add(b)
	}
	f.Add([]byte{byte(typeAudit), 1, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rq, err := readAuditRequest(b)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errTooLarge) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if len(rq.leaves) == 0 || len(rq.leaves) > MaxAuditLeaves {
			t.Fatalf("accepted %d leaves", len(rq.leaves))
		}
		again, err := encodeRequest(rq)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		rq2, err := readAuditRequest(again)
		if err != nil || !reflect.DeepEqual(rq, rq2) {
			t.Fatalf("round trip: %+v, %v; want %+v", rq2, err, rq)
		}
	})
}

// FuzzAuditBody feeds the client's decoder of AUDIT reply bodies: what it
// accepts re-encodes to the same bytes.
func FuzzAuditBody(f *testing.F) {
	_, data := testShard(5*audit.LeafSize-100, 4)
	for _, leaves := range [][]int{{0}, {4}, {0, 1, 2, 3, 4}} {
		_, proofs, _ := audit.ProveAll(data, leaves)
		b, _ := encodeAuditBody(data, leaves, proofs, audit.Version1)
		f.Add(b, uint8(len(leaves)))
		_, proofs, _ = audit.ProveAllV2(data, leaves)
		b, _ = encodeAuditBody(data, leaves, proofs, audit.Version2)
		f.Add(b, uint8(len(leaves)))
	}
	f.Add([]byte{0, 1, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, n uint8) {
		leaves := make([]int, int(n)%MaxAuditLeaves+1)
		for i := range leaves {
			leaves[i] = i
		}
		got, err := decodeAuditBody(b, leaves)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		var again []byte
		for _, l := range got {
			if len(l.Data) > audit.LeafSize {
				t.Fatalf("accepted a %d-byte leaf", len(l.Data))
			}
			again = appendUvarintLeaf(again, l.Data)
			again, _ = l.Proof.AppendVersion(again, l.Version)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, want %x", again, b)
		}
	})
}

func appendUvarintLeaf(b, leaf []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(leaf))), leaf...)
}
