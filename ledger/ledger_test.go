package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/store"
)

// quiet drops the warnings the tests provoke on purpose.
var quiet = slog.New(slog.DiscardHandler)

func newPeer(t testing.TB) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func openDB(t testing.TB, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func openLedger(t testing.TB, db *store.DB, allowance int64) *Ledger {
	t.Helper()
	l, err := Open(db, Options{Allowance: allowance, FlushEvery: time.Hour, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAdmitPut(t *testing.T) {
	const allow = 4 << 20
	tests := []struct {
		name            string
		heldFor, heldBy int64
		probes          int64
		size            int64
		global          *Totals
		ok              bool
	}{
		{name: "newcomer within allowance", size: 1 << 20, ok: true},
		{name: "shard larger than the allowance", size: 8 << 20, ok: true},
		{name: "newcomer crossing the allowance", heldFor: 3 << 20, size: 2 << 20, ok: true},
		{name: "newcomer at the allowance", heldFor: 4 << 20, size: 1},
		{name: "balanced by data", heldFor: 100 << 20, heldBy: 100 << 20, size: 2 << 20, ok: true},
		{name: "balanced by probes", heldFor: 100 << 20, probes: 98 << 20, size: 2 << 20, ok: true},
		{name: "takes more than gives plus allowance", heldFor: 100 << 20, heldBy: 96 << 20, size: 1 << 20},
		{name: "locally fine, globally in debt", size: 1 << 20, global: &Totals{Taken: 50 << 20, Given: 0, Reporters: 5}},
		{name: "locally fine, globally balanced", size: 1 << 20, global: &Totals{Taken: 50 << 20, Given: 50 << 20, Reporters: 5}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t, t.TempDir())
			defer db.Close()
			l := openLedger(t, db, allow)
			defer l.Close()
			p := newPeer(t)
			l.SetHeldFor(map[peer.ID]int64{p: tt.heldFor})
			l.SetHeldBy(map[peer.ID]int64{p: tt.heldBy})
			if tt.probes > 0 {
				l.mu.Lock()
				l.addProbeLocked(p, peerdrive.ShardID{1}, tt.probes)
				l.mu.Unlock()
			}
			if tt.global != nil {
				var g GlobalCache
				tt.global.PeerBytes = []byte(p)
				g.Set([]Totals{*tt.global})
				l.SetGlobal(&g)
			}
			err := l.AdmitPut(p, tt.size)
			if tt.ok != (err == nil) {
				t.Fatalf("AdmitPut = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrGiveBackFirst) {
				t.Fatalf("refusal %v is not ErrGiveBackFirst", err)
			}
			if err == nil && l.Get(p).HeldFor != tt.heldFor+tt.size {
				t.Errorf("held for %d after admitting, want %d", l.Get(p).HeldFor, tt.heldFor+tt.size)
			}
		})
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	l := openLedger(t, db, 1<<20)
	p, q := newPeer(t), newPeer(t)
	l.AuditResult(p, true)
	l.AuditResult(p, true)
	l.AuditResult(p, false)
	l.ComputeGiven(p, 3*time.Second)
	l.ComputeTaken(p, time.Second)
	l.ComputeTaken(q, 2*time.Second)
	l.SetHeldFor(map[peer.ID]int64{p: 1000, q: 7})
	l.SetHeldBy(map[peer.ID]int64{p: 500})
	l.Seen(q)
	nw := newFakeNet()
	l.SetHeldFor(map[peer.ID]int64{p: 1000, q: 1 << 20})
	if placed := l.Probe(context.Background(), nw, []peer.ID{q}); placed != 1<<20 {
		t.Fatalf("placed %d bytes of probes, want 1 MiB", placed)
	}
	want := map[peer.ID]Entry{p: l.Get(p), q: l.Get(q)}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openDB(t, dir)
	defer db.Close()
	l = openLedger(t, db, 0)
	defer l.Close()
	for id, w := range want {
		got := l.Get(id)
		if !got.LastSeen.Equal(w.LastSeen) {
			t.Errorf("last seen %v after reopen, want %v", got.LastSeen, w.LastSeen)
		}
		got.LastSeen, w.LastSeen = time.Time{}, time.Time{}
		if got != w {
			t.Errorf("after reopen %+v, want %+v", got, w)
		}
	}
	if b := l.ComputeBalance(p); b != 2*time.Second {
		t.Errorf("compute balance %v, want 2s", b)
	}
	if got := l.Get(q).Probes; got != 1<<20 {
		t.Errorf("probe bytes %d after reopen, want 1 MiB", got)
	}
	if rows := l.Rows(); len(rows) != 2 || rows[0].Peer > rows[1].Peer {
		t.Errorf("rows %+v, want two, sorted", rows)
	}
}

// fakeNet is a shard network of peers that store everything, nothing, or lose what they
// store.
type fakeNet struct {
	mu      sync.Mutex
	held    map[peer.ID]map[peerdrive.ShardID][]byte
	refuse  map[peer.ID]bool
	deletes int
}

func newFakeNet() *fakeNet {
	return &fakeNet{held: map[peer.ID]map[peerdrive.ShardID][]byte{}, refuse: map[peer.ID]bool{}}
}

func (f *fakeNet) PutShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse[p] {
		return &pnet.StatusError{Peer: p, Status: pnet.StatusGiveBack}
	}
	if f.held[p] == nil {
		f.held[p] = map[peerdrive.ShardID][]byte{}
	}
	f.held[p][id] = data
	return nil
}

func (f *fakeNet) GetShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.held[p][id]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("get: %w", pnet.ErrNotFound)
}

func (f *fakeNet) DeleteShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	if _, ok := f.held[p][id]; !ok {
		return fmt.Errorf("delete: %w", pnet.ErrNotFound)
	}
	delete(f.held[p], id)
	return nil
}

func (f *fakeNet) lose(p peer.ID) {
	f.mu.Lock()
	clear(f.held[p])
	f.mu.Unlock()
}

func TestProbes(t *testing.T) {
	const allow = 4 << 20
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLedger(t, db, allow)
	defer l.Close()
	nw := newFakeNet()
	ctx := context.Background()
	honest, free, liar := newPeer(t), newPeer(t), newPeer(t)
	nw.refuse[free] = true
	peers := []peer.ID{honest, free, liar}
	held := map[peer.ID]int64{honest: 20 << 20, free: 20 << 20, liar: 20 << 20}
	l.SetHeldFor(held)
	for i := 0; i < 5; i++ {
		l.Probe(ctx, nw, peers)
	}
	if got := l.Get(honest).Probes; got != 20<<20 {
		t.Errorf("honest peer holds %d bytes of probes, want 20 MiB", got)
	}
	if got := l.Get(free).Probes; got != 0 {
		t.Errorf("freeloader credited with %d bytes of probes", got)
	}
	if err := l.AdmitPut(free, 1<<20); !errors.Is(err, ErrGiveBackFirst) {
		t.Errorf("freeloader admitted past the allowance: %v", err)
	}
	if err := l.AdmitPut(honest, 1<<20); err != nil {
		t.Errorf("honest peer refused: %v", err)
	}

	// The liar drops every probe: audits catch it and its credit goes.
	nw.lose(liar)
	for i := 0; i < 10 && l.Get(liar).Probes > 0; i++ {
		l.Audit(ctx, nw, []peer.ID{liar})
	}
	if e := l.Get(liar); e.Probes != 0 || e.AuditsFailed == 0 {
		t.Errorf("liar after audits: %+v, want no probe credit and failed audits", e)
	}
	l.Audit(ctx, nw, []peer.ID{honest})
	if e := l.Get(honest); e.AuditsPassed != 1 || e.AuditsFailed != 0 {
		t.Errorf("honest after an audit: %+v, want one passed", e)
	}

	// The honest peer's own data comes to hold more than it takes: probes go.
	held[honest] = 1 << 20
	l.SetHeldFor(held)
	l.SetHeldBy(map[peer.ID]int64{honest: 1 << 20})
	for i := 0; i < 10; i++ {
		l.Probe(ctx, nw, peers)
	}
	if got := l.Get(honest).Probes; got > allow {
		t.Errorf("honest peer still holds %d bytes of probes though it gives more than it takes", got)
	}
}

// TestProbeDelay: a deficit below the allowance is not probed at once (a burst costs the
// peer nothing while it lasts); one at the allowance is.
func TestProbeDelay(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLedger(t, db, 8<<20)
	defer l.Close()
	nw := newFakeNet()
	p, q := newPeer(t), newPeer(t)
	l.SetHeldFor(map[peer.ID]int64{p: 5 << 20, q: 8 << 20})
	l.Probe(context.Background(), nw, []peer.ID{p, q})
	if got := l.Get(p).Probes; got != 0 {
		t.Errorf("probed %d bytes at once for a deficit below the allowance", got)
	}
	if got := l.Get(q).Probes; got != 8<<20 {
		t.Errorf("probed %d bytes for a deficit at the allowance, want 8 MiB", got)
	}
}

// TestAdmitUnknownToCoordinator: with a coordinator's view, a peer it has not been asked
// about is told to retry (not refused) and queued for asking; once the answer is in, the
// rules apply. The coordinator's own view knows every peer.
func TestAdmitUnknownToCoordinator(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := openLedger(t, db, 4<<20)
	defer l.Close()
	var g GlobalCache
	l.SetGlobal(&g)
	p := newPeer(t)
	err := l.AdmitPut(p, 1)
	if !errors.Is(err, ErrAskLater) || !errors.Is(err, pnet.ErrAdmitLater) || errors.Is(err, ErrGiveBackFirst) {
		t.Fatalf("unknown peer: %v, want ErrAskLater", err)
	}
	if ask := l.Unknown(); len(ask) != 1 || ask[0] != p {
		t.Fatalf("Unknown() = %v, want [%s]", ask, p)
	}
	if len(l.Unknown()) != 0 {
		t.Errorf("Unknown() does not forget")
	}
	g.Set([]Totals{{PeerBytes: []byte(p)}}) // asked: nobody reports it
	if err := l.AdmitPut(p, 1); err != nil {
		t.Errorf("a peer the network knows nothing against: %v", err)
	}

	c, err := OpenCoordinator(db, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Global().Totals(newPeer(t)); !ok {
		t.Errorf("the coordinator's own view does not know a new peer")
	}
}
