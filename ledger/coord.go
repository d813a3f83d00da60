package ledger

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// The coordinator (docs/ledger.md §5): the ledger of record of a private
// network. Every node that knows it reports its accounts; the coordinator
// keeps each node's latest report and sums, per peer, what the others say
// it takes and gives.

// Timing of the ledger protocol.
const (
	streamTimeout = 10 * time.Second
	// ReportTTL is how long a node's report counts after it was sent.
	ReportTTL = 24 * time.Hour
)

// report is a node's latest report as the coordinator keeps it.
type report struct {
	Time    int64         `cbor:"1,keyasint"` // Unix nanoseconds, when received
	Entries []ReportEntry `cbor:"2,keyasint"`
}

// Coordinator aggregates the reports of a network's nodes.
type Coordinator struct {
	db  *store.DB
	log *slog.Logger

	mu      sync.Mutex
	reports map[peer.ID]report
}

// OpenCoordinator loads the reports kept in db.
func OpenCoordinator(db *store.DB, log *slog.Logger) (*Coordinator, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Coordinator{db: db, log: log, reports: map[peer.ID]report{}}
	err := db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tag, kindReport}, nil, true, func(k, v []byte) (bool, error) {
			p, err := peer.IDFromBytes(k[2:])
			if err != nil {
				return false, fmt.Errorf("ledger: report key %x: %w", k, store.ErrCorrupt)
			}
			var r report
			if err := peerdrive.Unmarshal(v, &r); err != nil {
				return false, fmt.Errorf("ledger: report of %s: %w: %v", p, store.ErrCorrupt, err)
			}
			c.reports[p] = r
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Serve answers the ledger protocol on h.
func (c *Coordinator) Serve(h host.Host) { h.SetStreamHandler(Protocol, c.handle) }

func (c *Coordinator) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(streamTimeout))
	from := s.Conn().RemotePeer()
	br := bufio.NewReaderSize(s, 4096)
	t, err := br.Peek(1)
	if err != nil {
		s.Reset()
		return
	}
	typ := t[0]
	if typ != typeReport && typ != typeQuery {
		s.Reset()
		return
	}
	m, err := readMessage(br, typ)
	if err != nil {
		c.log.Debug("ledger request refused", "peer", from, "err", err)
		_ = writeMessage(s, typ|replyBit, &message{Status: statusBadRequest, Message: clip(err.Error())})
		return
	}
	switch typ {
	case typeReport:
		if err := c.Record(from, m.Entries); err != nil {
			c.log.Warn("ledger report not kept", "peer", from, "err", err)
			_ = writeMessage(s, typ|replyBit, &message{Status: statusInternal, Message: "internal error"})
			return
		}
		_ = writeMessage(s, typ|replyBit, &message{Status: statusOK})
	case typeQuery:
		out := make([]Totals, 0, len(m.Peers))
		for _, b := range m.Peers {
			p, _ := peer.IDFromBytes(b)
			tt, _ := c.Totals(p)
			out = append(out, tt)
		}
		_ = writeMessage(s, typ|replyBit, &message{Status: statusOK, Totals: out})
	}
}

func clip(s string) string {
	if len(s) > maxMessage {
		return s[:maxMessage]
	}
	return s
}

// Record keeps entries as from's latest report, durably.
func (c *Coordinator) Record(from peer.ID, entries []ReportEntry) error {
	r := report{Time: time.Now().UnixNano(), Entries: entries}
	v, err := peerdrive.Marshal(&r)
	if err != nil {
		return err
	}
	err = c.db.Update(int64(len(v)), func(tx *store.Txn) error {
		return tx.Set(append([]byte{tag, kindReport}, from...), v)
	})
	if err != nil {
		return fmt.Errorf("ledger: keep report: %w", err)
	}
	c.mu.Lock()
	c.reports[from] = r
	c.mu.Unlock()
	return nil
}

// Totals sums what the nodes other than p report about p; ok is false if
// none does.
func (c *Coordinator) Totals(p peer.ID) (Totals, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := Totals{Peer: p.String(), PeerBytes: []byte(p)}
	cutoff := time.Now().Add(-ReportTTL).UnixNano()
	for from, r := range c.reports {
		if from == p || r.Time < cutoff {
			continue
		}
		for _, e := range r.Entries {
			if peer.ID(e.Peer) != p {
				continue
			}
			t.Taken += int64(e.HeldFor)
			t.Given += int64(e.Gives)
			t.AuditsPassed += e.AuditsPassed
			t.AuditsFailed += e.AuditsFailed
			t.Reporters++
		}
	}
	return t, t.Reporters > 0
}

// All lists the totals of every peer some node reports about, and of every
// reporting node, sorted by peer.
func (c *Coordinator) All() []Totals {
	c.mu.Lock()
	seen := map[peer.ID]bool{}
	for from, r := range c.reports {
		seen[from] = true
		for _, e := range r.Entries {
			seen[peer.ID(e.Peer)] = true
		}
	}
	c.mu.Unlock()
	ids := make([]peer.ID, 0, len(seen))
	for p := range seen {
		ids = append(ids, p)
	}
	slices.Sort(ids)
	out := make([]Totals, 0, len(ids))
	for _, p := range ids {
		t, _ := c.Totals(p)
		out = append(out, t)
	}
	return out
}

// Entries is the ledger as a report to a coordinator.
func (l *Ledger) Entries() []ReportEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ReportEntry, 0, len(l.peers))
	for p, e := range l.peers {
		out = append(out, ReportEntry{
			Peer: []byte(p), HeldFor: uint64(max(e.HeldFor, 0)), Gives: uint64(max(e.Gives(), 0)),
			AuditsPassed: e.AuditsPassed, AuditsFailed: e.AuditsFailed,
			CPUGivenMs: uint64(max(e.CPUGiven.Milliseconds(), 0)), CPUTakenMs: uint64(max(e.CPUTaken.Milliseconds(), 0)),
		})
	}
	slices.SortFunc(out, func(a, b ReportEntry) int { return compareBytes(a.Peer, b.Peer) })
	if len(out) > MaxReportEntries {
		out = out[:MaxReportEntries]
	}
	return out
}

func compareBytes(a, b []byte) int {
	switch {
	case string(a) < string(b):
		return -1
	case string(a) > string(b):
		return 1
	}
	return 0
}

// call sends one request to the coordinator and reads its reply.
func call(ctx context.Context, h host.Host, coord peer.ID, t byte, m *message) (*message, error) {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, coord, Protocol)
	if err != nil {
		return nil, fmt.Errorf("ledger: coordinator %s: %w", coord, err)
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	if err := writeMessage(s, t, m); err != nil {
		s.Reset()
		return nil, fmt.Errorf("ledger: coordinator %s: %w", coord, err)
	}
	_ = s.CloseWrite()
	r, err := readMessage(bufio.NewReader(s), t|replyBit)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("ledger: coordinator %s: %w", coord, err)
	}
	if r.Status != statusOK {
		return nil, fmt.Errorf("ledger: coordinator %s refused: status %d: %q", coord, r.Status, r.Message)
	}
	return r, nil
}

// Report sends l's accounts to the coordinator.
func (l *Ledger) Report(ctx context.Context, h host.Host, coord peer.ID) error {
	_, err := call(ctx, h, coord, typeReport, &message{Entries: l.Entries()})
	return err
}

// Query asks the coordinator for the totals of peers, MaxQueryPeers at a
// time.
func Query(ctx context.Context, h host.Host, coord peer.ID, peers []peer.ID) ([]Totals, error) {
	var out []Totals
	for len(peers) > 0 {
		part := peers[:min(len(peers), MaxQueryPeers)]
		peers = peers[len(part):]
		m := &message{Peers: make([][]byte, len(part))}
		for i, p := range part {
			m.Peers[i] = []byte(p)
		}
		r, err := call(ctx, h, coord, typeQuery, m)
		if err != nil {
			return out, err
		}
		out = append(out, r.Totals...)
	}
	return out, nil
}

// Global returns the coordinator's own view as a Global: it knows every
// peer (one nobody reports takes and gives nothing).
func (c *Coordinator) Global() Global { return coordGlobal{c} }

type coordGlobal struct{ c *Coordinator }

func (g coordGlobal) Totals(p peer.ID) (Totals, bool) {
	t, _ := g.c.Totals(p)
	return t, true
}

// GlobalCache is a Global filled from a coordinator's answers.
type GlobalCache struct {
	mu sync.Mutex
	m  map[peer.ID]Totals
}

// Set records the coordinator's answers.
func (g *GlobalCache) Set(ts []Totals) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[peer.ID]Totals{}
	}
	for _, t := range ts {
		g.m[peer.ID(t.PeerBytes)] = t // Reporters 0: asked, nobody reports it
	}
}

// Totals implements Global.
func (g *GlobalCache) Totals(p peer.ID) (Totals, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.m[p]
	return t, ok
}
