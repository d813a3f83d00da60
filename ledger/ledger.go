// Package ledger keeps, per remote peer, what this node gives it and what
// it takes (storage held both ways, audits, compute), and decides on that
// account whether to store more for it (docs/ledger.md).
package ledger

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/store"
)

// DefaultAllowance is what a peer may store with this node before it gives
// anything back: enough for a newcomer's first writes while the probes that
// measure what it gives (docs/ledger.md §3) are placed. At 64 MiB a first
// 256 MiB over six peers with 4+2 (64 MiB and a few bytes each) was refused
// at its last segments and waited out the uploader's back-off.
const DefaultAllowance = 256 << 20

// ErrGiveBackFirst is the admission refusal: the peer takes more than it
// gives back.
var ErrGiveBackFirst = errors.New("give back first")

// ErrAskLater is admission's answer to a peer the coordinator has not yet
// been asked about: retry in a moment. It matches net.ErrAdmitLater.
var ErrAskLater = fmt.Errorf("try again: %w", pnet.ErrAdmitLater)

// Key layout under the ledger's tag (docs/ledger.md §2).
const (
	tag         = 'B'
	kindAccount = 0x01 // 'B' 0x01 || peer ID -> account (CBOR)
	kindProbe   = 0x02 // 'B' 0x02 || shard ID || peer ID -> probe (CBOR)
	kindReport  = 0x03 // 'B' 0x03 || reporter peer ID -> report (CBOR, wire.go), coordinator only
)

// Entry is the account of one remote peer.
type Entry struct {
	// HeldFor is the bytes of shards this node holds for the peer (what it
	// takes from us), probes included.
	HeldFor int64
	// HeldBy is the bytes of this node's drive data the peer holds (what it
	// gives us), from the replica's placement records.
	HeldBy int64
	// Probes is the bytes of probe shards the peer holds for us and has not
	// failed an audit on (also given).
	Probes                     int64
	AuditsPassed, AuditsFailed uint64
	CPUGiven, CPUTaken         time.Duration
	LastSeen                   time.Time
}

// Gives is what the peer verifiably gives this node: our data and our
// probes it holds.
func (e Entry) Gives() int64 { return e.HeldBy + e.Probes }

// account is an Entry as stored, a CBOR map with integer keys.
type account struct {
	HeldFor      int64  `cbor:"1,keyasint,omitempty"`
	HeldBy       int64  `cbor:"2,keyasint,omitempty"`
	AuditsPassed uint64 `cbor:"3,keyasint,omitempty"`
	AuditsFailed uint64 `cbor:"4,keyasint,omitempty"`
	CPUGiven     int64  `cbor:"5,keyasint,omitempty"` // nanoseconds
	CPUTaken     int64  `cbor:"6,keyasint,omitempty"` // nanoseconds
	LastSeen     int64  `cbor:"7,keyasint,omitempty"` // Unix nanoseconds
}

// Options of a Ledger.
type Options struct {
	// Allowance is what a peer may take before it gives (0:
	// DefaultAllowance).
	Allowance int64
	// FlushEvery is how often changed accounts are written (0: 5 s).
	FlushEvery time.Duration
	Log        *slog.Logger
}

// Global is the network's view of a peer from a coordinator (§5): what it
// takes from and gives to all reporting nodes together. ok is false for a
// peer the coordinator has not been asked about yet.
type Global interface {
	Totals(p peer.ID) (t Totals, ok bool)
}

// Ledger is a node's accounts of its peers, kept in memory and written to
// the store in batches (every FlushEvery, and at Close). Safe for
// concurrent use.
type Ledger struct {
	db   *store.DB
	opts Options
	log  *slog.Logger

	mu           sync.Mutex
	peers        map[peer.ID]*Entry
	dirty        map[peer.ID]bool
	probes       map[peer.ID]map[peerdrive.ShardID]int64 // probe shards placed on each peer, by size
	backoff      map[peer.ID]time.Time                   // no probe to the peer before
	sending      map[peerdrive.ShardID]bool              // probes being placed
	deficitSince map[peer.ID]time.Time                   // when the peer's deficit reached half the allowance
	unknown      map[peer.ID]bool                        // peers admission wants the coordinator asked about
	lastWarn     map[peer.ID]time.Time
	global       Global

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// Open loads the ledger from db and starts writing it back every
// FlushEvery until Close.
func Open(db *store.DB, o Options) (*Ledger, error) {
	if o.Allowance <= 0 {
		o.Allowance = DefaultAllowance
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	l := &Ledger{
		db: db, opts: o, log: o.Log,
		peers: map[peer.ID]*Entry{}, dirty: map[peer.ID]bool{},
		probes: map[peer.ID]map[peerdrive.ShardID]int64{}, backoff: map[peer.ID]time.Time{},
		sending:      map[peerdrive.ShardID]bool{},
		deficitSince: map[peer.ID]time.Time{},
		unknown:      map[peer.ID]bool{},
		lastWarn:     map[peer.ID]time.Time{}, stop: make(chan struct{}),
	}
	if err := l.load(); err != nil {
		return nil, err
	}
	l.wg.Add(1)
	go l.flushLoop()
	return l, nil
}

func (l *Ledger) load() error {
	return l.db.View(func(tx *store.Txn) error {
		err := tx.Iterate([]byte{tag, kindAccount}, nil, true, func(k, v []byte) (bool, error) {
			p, err := peer.IDFromBytes(k[2:])
			if err != nil {
				return false, fmt.Errorf("ledger: account key %x: %w", k, store.ErrCorrupt)
			}
			var a account
			if err := peerdrive.Unmarshal(v, &a); err != nil {
				return false, fmt.Errorf("ledger: account of %s: %w: %v", p, store.ErrCorrupt, err)
			}
			l.peers[p] = &Entry{
				HeldFor: a.HeldFor, HeldBy: a.HeldBy, AuditsPassed: a.AuditsPassed, AuditsFailed: a.AuditsFailed,
				CPUGiven: time.Duration(a.CPUGiven), CPUTaken: time.Duration(a.CPUTaken),
			}
			if a.LastSeen != 0 {
				l.peers[p].LastSeen = time.Unix(0, a.LastSeen)
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		return tx.Iterate([]byte{tag, kindProbe}, nil, true, func(k, v []byte) (bool, error) {
			if len(k) <= 2+len(peerdrive.ShardID{}) {
				return false, fmt.Errorf("ledger: probe key %x: %w", k, store.ErrCorrupt)
			}
			var id peerdrive.ShardID
			copy(id[:], k[2:])
			p, err := peer.IDFromBytes(k[2+len(id):])
			if err != nil {
				return false, fmt.Errorf("ledger: probe key %x: %w", k, store.ErrCorrupt)
			}
			var size int64
			if err := peerdrive.Unmarshal(v, &size); err != nil || size <= 0 {
				return false, fmt.Errorf("ledger: probe %s on %s: %w", id.Short(), p, store.ErrCorrupt)
			}
			l.addProbeLocked(p, id, size)
			return true, nil
		})
	})
}

func accountKey(p peer.ID) []byte { return append([]byte{tag, kindAccount}, p...) }

func probeKey(p peer.ID, id peerdrive.ShardID) []byte {
	k := append([]byte{tag, kindProbe}, id[:]...)
	return append(k, p...)
}

// entry returns p's entry, creating it; l.mu held.
func (l *Ledger) entry(p peer.ID) *Entry {
	e := l.peers[p]
	if e == nil {
		e = &Entry{}
		l.peers[p] = e
	}
	return e
}

// update changes p's account under the lock and marks it for writing.
func (l *Ledger) update(p peer.ID, f func(*Entry)) {
	l.mu.Lock()
	f(l.entry(p))
	l.dirty[p] = true
	l.mu.Unlock()
}

// AuditResult records one audit of p: passed (ok) or failed.
func (l *Ledger) AuditResult(p peer.ID, ok bool) {
	l.update(p, func(e *Entry) {
		if ok {
			e.AuditsPassed++
		} else {
			e.AuditsFailed++
		}
	})
}

// ComputeGiven records CPU time this node spent on p's compute jobs.
func (l *Ledger) ComputeGiven(p peer.ID, cpu time.Duration) {
	l.update(p, func(e *Entry) { e.CPUGiven += max(cpu, 0) })
}

// ComputeTaken records CPU time p spent on this node's compute jobs.
func (l *Ledger) ComputeTaken(p peer.ID, cpu time.Duration) {
	l.update(p, func(e *Entry) { e.CPUTaken += max(cpu, 0) })
}

// ComputeBalance is the CPU time this node gave p minus what it took from
// p: positive means p owes us compute.
func (l *Ledger) ComputeBalance(p peer.ID) time.Duration {
	e := l.Get(p)
	return e.CPUGiven - e.CPUTaken
}

// Seen records that p was connected now.
func (l *Ledger) Seen(p peer.ID) {
	l.update(p, func(e *Entry) { e.LastSeen = time.Now() })
}

// SetHeldFor replaces every peer's HeldFor with a fresh count (peers not
// in m hold nothing with us).
func (l *Ledger) SetHeldFor(m map[peer.ID]int64) {
	l.setAll(m, func(e *Entry) *int64 { return &e.HeldFor })
}

// SetHeldBy replaces every peer's HeldBy with a fresh count.
func (l *Ledger) SetHeldBy(m map[peer.ID]int64) {
	l.setAll(m, func(e *Entry) *int64 { return &e.HeldBy })
}

// setAll sets the field of every entry to its count in m (0 if absent),
// marking the entries it changes dirty.
func (l *Ledger) setAll(m map[peer.ID]int64, field func(*Entry) *int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, e := range l.peers {
		if f := field(e); *f != m[p] {
			*f = m[p]
			l.dirty[p] = true
		}
	}
	for p, n := range m {
		if l.peers[p] == nil && n != 0 {
			*field(l.entry(p)) = n
			l.dirty[p] = true
		}
	}
}

// Get returns p's account (zero if unknown).
func (l *Ledger) Get(p peer.ID) Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.peers[p]; e != nil {
		return *e
	}
	return Entry{}
}

// Peers lists the peers with an account, sorted.
func (l *Ledger) Peers() []peer.ID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]peer.ID, 0, len(l.peers))
	for p := range l.peers {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Unknown returns, and forgets, the peers admission found unknown to the
// coordinator's view: ask about them now.
func (l *Ledger) Unknown() []peer.ID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]peer.ID, 0, len(l.unknown))
	for p := range l.unknown {
		out = append(out, p)
	}
	clear(l.unknown)
	return out
}

// Allowance is what a peer may take before it gives.
func (l *Ledger) Allowance() int64 { return l.opts.Allowance }

// SetGlobal makes admission consult the network's view too (nil: local
// accounts only).
func (l *Ledger) SetGlobal(g Global) {
	l.mu.Lock()
	l.global = g
	l.mu.Unlock()
}

// AdmitPut is the fair-exchange rule (docs/ledger.md §3): p may store
// another shard with this node only while what it holds with us is below
// what it gives us plus the allowance, and, if a coordinator is known, while
// what it takes from the whole network is below what it gives the network
// plus the allowance. The shard that crosses the line is taken (a shard
// larger than the allowance must fit somewhere), none after it. It
// implements net.Admitter.
func (l *Ledger) AdmitPut(p peer.ID, size int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(p)
	allow := l.opts.Allowance
	var err error
	if e.HeldFor >= e.Gives()+allow {
		err = fmt.Errorf("%w: I hold %s for you, you hold %s for me (allowance %s)", ErrGiveBackFirst,
			humanize.IBytes(uint64(e.HeldFor)), humanize.IBytes(uint64(e.Gives())), humanize.IBytes(uint64(allow)))
	} else if l.global != nil {
		t, known := l.global.Totals(p)
		if !known {
			// Asked of the coordinator within a second (Unknown); until
			// then the peer is told to retry, not refused.
			l.unknown[p] = true
			return fmt.Errorf("%w: asking the coordinator about you", ErrAskLater)
		}
		if t.Taken >= t.Given+allow {
			err = fmt.Errorf("%w: the network holds %s for you, you hold %s for it (coordinator; allowance %s)", ErrGiveBackFirst,
				humanize.IBytes(uint64(t.Taken)), humanize.IBytes(uint64(t.Given)), humanize.IBytes(uint64(allow)))
		}
	}
	if err != nil {
		if now := time.Now(); now.Sub(l.lastWarn[p]) >= time.Minute {
			l.lastWarn[p] = now
			l.log.Warn("refusing shards from a peer that does not give back", "peer", p,
				"held_for", e.HeldFor, "gives", e.Gives(), "allowance", allow, "err", err)
		}
		return err
	}
	// Counted now so that concurrent PUTs see each other; the next count
	// from the store (SetHeldFor) corrects it.
	e.HeldFor += size
	l.dirty[p] = true
	return nil
}

// Row is one peer's account as `peerdrive status` shows it.
type Row struct {
	Peer         string  `json:"peer"`
	HeldFor      int64   `json:"held_for_bytes"`
	HeldBy       int64   `json:"held_by_bytes"`
	ProbeBytes   int64   `json:"probe_bytes"`
	AuditsPassed uint64  `json:"audits_passed"`
	AuditsFailed uint64  `json:"audits_failed"`
	CPUGiven     float64 `json:"cpu_given_s"`
	CPUTaken     float64 `json:"cpu_taken_s"`
	LastSeen     string  `json:"last_seen,omitempty"`
}

// Rows lists every account, sorted by peer ID.
func (l *Ledger) Rows() []Row {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Row, 0, len(l.peers))
	for p, e := range l.peers {
		r := Row{
			Peer: p.String(), HeldFor: e.HeldFor, HeldBy: e.HeldBy, ProbeBytes: e.Probes,
			AuditsPassed: e.AuditsPassed, AuditsFailed: e.AuditsFailed,
			CPUGiven: e.CPUGiven.Seconds(), CPUTaken: e.CPUTaken.Seconds(),
		}
		if !e.LastSeen.IsZero() {
			r.LastSeen = e.LastSeen.UTC().Format(time.RFC3339)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Row) int {
		switch {
		case a.Peer < b.Peer:
			return -1
		case a.Peer > b.Peer:
			return 1
		}
		return 0
	})
	return out
}

// Flush writes the accounts changed since the last flush, in one
// transaction.
func (l *Ledger) Flush() error {
	l.mu.Lock()
	type kv struct{ k, v []byte }
	var batch []kv
	for p := range l.dirty {
		e := l.peers[p]
		a := account{
			HeldFor: e.HeldFor, HeldBy: e.HeldBy, AuditsPassed: e.AuditsPassed, AuditsFailed: e.AuditsFailed,
			CPUGiven: int64(e.CPUGiven), CPUTaken: int64(e.CPUTaken),
		}
		if !e.LastSeen.IsZero() {
			a.LastSeen = e.LastSeen.UnixNano()
		}
		v, err := peerdrive.Marshal(&a)
		if err != nil {
			l.mu.Unlock()
			return fmt.Errorf("ledger: encode account: %w", err)
		}
		batch = append(batch, kv{accountKey(p), v})
	}
	clear(l.dirty)
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := l.db.Update(0, func(tx *store.Txn) error {
		for _, b := range batch {
			if err := tx.Set(b.k, b.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: write %d accounts: %w", len(batch), err)
	}
	return nil
}

func (l *Ledger) flushLoop() {
	defer l.wg.Done()
	t := time.NewTicker(l.opts.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.Flush(); err != nil {
				l.log.Warn("ledger not written", "err", err)
			}
		}
	}
}

// Close writes the ledger and stops its background writer. The store stays
// open.
func (l *Ledger) Close() error {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.Flush()
}
