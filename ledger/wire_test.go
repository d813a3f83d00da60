package ledger

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	pnet "github.com/peerdrive/peerdrive/net"
)

func frame(t byte, h []byte) []byte {
	b := []byte{t}
	n := len(h)
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(append(b, byte(n)), h...)
}

func TestWireRoundTrip(t *testing.T) {
	p, q := newPeer(t), newPeer(t)
	msgs := []struct {
		typ byte
		m   message
	}{
		{typeReport, message{Entries: []ReportEntry{{Peer: []byte(p), HeldFor: 5, Gives: 7, AuditsPassed: 1, CPUGivenMs: 9}, {Peer: []byte(q)}}}},
		{typeQuery, message{Peers: [][]byte{[]byte(p), []byte(q)}}},
		{typeReport | replyBit, message{Status: statusOK}},
		{typeQuery | replyBit, message{Status: statusOK, Totals: []Totals{{PeerBytes: []byte(p), Taken: 3, Given: 4, Reporters: 2}}}},
	}
	for _, tt := range msgs {
		var buf bytes.Buffer
		if err := writeMessage(&buf, tt.typ, &tt.m); err != nil {
			t.Fatal(err)
		}
		got, err := readMessage(bufio.NewReader(&buf), tt.typ)
		if err != nil {
			t.Fatalf("type 0x%02x: %v", tt.typ, err)
		}
		if len(got.Entries) != len(tt.m.Entries) || len(got.Peers) != len(tt.m.Peers) || len(got.Totals) != len(tt.m.Totals) {
			t.Errorf("type 0x%02x: got %+v, want %+v", tt.typ, got, tt.m)
		}
		for _, tot := range got.Totals {
			if tot.Peer != p.String() {
				t.Errorf("totals peer %q, want %s", tot.Peer, p)
			}
		}
	}
}

func TestWireMalformed(t *testing.T) {
	p := newPeer(t)
	enc := func(m any) []byte {
		b, err := encMode.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string]struct {
		typ byte
		raw []byte
	}{
		"unknown key":        {typeQuery, enc(map[uint64]any{4: [][]byte{[]byte(p)}, 9: 1})},
		"bad peer ID":        {typeQuery, enc(map[uint64]any{4: [][]byte{{1, 2, 3}}})},
		"empty query":        {typeQuery, enc(map[uint64]any{4: [][]byte{}})},
		"reply no status":    {typeReport | replyBit, enc(map[uint64]any{2: "hi"})},
		"report with status": {typeReport, enc(map[uint64]any{1: 1})},
		"negative count":     {typeReport, enc(map[uint64]any{3: []any{map[uint64]any{1: []byte(p), 2: -1}}})},
		"trailing bytes":     {typeReport | replyBit, append(enc(map[uint64]any{1: 1}), 0)},
		"tag":                {typeReport | replyBit, []byte{0xa1, 0x01, 0xc1, 0x01}},
		"indefinite map":     {typeReport | replyBit, []byte{0xbf, 0x01, 0x01, 0xff}},
		"duplicate key":      {typeReport | replyBit, []byte{0xa2, 0x01, 0x01, 0x01, 0x01}},
	}
	for name, c := range cases {
		if _, err := readMessage(bufio.NewReader(bytes.NewReader(frame(c.typ, c.raw))), c.typ); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// Framing: wrong type, zero length, over the limit, non-minimal length.
	for name, b := range map[string][]byte{
		"wrong type":  frame(typeQuery, enc(map[uint64]any{1: 1})),
		"zero length": {typeReport | replyBit, 0},
		"over limit":  {typeReport | replyBit, 0x81, 0x04},
		"non-minimal": {typeReport | replyBit, 0x81, 0x00},
		"four bytes":  {typeReport, 0x80, 0x80, 0x80, 0x01},
	} {
		if _, err := readMessage(bufio.NewReader(bytes.NewReader(b)), typeReport|replyBit); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	p := []byte(peer.ID("\x00\x24\x08\x01\x12\x20" + string(make([]byte, 32))))
	for _, typ := range []byte{typeReport, typeQuery, typeReport | replyBit, typeQuery | replyBit} {
		for _, m := range []message{
			{Entries: []ReportEntry{{Peer: p, HeldFor: 1, Gives: 2}}},
			{Peers: [][]byte{p}},
			{Status: 1, Totals: []Totals{{PeerBytes: p, Taken: 1}}},
			{Status: 5, Message: "bad"},
		} {
			var buf bytes.Buffer
			if writeMessage(&buf, typ, &m) == nil {
				f.Add(buf.Bytes())
			}
		}
	}
	f.Add([]byte{0x81, 0x01, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		m, err := readMessage(bufio.NewReader(bytes.NewReader(b)), b[0])
		if err != nil {
			return
		}
		// What decodes encodes again within the type's limit, and decodes the same.
		var buf bytes.Buffer
		if err := writeMessage(&buf, b[0], m); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := readMessage(bufio.NewReader(&buf), b[0])
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(m2.Entries) != len(m.Entries) || len(m2.Peers) != len(m.Peers) || len(m2.Totals) != len(m.Totals) || m2.Status != m.Status {
			t.Fatalf("round trip changed the message: %+v vs %+v", m, m2)
		}
	})
}

// TestCoordinator runs a coordinator and two reporting nodes on loopback: the totals of a
// peer are the sums of what the others say of it, and admission consults them.
func TestCoordinator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := func() *pnet.Node {
		k, err := pnet.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		n, err := pnet.Start(ctx, pnet.Config{Key: k, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	cn, a, b := start(), start(), start()
	db := openDB(t, t.TempDir())
	defer db.Close()
	coord, err := OpenCoordinator(db, quiet)
	if err != nil {
		t.Fatal(err)
	}
	coord.Serve(cn.Host())
	for _, n := range []*pnet.Node{a, b} {
		if err := n.Host().Connect(ctx, peer.AddrInfo{ID: cn.Host().ID(), Addrs: cn.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	freeloader := newPeer(t)
	for i, n := range []*pnet.Node{a, b} {
		ldb := openDB(t, t.TempDir())
		defer ldb.Close()
		l := openLedger(t, ldb, 4<<20)
		defer l.Close()
		// Each holds 3 MiB for the freeloader: below its own allowance.
		l.SetHeldFor(map[peer.ID]int64{freeloader: 3 << 20, b.Host().ID(): int64(i) << 20})
		if err := l.Report(ctx, n.Host(), cn.Host().ID()); err != nil {
			t.Fatalf("report: %v", err)
		}
	}
	ts, err := Query(ctx, a.Host(), cn.Host().ID(), []peer.ID{freeloader, newPeer(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Taken != 6<<20 || ts[0].Reporters != 2 || ts[1].Reporters != 0 {
		t.Fatalf("totals %+v, want the freeloader taking 6 MiB from 2 reporters and an unknown peer", ts)
	}
	if all := coord.All(); len(all) != 3 {
		t.Errorf("coordinator lists %d peers, want 3 (the 2 reporters and the freeloader)", len(all))
	}
	// A third node, asked by the freeloader, refuses it: the network is owed 6 MiB.
	l := openLedger(t, db, 4<<20)
	defer l.Close()
	var g GlobalCache
	g.Set(ts)
	l.SetGlobal(&g)
	if err := l.AdmitPut(freeloader, 1<<20); !errors.Is(err, ErrGiveBackFirst) {
		t.Errorf("admitted a peer the network already holds 6 MiB for with nothing back: %v", err)
	}

	// Reports survive a restart of the coordinator.
	coord2, err := OpenCoordinator(db, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := coord2.Totals(freeloader); !ok || tt.Taken != 6<<20 {
		t.Errorf("after reopen totals %+v, %v", tt, ok)
	}
}
