package replica

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/audit"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
)

// Repair: docs/audit.md §5.

// Defaults of RepairOptions.
const (
	DefaultAuditInterval     = 10 * time.Minute
	DefaultRepairGrace       = 72 * time.Hour
	DefaultRepairInterval    = 30 * time.Second
	DefaultRepairBytesPerSec = 4 << 20
	defaultAuditLeaves       = 4
	// staleFor is how long a replaced shard's DELETE waits for its peer.
	staleFor = 30 * 24 * time.Hour
	// staleTries is how many DELETEs a replaced shard gets while its peer
	// is connected (the peer may refuse one, e.g. before it has our
	// delegation: docs/gc.md).
	staleTries = 5
)

// RepairOptions configure audits and repair.
type RepairOptions struct {
	// AuditInterval is the time between audit rounds; each round audits one
	// random shard on each holder (0: DefaultAuditInterval; < 0: no audits).
	AuditInterval time.Duration
	// AuditLeaves is the number of random leaves asked for per audit (0: 4).
	AuditLeaves int
	// RepairGrace is how long a holder may be unreachable before its
	// shards are rebuilt elsewhere (0: DefaultRepairGrace).
	RepairGrace time.Duration
	// RepairInterval is the time between repair passes (0:
	// DefaultRepairInterval, or a quarter of RepairGrace if that is
	// shorter); a failed audit starts one at once.
	RepairInterval time.Duration
	// RepairThreshold is Policy.Threshold (0: DefaultThreshold(k, m)).
	RepairThreshold int
	// RepairBytesPerSec bounds repair traffic, shard bytes fetched and put
	// (0: DefaultRepairBytesPerSec).
	RepairBytesPerSec int64
	// Audit receives every audit's outcome (the ledger); may be nil.
	Audit AuditSink
}

// threshold is the Policy.Threshold these options give.
func (o *Options) threshold() int {
	if o.RepairThreshold > 0 {
		return o.RepairThreshold
	}
	return DefaultThreshold(o.Params.K, o.Params.M)
}

func (o *RepairOptions) defaults() {
	if o.AuditInterval == 0 {
		o.AuditInterval = DefaultAuditInterval
	}
	if o.AuditLeaves <= 0 {
		o.AuditLeaves = defaultAuditLeaves
	}
	if o.RepairGrace == 0 {
		o.RepairGrace = DefaultRepairGrace
	}
	if o.RepairInterval <= 0 {
		o.RepairInterval = min(DefaultRepairInterval, max(o.RepairGrace/4, 100*time.Millisecond))
	}
	if o.RepairBytesPerSec <= 0 {
		o.RepairBytesPerSec = DefaultRepairBytesPerSec
	}
}

// Optional abilities of the Network that audits and repair use (net.Node
// has them all); without them the replica neither audits nor deletes.
type (
	shardAuditor interface {
		// AuditShard returns the given leaves of shard id with their
		// proofs, unverified: version 2 proofs, whose root is the shard
		// ID, or version 1 from a peer older than that. A peer that does
		// not hold the shard gives an error matching fs.ErrNotExist.
		AuditShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, leaves []int) ([]audit.Answer, error)
	}
	peerJudge interface {
		// AuditFailed lowers p's score for good (a bad shard).
		AuditFailed(p peer.ID)
		// Distrusted reports whether p failed an audit or served a bad shard.
		Distrusted(p peer.ID) bool
	}
	shardDeleter interface {
		DeleteShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) error
	}
)

// SegmentState is what Plan needs to know of one placed segment.
type SegmentState struct {
	Num    uint64
	Params segment.Params
	Peers  []peer.ID // holder of each shard, in shard order
	Marked []bool    // shards marked for repair (failed audit); nil: none
}

// PeerState is what Plan needs to know of one holder.
type PeerState struct {
	Connected  bool
	LastSeen   time.Time // when this node last saw it connected (or started)
	Distrusted bool      // failed an audit or served a corrupt shard
}

// RepairTask is one segment to repair.
type RepairTask struct {
	Seg     uint64
	Missing []int // shards to re-create and place elsewhere
	Healthy int   // shards healthy now
	Params  segment.Params
}

// shardHealthy: the shard's holder is connected and trusted, and the shard
// is not marked.
func shardHealthy(ps PeerState, marked bool) bool {
	return ps.Connected && !ps.Distrusted && !marked
}

// shardGone: the shard is to be rebuilt elsewhere.
func shardGone(ps PeerState, marked bool, grace time.Duration, now time.Time) bool {
	return marked || ps.Distrusted || (!ps.Connected && now.Sub(ps.LastSeen) > grace)
}

// Policy is when Plan repairs.
type Policy struct {
	// Grace is how long a holder may be unreachable before its shards are
	// counted gone and rebuilt elsewhere.
	Grace time.Duration
	// Threshold: a segment is repaired once fewer than Threshold of its n
	// shards are left (not gone); all its gone shards are then rebuilt at
	// once. n (or 0) repairs at the first gone shard; lower thresholds
	// batch repairs, which costs less traffic (a repair fetches k shards
	// whatever the number it rebuilds) at the price of running with less
	// redundancy for longer (docs/churn.md).
	Threshold int
}

// DefaultThreshold is Policy.Threshold for a k+m code: k + m/2 for wide
// codes (m ≥ 8), where batching saves most; n − m/4 for the others, so
// 12+4 repairs once two shards are gone and 4+2 at the first. The churn
// simulator chose these (docs/churn.md): at 90% availability a threshold
// closer to k leaves segments waiting for k online shards to rebuild from
// while more holders leave, and loses some.
func DefaultThreshold(k, m int) int {
	if m >= 8 {
		return k + m/2
	}
	return k + m - m/4
}

// Plan decides what to repair: the segments where fewer than
// Policy.Threshold shards are left once the gone ones are counted out (a
// shard is gone when its holder has been unreachable for more than the
// grace period, is distrusted, or the shard is marked); most urgent first
// (fewest healthy shards, then lowest segment number). A segment with fewer
// than k healthy shards cannot be rebuilt from peers and is left out. A peer
// missing from peers counts as gone since ever.
//
// Plan is pure: it reads no clock, store or network, so that the churn
// simulator (package churn) drives it with thousands of virtual peers and a
// virtual clock (docs/audit.md §5, docs/churn.md).
func Plan(segs []SegmentState, peers map[peer.ID]PeerState, pol Policy, now time.Time) []RepairTask {
	var tasks []RepairTask
	for _, s := range segs {
		var t RepairTask
		for i, p := range s.Peers {
			marked := i < len(s.Marked) && s.Marked[i]
			ps := peers[p]
			if shardHealthy(ps, marked) {
				t.Healthy++
			}
			if shardGone(ps, marked, pol.Grace, now) {
				t.Missing = append(t.Missing, i)
			}
		}
		threshold := pol.Threshold
		if threshold <= 0 || threshold > len(s.Peers) {
			threshold = len(s.Peers)
		}
		if len(t.Missing) == 0 || t.Healthy < s.Params.K || len(s.Peers)-len(t.Missing) >= threshold {
			continue
		}
		t.Seg, t.Params = s.Num, s.Params
		tasks = append(tasks, t)
	}
	slices.SortStableFunc(tasks, func(a, b RepairTask) int {
		if c := cmp.Compare(a.Healthy-a.Params.K, b.Healthy-b.Params.K); c != 0 {
			return c
		}
		return cmp.Compare(a.Seg, b.Seg)
	})
	return tasks
}

// ShardsMissing marks shards of segment seg that their holders no longer
// have (a RENEW reply said so) for repair, and starts a repair pass.
func (r *Replica) ShardsMissing(seg uint64, shards []ShardLoc) {
	m := r.maint
	m.mu.Lock()
	for _, sh := range shards {
		m.marked[markKey{sh.ID, peer.ID(sh.Peer)}] = true
	}
	m.mu.Unlock()
	r.log.Warn("shards missing on their holders; repairing", "segment", seg, "shards", len(shards))
	m.kick()
}

// markKey names a shard on a peer.
type markKey struct {
	id   peerdrive.ShardID
	peer peer.ID
}

// maintenance is the state of audits and repair, in memory.
type maintenance struct {
	wake chan struct{} // starts a repair pass

	mu       sync.Mutex
	start    time.Time
	lastSeen map[peer.ID]time.Time
	marked   map[markKey]bool
	audits   map[peer.ID]*PeerAudits
	passed   int64
	failed   int64
	repaired int64
	held     map[peer.ID]int64
	next     time.Time // pacing: when the next repair transfer may start
}

func newMaintenance() *maintenance {
	return &maintenance{
		wake: make(chan struct{}, 1), start: time.Now(),
		lastSeen: map[peer.ID]time.Time{}, marked: map[markKey]bool{},
		audits: map[peer.ID]*PeerAudits{}, held: map[peer.ID]int64{},
	}
}

// startMaintenance starts the auditor and the repairer (Start calls it).
func (r *Replica) startMaintenance() {
	r.opts.RepairOptions.defaults()
	r.maint = newMaintenance()
	r.wg.Add(1)
	go r.repairer()
	if r.opts.AuditInterval > 0 {
		if _, ok := r.net.(shardAuditor); ok {
			r.wg.Add(1)
			go r.auditor()
		}
	}
}

func (m *maintenance) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// peerStates returns the state of every holder (and updates when each
// connected one was last seen).
func (r *Replica) peerStates(holders map[peer.ID]bool, now time.Time) map[peer.ID]PeerState {
	connected := map[peer.ID]bool{}
	for _, p := range r.net.StoragePeers() {
		connected[p] = true
	}
	judge, _ := r.net.(peerJudge)
	m := r.maint
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[peer.ID]PeerState, len(holders))
	for p := range connected {
		m.lastSeen[p] = now
	}
	for p := range holders {
		seen, ok := m.lastSeen[p]
		if !ok {
			seen = m.start
		}
		ps := PeerState{Connected: connected[p], LastSeen: seen}
		if judge != nil {
			ps.Distrusted = judge.Distrusted(p)
		}
		out[p] = ps
	}
	return out
}

// segmentStates reads every placed segment.
func (r *Replica) segmentStates() ([]SegmentState, map[peer.ID]bool, error) {
	var segs []SegmentState
	holders := map[peer.ID]bool{}
	m := r.maint
	err := r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			var rec Segment
			if err := peerdrive.Unmarshal(v, &rec); err != nil {
				return false, fmt.Errorf("segment record %x: %w", k, err)
			}
			if len(rec.Chunks) == 0 {
				return true, nil // being collected (gc.go): its shards are going
			}
			s := SegmentState{Num: binary.BigEndian.Uint64(k[1:]), Params: rec.Params, Peers: make([]peer.ID, len(rec.Shards))}
			m.mu.Lock()
			for i, sh := range rec.Shards {
				p := peer.ID(sh.Peer)
				s.Peers[i] = p
				holders[p] = true
				if m.marked[markKey{sh.ID, p}] {
					if s.Marked == nil {
						s.Marked = make([]bool, len(rec.Shards))
					}
					s.Marked[i] = true
				}
			}
			m.mu.Unlock()
			segs = append(segs, s)
			return true, nil
		})
	})
	return segs, holders, err
}

// repairer runs a repair pass every RepairInterval, or when kicked.
func (r *Replica) repairer() {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.RepairInterval)
	defer t.Stop()
	var last time.Time
	var scan time.Duration
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			// A pass reads every segment record: on a large drive, pass
			// ticks rather than spend more than healthShare of a core.
			if !scanDue(last, scan) {
				continue
			}
		case <-r.maint.wake:
		}
		last = time.Now()
		scan = r.repairPass(r.ctx, last)
	}
}

// repairPass plans and runs the repairs due now, then sends the deletes of
// replaced shards whose peers are back. It returns how long reading the
// segment records took.
func (r *Replica) repairPass(ctx context.Context, now time.Time) time.Duration {
	start := time.Now()
	segs, holders, err := r.segmentStates()
	scan := time.Since(start)
	if err != nil {
		r.log.Warn("repair: segment records unreadable", "err", err)
		return scan
	}
	peers := r.peerStates(holders, now)
	tasks := Plan(segs, peers, Policy{Grace: r.opts.RepairGrace, Threshold: r.opts.threshold()}, now)
	// Status must not show the health of before a departure while repairs
	// for it are under way: refresh it first (with nothing to repair, the
	// keeper's checks are fresh enough: a check reads every record).
	if len(tasks) > 0 {
		r.checkHealth()
	}
	done := 0
	for _, t := range tasks {
		if ctx.Err() != nil {
			return scan
		}
		n, err := r.repairSegment(ctx, t)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("segment repair failed; will retry", "segment", t.Seg, "shards", len(t.Missing), "err", err)
			}
			continue
		}
		if n > 0 {
			done++
			r.log.Info("segment repaired", "segment", t.Seg, "shards", n, "healthy_before", t.Healthy)
		}
	}
	if done > 0 {
		r.checkHealth()
	}
	r.deleteStale(ctx, now)
	return scan
}

// errRepairMismatch: the rebuilt segment does not give the recorded shards.
var errRepairMismatch = errors.New("rebuilt shards do not match the segment record")

// repairSegment rebuilds segment t.Seg from any k shards, re-creates the
// missing ones, puts each on a peer that holds no shard of the segment and
// commits the new locations. It returns how many shards it placed.
func (r *Replica) repairSegment(ctx context.Context, t RepairTask) (int, error) {
	var rec Segment
	err := r.db.View(func(tx *store.Txn) (err error) {
		rec, err = getSegment(tx, t.Seg)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil // deleted since the plan
	}
	if err != nil {
		return 0, err
	}
	if len(rec.Shards) != rec.Params.N() {
		return 0, fmt.Errorf("segment %d: %d shards for %d+%d: %w", t.Seg, len(rec.Shards), rec.Params.K, rec.Params.M, store.ErrCorrupt)
	}
	// Targets: usable peers holding no shard of this segment, even a gone one.
	holds := map[peer.ID]bool{}
	for _, sh := range rec.Shards {
		holds[peer.ID(sh.Peer)] = true
	}
	judge, _ := r.net.(peerJudge)
	var targets []peer.ID
	for _, p := range r.placementOrder() {
		if holds[p] || (judge != nil && judge.Distrusted(p)) {
			continue
		}
		if u, ok := r.net.(interface{ Usable(peer.ID) bool }); ok && !u.Usable(p) {
			continue
		}
		targets = append(targets, p)
	}
	if len(targets) == 0 {
		// Nowhere to put them: try again next pass, without fetching.
		r.log.Debug("repair: no peer outside the segment", "segment", t.Seg)
		return 0, nil
	}
	ss := int64(rec.Params.ShardSize(int(rec.Size)))
	if !r.pace(int64(rec.Params.K) * ss) {
		return 0, ctx.Err()
	}
	seg, err := r.FetchSegment(ctx, rec)
	if err != nil {
		return 0, fmt.Errorf("fetch: %w", err)
	}
	enc, err := segment.Encode(rec.Params, seg)
	if err != nil {
		return 0, err
	}
	for i, id := range enc.IDs {
		if id != rec.Shards[i].ID {
			return 0, fmt.Errorf("segment %d shard %d: %w", t.Seg, i, errRepairMismatch)
		}
	}
	placed := map[int]ShardLoc{}
	for _, i := range t.Missing {
		for len(targets) > 0 {
			p := targets[0]
			targets = targets[1:]
			if !r.pace(ss) {
				return 0, ctx.Err()
			}
			sctx, cancel := context.WithTimeout(ctx, r.opts.ShardTimeout)
			err := r.net.PutShard(sctx, p, enc.IDs[i], enc.Shards[i])
			cancel()
			if err != nil {
				r.log.Debug("repair: shard put failed", "segment", t.Seg, "shard", i, "peer", p, "err", err)
				continue
			}
			placed[i] = ShardLoc{ID: enc.IDs[i], Peer: []byte(p)}
			break
		}
	}
	if len(placed) == 0 {
		return 0, fmt.Errorf("segment %d: no peer outside the segment took a shard: %w", t.Seg, ErrNoPeers)
	}
	n, err := r.commitRepair(t.Seg, rec, placed)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		r.committed(slices.Collect(maps.Values(placed)), ss)
	}
	r.fetchMu.Lock()
	if r.recent != nil && r.recent.num == t.Seg {
		r.recent = nil
	}
	r.fetchMu.Unlock()
	m := r.maint
	m.mu.Lock()
	if n > 0 {
		m.repaired++
	}
	for i := range placed {
		delete(m.marked, markKey{rec.Shards[i].ID, peer.ID(rec.Shards[i].Peer)})
	}
	m.mu.Unlock()
	return n, nil
}

// commitRepair rewrites segment num's record with the placed shards, in one
// transaction, for the shards whose location is still the one the repair
// started from; it records each replaced location for a later DELETE.
func (r *Replica) commitRepair(num uint64, old Segment, placed map[int]ShardLoc) (int, error) {
	n := 0
	now := time.Now().Unix()
	err := r.db.Update(0, func(tx *store.Txn) error {
		cur, err := getSegment(tx, num)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(cur.Shards) != len(old.Shards) {
			return nil
		}
		for i, loc := range placed {
			was := cur.Shards[i]
			if was.ID != old.Shards[i].ID || !bytes.Equal(was.Peer, old.Shards[i].Peer) {
				continue // changed meanwhile
			}
			cur.Shards[i] = loc
			var ts [8]byte
			binary.BigEndian.PutUint64(ts[:], uint64(now))
			if err := tx.Set(staleKey(was.ID, peer.ID(was.Peer)), ts[:]); err != nil {
				return err
			}
			n++
		}
		b, err := peerdrive.Marshal(&cur)
		if err != nil {
			return err
		}
		return tx.Set(segKey(num), b)
	})
	return n, err
}

// Stale shard records (docs/audit.md §5): 'A' 'd' || shard ID || peer.
const (
	tagAudit  = 'A'
	staleKind = 'd'
)

func staleKey(id peerdrive.ShardID, p peer.ID) []byte {
	k := make([]byte, 0, 2+len(id)+len(p))
	k = append(k, tagAudit, staleKind)
	k = append(k, id[:]...)
	return append(k, p...)
}

// deleteStale sends DELETE for replaced shards whose peer is connected, once
// each (best effort), and drops records past staleFor.
func (r *Replica) deleteStale(ctx context.Context, now time.Time) {
	del, ok := r.net.(shardDeleter)
	if !ok {
		return
	}
	connected := map[peer.ID]bool{}
	for _, p := range r.net.StoragePeers() {
		connected[p] = true
	}
	type stale struct {
		key   []byte
		id    peerdrive.ShardID
		p     peer.ID
		due   bool // send now; else expired
		at    []byte
		tries byte
	}
	var todo []stale
	err := r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagAudit, staleKind}, nil, true, func(k, v []byte) (bool, error) {
			if len(k) < 2+32 || (len(v) != 8 && len(v) != 9) {
				return true, nil
			}
			var s stale
			s.key = bytes.Clone(k)
			s.at = bytes.Clone(v[:8])
			if len(v) == 9 {
				s.tries = v[8]
			}
			copy(s.id[:], k[2:34])
			s.p = peer.ID(bytes.Clone(k[34:]))
			at := time.Unix(int64(binary.BigEndian.Uint64(v[:8])), 0)
			switch {
			case connected[s.p]:
				s.due = true
			case now.Sub(at) > staleFor:
			default:
				return true, nil
			}
			todo = append(todo, s)
			return true, nil
		})
	})
	if err != nil {
		r.log.Warn("repair: stale shard records unreadable", "err", err)
		return
	}
	for _, s := range todo {
		if s.due {
			dctx, cancel := context.WithTimeout(ctx, r.opts.ShardTimeout)
			err := del.DeleteShard(dctx, s.p, s.id)
			cancel()
			if ctx.Err() != nil {
				return
			}
			r.log.Debug("repair: stale shard deleted", "shard", s.id.Short(), "peer", s.p, "err", err)
			if err != nil && !errors.Is(err, fs.ErrNotExist) && s.tries+1 < staleTries {
				// Try again next pass.
				v := append(s.at, s.tries+1)
				if err := r.db.Update(0, func(tx *store.Txn) error { return tx.Set(s.key, v) }); err != nil {
					r.log.Warn("repair: stale shard record not updated", "err", err)
					return
				}
				continue
			}
		}
		if err := r.db.Update(0, func(tx *store.Txn) error { return tx.Delete(s.key) }); err != nil {
			r.log.Warn("repair: stale shard record not deleted", "err", err)
			return
		}
	}
}

// pace waits until n more bytes of repair traffic fit in the bandwidth
// bound; false if the replica is closing.
func (r *Replica) pace(n int64) bool {
	m := r.maint
	m.mu.Lock()
	now := time.Now()
	if m.next.Before(now) {
		m.next = now
	}
	wait := m.next.Sub(now)
	m.next = m.next.Add(time.Duration(float64(n) / float64(r.opts.RepairBytesPerSec) * float64(time.Second)))
	m.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}
