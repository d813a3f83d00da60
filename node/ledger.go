package node

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/ledger"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/replica"
)

// The ledger's wiring (docs/ledger.md): accounts of what each peer gives
// and takes, admission of PUTs on them, probes, and the coordinator.

// Timing of the ledger loop.
const (
	ledgerTick  = time.Second      // recount, probe
	auditEvery  = 10 * time.Minute // one probe audited per peer
	reportEvery = 5 * time.Second  // report to the coordinator, refresh its totals
)

// LedgerConfig configures the ledger, the private network and the
// coordinator (part of Config).
type LedgerConfig struct {
	// Network is a private network's key file or invite (--network); ""
	// uses the home's network key, if it has one (peerdrive join).
	Network string
	// Coordinator makes the node its network's coordinator: relay and
	// ledger of record (peerdrive coordinator).
	Coordinator bool
	// LedgerAllowance is what a peer may store here before it gives back
	// (0: ledger.DefaultAllowance).
	LedgerAllowance int64
}

// LedgerStatus is the ledger's part of Status.
type LedgerStatus struct {
	// Ledger lists this node's account of each peer.
	Ledger []ledger.Row `json:"ledger"`
	// NetworkLedger is a coordinator's view of every peer of the network.
	NetworkLedger []ledger.Totals `json:"network_ledger,omitempty"`
}

// ledgerState is a node's ledger and what goes with it.
type ledgerState struct {
	private  pnet.Private // the network's key; relay for a coordinator
	l        *ledger.Ledger
	coord    *ledger.Coordinator // a coordinator's ledger of record
	global   ledger.GlobalCache  // a known coordinator's totals
	accounts map[peer.ID]string  // accounts peers' holds are kept under, when not their IDs (ledger loop only)

	bootIDs []peer.ID                     // bootstrap peers: coordinators if they serve the ledger protocol
	open    atomic.Pointer[ledger.Ledger] // l, once open (AuditResult)
	pendMu  sync.Mutex
	pending map[placed]pendingPut // shards peers accepted from us, not yet in a segment record
}

// AuditResult passes an audit's outcome to the ledger once it is open (the
// replica's auditor starts first).
func (s *ledgerState) AuditResult(p peer.ID, ok bool) {
	if l := s.open.Load(); l != nil {
		l.AuditResult(p, ok)
	}
}

// startLedger opens the ledger, makes the shard server admit PUTs by it and
// starts the loop that keeps it up to date.
func (n *Node) startLedger() error {
	var err error
	s := n.led
	s.l, err = ledger.Open(n.db, ledger.Options{Allowance: n.cfg.LedgerAllowance, Log: n.log})
	if err != nil {
		return err
	}
	if n.cfg.Coordinator {
		if s.coord, err = ledger.OpenCoordinator(n.db, n.log); err != nil {
			return err
		}
		s.coord.Serve(n.net.Host())
		s.l.SetGlobal(s.coord.Global())
	}
	s.open.Store(s.l)
	for _, a := range n.cfg.Bootstrap {
		if ai, err := peer.AddrInfoFromString(a); err == nil && ai.ID != n.net.Host().ID() && !slices.Contains(s.bootIDs, ai.ID) {
			s.bootIDs = append(s.bootIDs, ai.ID)
		}
	}
	if s.coord == nil && len(s.bootIDs) > 0 {
		s.l.SetGlobal(networkView{n})
	}
	n.net.SetAdmitter(s.l)
	n.net.SetPutObserver(n.observePut)
	n.bg.Add(1)
	go n.ledgerLoop()
	return nil
}

// closeLedger writes the ledger; the loop has stopped (n.bg).
func (n *Node) closeLedger() {
	if n.led == nil || n.led.l == nil {
		return
	}
	n.net.SetAdmitter(nil)
	n.net.SetPutObserver(nil)
	if err := n.led.l.Close(); err != nil {
		n.log.Warn("ledger not written at close", "err", err)
	}
}

func (n *Node) ledgerLoop() {
	defer n.bg.Done()
	ctx, cancel := n.bgContext()
	defer cancel()
	s := n.led
	t := time.NewTicker(ledgerTick)
	defer t.Stop()
	var lastAudit, lastReport time.Time
	for {
		select {
		case <-n.bgStop:
			return
		case <-t.C:
		}
		s.l.SetHeldFor(n.heldFor())
		s.l.SetHeldBy(n.heldBy())
		peers := n.net.StoragePeers()
		for _, p := range peers {
			s.l.Seen(p)
		}
		if ask := s.l.Unknown(); len(ask) > 0 || time.Since(lastReport) >= reportEvery {
			lastReport = time.Now()
			n.reportLedger(ctx, ask)
		}
		s.l.Probe(ctx, n.net, peers)
		if time.Since(lastAudit) >= auditEvery {
			lastAudit = time.Now()
			s.l.Audit(ctx, n.net, peers)
		}
	}
}

// reportLedger sends the ledger to the coordinators among the bootstrap
// peers (those that serve the ledger protocol) and takes their totals for
// admission; ask are peers admission is waiting to hear about. A
// coordinator records its own ledger directly. If no coordinator answers,
// the peers asked about are judged by the local rule alone.
func (n *Node) reportLedger(ctx context.Context, ask []peer.ID) {
	s := n.led
	if s.coord != nil {
		if err := s.coord.Record(n.net.Host().ID(), s.l.Entries()); err != nil {
			n.log.Warn("coordinator: own ledger not recorded", "err", err)
		}
		return
	}
	h := n.net.Host()
	for _, id := range s.bootIDs {
		if ok, _ := h.Peerstore().SupportsProtocols(id, ledger.Protocol); len(ok) == 0 {
			continue
		}
		if err := s.l.Report(ctx, h, id); err != nil {
			n.log.Debug("ledger report to coordinator failed", "coordinator", id, "err", err)
			continue
		}
		ts, err := ledger.Query(ctx, h, id, s.l.Peers())
		if err != nil {
			n.log.Debug("coordinator query failed", "coordinator", id, "err", err)
			continue
		}
		s.global.Set(ts)
		return
	}
	if len(ask) > 0 {
		unknown := make([]ledger.Totals, len(ask))
		for i, p := range ask {
			unknown[i] = ledger.Totals{Peer: p.String(), PeerBytes: []byte(p)}
		}
		s.global.Set(unknown)
	}
}

// networkView is admission's view of the network for a node that may know
// a coordinator: the coordinator's answers while one of the bootstrap
// peers serves the ledger protocol (a peer not asked about yet waits for
// the answer), nothing otherwise.
type networkView struct{ n *Node }

func (v networkView) Totals(p peer.ID) (ledger.Totals, bool) {
	if t, ok := v.n.led.global.Totals(p); ok {
		return t, true
	}
	if v.n.coordinatorKnown() {
		return ledger.Totals{}, false
	}
	return ledger.Totals{}, true // no coordinator: zero totals refuse nobody
}

// coordinatorKnown reports whether a bootstrap peer serves the ledger
// protocol (identify has told us).
func (n *Node) coordinatorKnown() bool {
	h := n.net.Host()
	for _, id := range n.led.bootIDs {
		if ok, _ := h.Peerstore().SupportsProtocols(id, ledger.Protocol); len(ok) > 0 {
			return true
		}
	}
	return false
}

// heldFor counts the bytes of shards this node holds for each peer: the
// shard store's tally of holds by owner ('Q' records, docs/format.md §13,
// docs/gc.md, counted once and kept up to date by the store); the owner is
// the peer's ID string, or the account of the drive it presented a
// delegation for (net.Node.OwnerOf).
func (n *Node) heldFor() map[peer.ID]int64 {
	byOwner, err := n.shards.HeldByOwner()
	if err != nil {
		n.log.Warn("ledger: shards held for peers not counted", "err", err)
	}
	s := n.led
	if s.accounts == nil {
		s.accounts = map[peer.ID]string{}
	}
	if of, ok := any(n.net).(interface{ OwnerOf(peer.ID) string }); ok {
		for _, p := range n.net.Host().Network().Peers() {
			if acct := of.OwnerOf(p); acct != p.String() {
				s.accounts[p] = acct
			}
		}
	}
	out := map[peer.ID]int64{}
	for owner, t := range byOwner {
		if p, err := peer.Decode(owner); err == nil {
			out[p] += t.Bytes
		}
	}
	for p, acct := range s.accounts {
		out[p] += byOwner[acct].Bytes
	}
	return out
}

// heldBy counts the bytes of this drive's shards each peer holds: those
// the replica's segment records place on it (replica.HeldBy: recounted by
// its health checks, new segments and repairs added as they commit), and
// those it accepted from us for segments not recorded yet (an upload that
// is still going, or failed on another shard and will be retried) for up to
// pendingFor. A storage-only node has none. It reads no records: a scan of
// every segment record each second cost a third of a core for a 100 GB
// drive.
func (n *Node) heldBy() map[peer.ID]int64 {
	if n.rep == nil {
		return nil
	}
	out := n.rep.HeldBy()
	s := n.led
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	for k, pp := range s.pending {
		if time.Since(pp.at) > pendingFor {
			delete(s.pending, k)
			continue
		}
		out[k.p] += pp.size
	}
	return out
}

// committed takes shards a segment record now names off the pending ones
// (replica.Options.Committed): the replica counts them from now on.
func (n *Node) committed(shards []replica.ShardLoc) {
	s := n.led
	if s == nil {
		return
	}
	s.pendMu.Lock()
	for _, sh := range shards {
		delete(s.pending, placed{sh.ID, peer.ID(sh.Peer)})
	}
	s.pendMu.Unlock()
}

// pendingFor is how long a shard a peer accepted counts as held by it
// before a segment record names it.
const pendingFor = time.Hour

// placed names one shard on one peer.
type placed struct {
	id peerdrive.ShardID
	p  peer.ID
}

type pendingPut struct {
	size int64
	at   time.Time
}

// observePut notes a shard a peer accepted from us (not a probe: those the
// ledger counts itself).
func (n *Node) observePut(p peer.ID, id peerdrive.ShardID, size int) {
	s := n.led
	if s.l.IsProbe(p, id) {
		return
	}
	s.pendMu.Lock()
	if s.pending == nil {
		s.pending = map[placed]pendingPut{}
	}
	s.pending[placed{id, p}] = pendingPut{int64(size), time.Now()}
	s.pendMu.Unlock()
}

// ledgerStatus fills the ledger's part of the status.
func (n *Node) ledgerStatus(st *Status) {
	if n.led == nil || n.led.l == nil {
		return
	}
	st.Ledger = n.led.l.Rows()
	if n.led.coord != nil {
		st.NetworkLedger = n.led.coord.All()
	}
}
