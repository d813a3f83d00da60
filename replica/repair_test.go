package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/audit"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
)

// The memNet's side of audits and repair, as net.Node does it.

func (m *memNet) AuditShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, leaves []int) ([]audit.Answer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[p] {
		return nil, errors.New("peer down")
	}
	b, ok := m.peers[p][id]
	if !ok {
		return nil, fmt.Errorf("shard %s: %w", id.Short(), fs.ErrNotExist)
	}
	if m.liar[p] {
		b = append([]byte(nil), b...)
		b[0] ^= 1
	}
	// A peer older than audit version 2 ignores the version asked for.
	prove, v := audit.ProveAllV2, byte(audit.Version2)
	if m.v1[p] {
		prove, v = audit.ProveAll, audit.Version1
	}
	_, proofs, err := prove(b, leaves)
	if err != nil {
		return nil, err
	}
	out := make([]audit.Answer, len(leaves))
	for k, i := range leaves {
		out[k] = audit.Answer{Index: i, Data: append([]byte(nil), audit.Leaf(b, i)...), Proof: proofs[k], Version: v}
	}
	return out, nil
}

func (m *memNet) AuditFailed(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.distrusted == nil {
		m.distrusted = map[peer.ID]bool{}
	}
	m.distrusted[p] = true
}

func (m *memNet) Distrusted(p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.distrusted[p]
}

func (m *memNet) DeleteShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[p] {
		return errors.New("peer down")
	}
	if _, ok := m.peers[p][id]; !ok {
		return fs.ErrNotExist
	}
	delete(m.peers[p], id)
	m.deletes++
	return nil
}

// setDown marks peers down or up.
func (m *memNet) setDown(down bool, ps ...peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		m.down[p] = down
	}
}

// sinkRec records audit results.
type sinkRec struct {
	mu   sync.Mutex
	good map[peer.ID]int
	bad  map[peer.ID]int
}

func (s *sinkRec) AuditResult(p peer.ID, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.good[p]++
	} else {
		s.bad[p]++
	}
}

func newRepairReplica(t *testing.T, net *memNet, ro RepairOptions) (*store.DB, *Replica) {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(db, net, Options{Params: segment.Params{K: 4, M: 2}, CacheBytes: 1, PackDelay: 20 * time.Millisecond, RepairOptions: ro})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close(); db.Close() })
	return db, r
}

// waitUntil polls cond every 20 ms for at most d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holders returns, per segment, the peers of its shards.
func holders(t *testing.T, r *Replica) map[uint64][]peer.ID {
	t.Helper()
	segs, _, err := r.segmentStates()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64][]peer.ID{}
	for _, s := range segs {
		out[s.Num] = s.Peers
	}
	return out
}

// onPeer counts the shards placed on any of ps, and the segments whose
// shards are not on distinct peers.
func onPeer(t *testing.T, r *Replica, ps ...peer.ID) (shards, shared int) {
	for _, hs := range holders(t, r) {
		for _, h := range hs {
			if slices.Contains(ps, h) {
				shards++
			}
		}
		u := slices.Clone(hs)
		slices.Sort(u)
		if len(slices.Compact(u)) != len(hs) {
			shared++
		}
	}
	return shards, shared
}

func readAll(t *testing.T, r *Replica, chunks map[peerdrive.ChunkID][]byte) {
	t.Helper()
	r.fetchMu.Lock()
	r.recent = nil
	r.fetchMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for id, want := range chunks {
		got, err := r.Fetch(ctx, id)
		if err != nil || string(got) != string(want) {
			t.Fatalf("Fetch %s: %v", id.Short(), err)
		}
	}
}

func syncAll(t *testing.T, r *Replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func healthNow(r *Replica) Health {
	r.checkHealth()
	return r.Stats().Health
}

// TestAuditFailureRepair: a peer that silently drops half its shards is
// caught by audits; its shards are rebuilt on other peers; then two more
// peers can go with no loss.
func TestAuditFailureRepair(t *testing.T) {
	net := newMemNet(8)
	sink := &sinkRec{good: map[peer.ID]int{}, bad: map[peer.ID]int{}}
	db, r := newRepairReplica(t, net, RepairOptions{
		AuditInterval: 30 * time.Millisecond, RepairInterval: 50 * time.Millisecond,
		RepairGrace: time.Hour, RepairBytesPerSec: 1 << 30, Audit: sink,
	})
	chunks := putChunks(t, db, r, 24, 300<<10) // ~7 MB: a couple of segments
	syncAll(t, r)
	for _, hs := range holders(t, r) {
		if len(hs) != 6 {
			t.Fatalf("segment with %d shards", len(hs))
		}
	}
	// The peer with most shards drops half of them.
	var cheat peer.ID
	net.mu.Lock()
	for p, m := range net.peers {
		if cheat == "" || len(m) > len(net.peers[cheat]) {
			cheat = p
		}
	}
	dropped := 0
	for id := range net.peers[cheat] {
		if dropped*2 < len(net.peers[cheat])+dropped {
			delete(net.peers[cheat], id)
			dropped++
		}
	}
	net.mu.Unlock()
	t.Logf("%s dropped %d shards", cheat, dropped)

	waitUntil(t, 10*time.Second, "an audit of the cheat fails", func() bool { return r.AuditStats().Peers[cheat].Failed > 0 })
	waitUntil(t, 10*time.Second, "the cheat's shards moved elsewhere", func() bool {
		n, _ := onPeer(t, r, cheat)
		return n == 0
	})
	if _, shared := onPeer(t, r); shared > 0 {
		t.Fatalf("%d segments have two shards on one peer after repair", shared)
	}
	if h := healthNow(r); h.UnderReplicated != 0 || h.Lost != 0 {
		t.Fatalf("after repair: %+v", h)
	}
	st := r.AuditStats()
	if st.RepairedSegments == 0 || st.Passed == 0 {
		t.Fatalf("stats %+v", st)
	}
	sink.mu.Lock()
	if sink.bad[cheat] == 0 || len(sink.good) == 0 {
		t.Fatalf("sink: good %v bad %v", sink.good, sink.bad)
	}
	sink.mu.Unlock()
	// The cheat, still connected, was told to delete what it no longer holds for us.
	waitUntil(t, 5*time.Second, "the cheat's stale shards deleted", func() bool {
		net.mu.Lock()
		defer net.mu.Unlock()
		return len(net.peers[cheat]) == 0
	})
	// Two other peers go: every chunk still reads back.
	var others []peer.ID
	for _, p := range net.StoragePeers() {
		if p != cheat && len(others) < 2 {
			others = append(others, p)
		}
	}
	net.setDown(true, append(others, cheat)...)
	readAll(t, r, chunks)
}

// TestDepartureRepair: peers gone longer than the grace period have their
// shards rebuilt elsewhere; a replaced peer that comes back is told to
// delete its stale shards; then two more peers can go with no loss.
func TestDepartureRepair(t *testing.T) {
	net := newMemNet(8)
	db, r := newRepairReplica(t, net, RepairOptions{
		AuditInterval: -1, RepairInterval: 50 * time.Millisecond,
		RepairGrace: 300 * time.Millisecond, RepairBytesPerSec: 1 << 30,
	})
	chunks := putChunks(t, db, r, 24, 300<<10)
	syncAll(t, r)
	ps := net.StoragePeers()
	slices.Sort(ps)
	gone := ps[:2]
	net.setDown(true, gone...)
	start := time.Now()
	if h := healthNow(r); h.UnderReplicated == 0 {
		t.Fatalf("two peers down: health %+v, want under-replicated chunks", h)
	}
	waitUntil(t, 10*time.Second, "no shard on the departed peers", func() bool {
		n, _ := onPeer(t, r, gone...)
		return n == 0
	})
	// The peers were last seen at most one repair pass (50 ms) before they went.
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("repaired after %v, before the grace period", el)
	}
	if h := healthNow(r); h.UnderReplicated != 0 || h.Lost != 0 {
		t.Fatalf("after repair: %+v", h)
	}
	if _, shared := onPeer(t, r); shared > 0 {
		t.Fatalf("%d segments have two shards on one peer after repair", shared)
	}
	// One of them comes back: its stale shards go.
	net.setDown(false, gone[0])
	waitUntil(t, 5*time.Second, "the returning peer's stale shards deleted", func() bool {
		net.mu.Lock()
		defer net.mu.Unlock()
		return len(net.peers[gone[0]]) == 0
	})
	net.setDown(true, gone[0])
	net.setDown(true, ps[2:4]...)
	readAll(t, r, chunks)
}

// TestPlan drives the pure planner with a virtual clock.
func TestPlan(t *testing.T) {
	p := func(i int) peer.ID { return peer.ID(fmt.Sprintf("p%d", i)) }
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	grace := time.Hour
	peers := map[peer.ID]PeerState{}
	for i := range 10 {
		peers[p(i)] = PeerState{Connected: true, LastSeen: now}
	}
	peers[p(6)] = PeerState{LastSeen: now.Add(-2 * time.Hour)}    // gone past the grace
	peers[p(7)] = PeerState{LastSeen: now.Add(-2 * time.Hour)}    // gone past the grace
	peers[p(8)] = PeerState{LastSeen: now.Add(-10 * time.Minute)} // away, within the grace
	peers[p(9)] = PeerState{Connected: true, Distrusted: true, LastSeen: now}
	k42 := segment.Params{K: 4, M: 2}
	seg := func(num uint64, ids ...int) SegmentState {
		s := SegmentState{Num: num, Params: k42}
		for _, i := range ids {
			s.Peers = append(s.Peers, p(i))
		}
		return s
	}
	marked := seg(5, 0, 1, 2, 3, 4, 5)
	marked.Marked = []bool{false, false, true, false, false, false}
	segs := []SegmentState{
		seg(1, 0, 1, 2, 3, 4, 5), // healthy: nothing to do
		seg(2, 0, 1, 2, 3, 4, 6), // one gone: 5 healthy
		seg(3, 0, 1, 2, 3, 6, 7), // two gone: 4 healthy, most urgent
		seg(4, 0, 1, 2, 3, 4, 8), // one away within the grace: wait
		marked,                   // one failed audit: 5 healthy
		seg(6, 0, 1, 2, 6, 7, 8), // 3 healthy < k: cannot be rebuilt
		seg(7, 0, 1, 2, 3, 9, 8), // distrusted + away: 4 healthy, one to move
		seg(8, 0, 1, 2, 3, 4, 5), // p(42) unknown to the peer map: gone since ever
	}
	segs[7].Peers[5] = peer.ID("p42")
	got := Plan(segs, peers, Policy{Grace: grace}, now)
	type task struct {
		seg     uint64
		missing []int
		healthy int
	}
	var gotT []task
	for _, tk := range got {
		gotT = append(gotT, task{tk.Seg, tk.Missing, tk.Healthy})
	}
	want := []task{
		{3, []int{4, 5}, 4},
		{7, []int{4}, 4},
		{2, []int{5}, 5},
		{5, []int{2}, 5},
		{8, []int{5}, 5},
	}
	if fmt.Sprint(gotT) != fmt.Sprint(want) {
		t.Fatalf("Plan =\n%v\nwant\n%v", gotT, want)
	}
	// Later, p(8) is past the grace too.
	got = Plan(segs[3:4], peers, Policy{Grace: grace}, now.Add(55*time.Minute))
	if len(got) != 1 || !slices.Equal(got[0].Missing, []int{5}) {
		t.Fatalf("after the grace: %+v", got)
	}
	// A lower threshold waits for more shards to go, then rebuilds them
	// together.
	two := seg(9, 0, 1, 2, 3, 6, 7)  // two gone
	one := seg(10, 0, 1, 2, 3, 4, 6) // one gone
	for _, tc := range []struct {
		threshold int
		want      []uint64
	}{{0, []uint64{9, 10}}, {6, []uint64{9, 10}}, {5, []uint64{9}}, {4, nil}} {
		got = Plan([]SegmentState{two, one}, peers, Policy{Grace: grace, Threshold: tc.threshold}, now)
		var segsGot []uint64
		for _, tk := range got {
			segsGot = append(segsGot, tk.Seg)
		}
		if !slices.Equal(segsGot, tc.want) {
			t.Errorf("threshold %d: repairs %v, want %v", tc.threshold, segsGot, tc.want)
		}
	}
}

// oldShardLoc is a shard location as written before audit version 2, with
// its version 1 audit root under key 3.
type oldShardLoc struct {
	ID   peerdrive.ShardID `cbor:"1,keyasint"`
	Peer []byte            `cbor:"2,keyasint"`
	Root []byte            `cbor:"3,keyasint,omitempty"`
}

// TestOldRecords: segment records written before audits (no key 3) and
// with version 1 roots (key 3) decode; their shards are audited in version
// 2, against their IDs, and pass; a repair rewrites them.
func TestOldRecords(t *testing.T) {
	net := newMemNet(8)
	sink := &sinkRec{good: map[peer.ID]int{}, bad: map[peer.ID]int{}}
	db, r := newRepairReplica(t, net, RepairOptions{
		AuditInterval: -1, RepairInterval: time.Hour, RepairGrace: time.Millisecond, RepairBytesPerSec: 1 << 30, Audit: sink,
	})
	chunks := putChunks(t, db, r, 4, 100<<10)
	syncAll(t, r)
	// Rewrite the record as an old one: shards 0-2 with a root, the
	// others without.
	var num uint64
	err := db.Update(0, func(tx *store.Txn) error {
		rec, err := getSegment(tx, num)
		if err != nil {
			return err
		}
		old := struct {
			Params segment.Params `cbor:"1,keyasint"`
			Size   uint32         `cbor:"2,keyasint"`
			Shards []oldShardLoc  `cbor:"3,keyasint"`
			Chunks []ChunkLoc     `cbor:"4,keyasint"`
			Time   int64          `cbor:"5,keyasint,omitempty"`
		}{Params: rec.Params, Size: rec.Size, Chunks: rec.Chunks, Time: rec.Time}
		for i, sh := range rec.Shards {
			o := oldShardLoc{ID: sh.ID, Peer: sh.Peer}
			if i < 3 {
				o.Root = bytes.Repeat([]byte{byte(i + 1)}, 32)
			}
			old.Shards = append(old.Shards, o)
		}
		b, err := peerdrive.Marshal(&old)
		if err != nil {
			return err
		}
		var back Segment
		if err := peerdrive.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, rec) {
			return fmt.Errorf("old record decodes to %+v (%v), want %+v", back, err, rec)
		}
		return tx.Set(segKey(num), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.auditRound(context.Background())
	if st := r.AuditStats(); st.Passed != 6 || st.Failed != 0 {
		t.Fatalf("audits of the old record's shards: %d passed, %d failed; want 6, 0", st.Passed, st.Failed)
	}
	gone := holders(t, r)[num][0]
	net.setDown(true, gone)
	r.repairPass(context.Background(), time.Now().Add(time.Second)) // past the grace
	rec, _, err := r.Locate(firstKey(chunks))
	if err != nil {
		t.Fatal(err)
	}
	for i, sh := range rec.Shards {
		if peer.ID(sh.Peer) == gone {
			t.Fatalf("shard %d still on %s after repair", i, gone)
		}
	}
	readAll(t, r, chunks)
}

// TestAuditOlderPeers: a peer older than audit version 2 answers with
// version 1 proofs, which the owner cannot check (it keeps no version 1
// root): it shows the whole shard instead. Holding it passes; a lost or
// altered shard fails and is marked for repair.
func TestAuditOlderPeers(t *testing.T) {
	net := newMemNet(6)
	sink := &sinkRec{good: map[peer.ID]int{}, bad: map[peer.ID]int{}}
	db, r := newRepairReplica(t, net, RepairOptions{
		AuditInterval: -1, RepairInterval: time.Hour, RepairGrace: time.Hour, RepairBytesPerSec: 1 << 30, Audit: sink,
	})
	putChunks(t, db, r, 4, 100<<10)
	syncAll(t, r)
	ps := slices.Sorted(maps.Keys(net.peers))
	net.mu.Lock()
	net.v1 = map[peer.ID]bool{ps[0]: true, ps[1]: true, ps[2]: true}
	clear(net.peers[ps[1]]) // lost its shards
	net.liar[ps[2]] = true  // alters what it serves
	net.mu.Unlock()
	r.auditRound(context.Background())
	st := r.AuditStats()
	for i, p := range ps {
		wantFail := i == 1 || i == 2
		if a := st.Peers[p]; (a.Failed == 1) != wantFail || a.Passed+a.Failed != 1 {
			t.Errorf("peer %d (older: %v): %+v, want failed %v", i, net.v1[p], a, wantFail)
		}
	}
	r.maint.mu.Lock()
	marked := map[peer.ID]bool{}
	for k := range r.maint.marked {
		marked[k.peer] = true
	}
	r.maint.mu.Unlock()
	if !marked[ps[1]] || !marked[ps[2]] || marked[ps[0]] {
		t.Fatalf("marked for repair: %v; want the older peers that lost or altered their shard", marked)
	}
}

func firstKey(m map[peerdrive.ChunkID][]byte) peerdrive.ChunkID {
	for k := range m {
		return k
	}
	return peerdrive.ChunkID{}
}

// TestRepairOrderAndBandwidth: the segment closest to loss is repaired
// first, and repair traffic keeps to RepairBytesPerSec.
func TestRepairOrderAndBandwidth(t *testing.T) {
	net := newMemNet(8)
	const rate = 4 << 20
	db, r := newRepairReplica(t, net, RepairOptions{
		AuditInterval: -1, RepairInterval: time.Hour, RepairGrace: time.Hour, RepairBytesPerSec: rate,
	})
	putChunks(t, db, r, 8, 600<<10) // 4.7 MB: two segments
	syncAll(t, r)
	var recs []Segment
	for num := uint64(0); ; num++ {
		var rec Segment
		err := db.View(func(tx *store.Txn) error {
			v, err := tx.Get(segKey(num))
			if err != nil {
				return err
			}
			return peerdrive.Unmarshal(v, &rec)
		})
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if len(recs) != 2 {
		t.Fatalf("%d segments, want 2", len(recs))
	}
	// Segment 0 loses one shard, segment 1 two: 1 goes first.
	m := r.maint
	m.mu.Lock()
	mark := func(rec Segment, i int) { m.marked[markKey{rec.Shards[i].ID, peer.ID(rec.Shards[i].Peer)}] = true }
	mark(recs[0], 0)
	mark(recs[1], 1)
	mark(recs[1], 4)
	m.next = time.Time{}
	m.mu.Unlock()
	net.mu.Lock()
	net.putLog = nil
	net.mu.Unlock()
	var traffic int64
	for _, rec := range recs {
		ss := int64(rec.Params.ShardSize(int(rec.Size)))
		traffic += int64(rec.Params.K) * ss
	}
	ss0, ss1 := int64(recs[0].Params.ShardSize(int(recs[0].Size))), int64(recs[1].Params.ShardSize(int(recs[1].Size)))
	traffic += ss0 + 2*ss1
	start := time.Now()
	r.repairPass(context.Background(), time.Now())
	took := time.Since(start)
	net.mu.Lock()
	log := slices.Clone(net.putLog)
	net.mu.Unlock()
	want := []peerdrive.ShardID{recs[1].Shards[1].ID, recs[1].Shards[4].ID, recs[0].Shards[0].ID}
	if !slices.Equal(log, want) {
		t.Fatalf("repair puts %v, want segment 1's two shards first, then segment 0's: %v", log, want)
	}
	// Each transfer waits until the ones before it fit in the budget: all
	// but the last put (segment 0's shard) are paid for before it starts.
	least := time.Duration(float64(traffic-ss0) / rate * float64(time.Second))
	t.Logf("repaired 3 shards (%d bytes of traffic) in %v at %d B/s: at least %v", traffic, took, rate, least)
	if took < least*9/10 {
		t.Fatalf("repair took %v, want at least %v at %d B/s", took, least, rate)
	}
	if st := r.AuditStats(); st.RepairedSegments != 2 {
		t.Fatalf("repaired %d segments, want 2", st.RepairedSegments)
	}
}
