package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// gcNet wraps memNet with the collector's delete and renew.
type gcNet struct{ *memNet }

func (g gcNet) del(ctx context.Context, p peer.ID, id peerdrive.ShardID) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down[p] {
		return errors.New("peer down")
	}
	delete(g.peers[p], id)
	return nil
}

func (g gcNet) renew(ctx context.Context, p peer.ID, ids []peerdrive.ShardID) ([]bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down[p] {
		return nil, errors.New("peer down")
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		_, out[i] = g.peers[p][id]
	}
	return out, nil
}

func (g gcNet) shards() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, m := range g.peers {
		n += len(m)
	}
	return n
}

// gcFixture is a replica whose chunks the test references and drops as the
// tree would.
type gcFixture struct {
	t   *testing.T
	db  *store.DB
	r   *Replica
	net gcNet
	ret Retained
	gc  *GC
}

func newGCFixture(t *testing.T) *gcFixture {
	n := gcNet{newMemNet(6)}
	db, r := newTestReplica(t, n.memNet, 0)
	f := &gcFixture{t: t, db: db, r: r, net: n}
	f.gc = NewGC(r, GCOptions{
		Retained: func(context.Context) (Retained, error) { return f.ret, nil },
		Delete:   n.del,
		Renew:    n.renew,
	})
	return f
}

// store puts chunks referenced by the tree (R record) and places them: one
// segment per call.
func (f *gcFixture) store(n, size int) []peerdrive.ChunkID {
	f.t.Helper()
	chunks := putChunks(f.t, f.db, f.r, n, size)
	var ids []peerdrive.ChunkID
	err := f.db.Update(0, func(tx *store.Txn) error {
		for id := range chunks {
			ids = append(ids, id)
			if err := tx.Set(idKey(tagInfo, id), []byte{1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.sync()
	return ids
}

func (f *gcFixture) sync() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.r.Sync(ctx, nil); err != nil {
		f.t.Fatal(err)
	}
}

// drop removes chunks' last reference as the tree does: R, L and the local
// copy in one transaction, then Dropped (unless lost, as in a crash).
func (f *gcFixture) drop(ids []peerdrive.ChunkID, notify bool) {
	f.t.Helper()
	err := f.db.Update(0, func(tx *store.Txn) error {
		for _, id := range ids {
			for _, k := range [][]byte{idKey(tagInfo, id), idKey(tagLocation, id), QueueKey(id)} {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			if err := tx.DeleteChunk(id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if notify {
		for _, id := range ids {
			f.r.Dropped(id, 0)
		}
	}
}

// snapshot makes "now" the time of the oldest retained snapshot.
func (f *gcFixture) snapshot() {
	f.ret.OK, f.ret.Oldest = true, time.Now()
}

func (f *gcFixture) run() int64 {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	freed, err := f.gc.Run(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return freed
}

func (f *gcFixture) segOf(id peerdrive.ChunkID) uint64 {
	f.t.Helper()
	_, loc, err := f.r.Locate(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return loc.Seg
}

// segment returns the record of segment num.
func (f *gcFixture) segment(num uint64) Segment {
	f.t.Helper()
	var rec Segment
	if err := f.db.View(func(tx *store.Txn) (err error) {
		rec, err = getSegment(tx, num)
		return err
	}); err != nil {
		f.t.Fatalf("segment %d record: %v", num, err)
	}
	return rec
}

func (f *gcFixture) hasSeg(num uint64) bool {
	var ok bool
	f.db.View(func(tx *store.Txn) error {
		var err error
		ok, err = tx.Has(segKey(num))
		return err
	})
	return ok
}

// A chunk a retained snapshot may reference is not collected; once every
// retained snapshot is younger than its death, its segment is, and the
// other segments stay readable.
func TestGCRetentionBoundary(t *testing.T) {
	f := newGCFixture(t)
	dead := f.store(8, 100<<10)
	live := f.store(8, 100<<10)
	deadSeg, liveSeg := f.segOf(dead[0]), f.segOf(live[0])
	if deadSeg == liveSeg {
		t.Fatal("both groups in one segment")
	}
	before := f.net.shards()
	f.snapshot() // taken while dead[] are referenced
	f.drop(dead, true)
	if freed := f.run(); freed != 0 {
		t.Fatalf("freed %d bytes while a retained snapshot may reference them", freed)
	}
	if !f.hasSeg(deadSeg) || f.net.shards() != before {
		t.Fatal("segment collected inside the retention boundary")
	}
	if st := f.gc.Stats(); st.PendingBytes == 0 {
		t.Fatal("no pending bytes reported")
	}
	f.snapshot() // the old snapshot left retention
	freed := f.run()
	if f.hasSeg(deadSeg) {
		t.Fatal("dead segment not collected")
	}
	if got := f.net.shards(); got != before-6 || freed == 0 {
		t.Fatalf("shards on peers %d -> %d (freed %d bytes), want 6 fewer", before, got, freed)
	}
	st := f.gc.Stats()
	if st.PendingBytes != 0 || st.FreedBytes != freed {
		t.Fatalf("stats = %+v", st)
	}
	// Tombstones of the collected segment are gone.
	f.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagTomb}, nil, false, func(k, _ []byte) (bool, error) {
			t.Errorf("tombstone %x left", k)
			return true, nil
		})
	})
	// The live segment is intact and reads back from peers.
	f.r.mu.Lock()
	f.r.opts.CacheBytes = 1
	f.r.evictLocked()
	f.r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range live {
		if _, err := f.r.Fetch(ctx, id); err != nil {
			t.Fatalf("live chunk: %v", err)
		}
	}
	if f.segOf(live[0]) != liveSeg || !f.hasSeg(liveSeg) {
		t.Fatal("live segment touched")
	}
}

// A chunk stored again after its death gets a new placement; the old
// segment dies with the first death, the new one lives. A death whose
// Dropped was lost (a crash) gets a tombstone at the next pass, never an
// older one.
func TestGCTombstoneRevival(t *testing.T) {
	f := newGCFixture(t)
	b := make([]byte, 200<<10)
	rand.Read(b)
	id := peerdrive.ChunkID(crypto.ContentID(b))
	put := func() {
		err := f.db.Update(int64(len(b)), func(tx *store.Txn) error {
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], uint32(len(b)))
			if err := tx.PutChunk(id, b); err != nil {
				return err
			}
			if err := tx.Set(idKey(tagInfo, id), []byte{1}); err != nil {
				return err
			}
			return tx.Set(QueueKey(id), v[:])
		})
		if err != nil {
			t.Fatal(err)
		}
		f.r.Queued(id, int64(len(b)))
		f.sync()
	}
	put()
	first := f.segOf(id)
	f.drop([]peerdrive.ChunkID{id}, true)
	put() // dedup revival: the same content stored again
	second := f.segOf(id)
	if second == first {
		t.Fatal("revived chunk not placed anew")
	}
	// The first placement's entry died at the latest when the second
	// placement committed; segment times are whole seconds, so a snapshot
	// counts as later only from the next second on.
	if freed := f.run(); freed != 0 {
		t.Fatal("collected before a snapshot later than the re-placement")
	}
	rec := f.segment(second)
	f.ret.OK, f.ret.Oldest = true, time.Unix(rec.Time+1, 1)
	f.run()
	if f.hasSeg(first) {
		t.Fatal("the first placement was not collected")
	}
	if !f.hasSeg(second) {
		t.Fatal("the revived chunk's segment was collected")
	}
	// A snapshot taken while it lives; then it dies again, but the
	// Dropped is lost.
	f.snapshot()
	f.drop([]peerdrive.ChunkID{id}, false)
	f.run()
	if !f.hasSeg(second) {
		t.Fatal("collected on a tombstone older than the retained snapshot")
	}
	f.snapshot()
	f.run()
	if f.hasSeg(second) {
		t.Fatal("not collected once the snapshot is younger than the pass's tombstone")
	}
}

// A holder that is offline keeps its shard in the segment's record; a later
// pass (even by a new collector, after a restart) deletes it.
func TestGCOfflineHolder(t *testing.T) {
	f := newGCFixture(t)
	ids := f.store(4, 100<<10)
	seg := f.segOf(ids[0])
	rec := f.segment(seg)
	off := peer.ID(rec.Shards[0].Peer)
	f.net.setDown(true, off)
	f.drop(ids, true)
	f.snapshot()
	f.run()
	if !f.hasSeg(seg) {
		t.Fatal("segment record gone while a shard is not deleted")
	}
	if st := f.gc.Stats(); st.PendingBytes == 0 {
		t.Fatalf("nothing pending with a holder offline: %+v", st)
	}
	f.net.setDown(false, off)
	g2 := NewGC(f.r, GCOptions{Retained: func(context.Context) (Retained, error) { return Retained{}, nil }, Delete: f.net.del})
	if _, err := g2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.hasSeg(seg) {
		t.Fatal("the resumed delete did not finish the segment")
	}
	f.net.mu.Lock()
	_, still := f.net.peers[off][rec.Shards[0].ID]
	f.net.mu.Unlock()
	if still {
		t.Fatal("the offline holder's shard was not deleted")
	}
}

// Objects (snapshot pieces) live while a retained snapshot names them and
// go, with their dedup entries and local copies, when none does.
func TestGCObjects(t *testing.T) {
	f := newGCFixture(t)
	obj := make([]byte, 50<<10)
	rand.Read(obj)
	id := peerdrive.ChunkID(crypto.ContentID(obj))
	if err := f.r.QueueObject(id, obj); err != nil {
		t.Fatal(err)
	}
	dedup := append([]byte{tagPieceDedup}, bytes.Repeat([]byte{7}, 32)...)
	if err := f.db.Update(0, func(tx *store.Txn) error { return tx.Set(dedup, id[:]) }); err != nil {
		t.Fatal(err)
	}
	f.sync()
	seg := f.segOf(id)
	f.snapshot()
	f.ret.Objects = map[peerdrive.ChunkID]bool{id: true}
	f.run()
	if !f.hasSeg(seg) {
		t.Fatal("a retained snapshot's object was collected")
	}
	f.ret.Objects = nil
	f.run()
	if f.hasSeg(seg) {
		t.Fatal("an object no snapshot names was not collected")
	}
	f.db.View(func(tx *store.Txn) error {
		if ok, _ := tx.Has(dedup); ok {
			t.Error("dedup entry of a collected object left")
		}
		if ok, _ := tx.HasChunk(id); ok {
			t.Error("local copy of a collected object left")
		}
		return nil
	})
	// Unknown retained snapshots: nothing new is collected.
	ids := f.store(2, 10<<10)
	f.drop(ids, true)
	f.ret = Retained{}
	f.run()
	if !f.hasSeg(f.segOfAny(ids)) {
		t.Fatal("collected with the retained snapshots unknown")
	}
}

func (f *gcFixture) segOfAny(ids []peerdrive.ChunkID) uint64 {
	var num uint64
	f.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			var rec Segment
			if err := peerdrive.Unmarshal(v, &rec); err != nil {
				return false, err
			}
			for _, c := range rec.Chunks {
				if c.ID == ids[0] {
					num = binary.BigEndian.Uint64(k[1:])
				}
			}
			return true, nil
		})
	})
	return num
}

// RenewAll renews every live shard and reports the ones a peer lost.
func TestGCRenewReportsMissing(t *testing.T) {
	f := newGCFixture(t)
	var mu sync.Mutex
	var missing []ShardLoc
	f.gc = NewGC(f.r, GCOptions{
		Retained: func(context.Context) (Retained, error) { return f.ret, nil },
		Delete:   f.net.del,
		Renew:    f.net.renew,
		OnMissing: func(seg uint64, shs []ShardLoc) {
			mu.Lock()
			missing = append(missing, shs...)
			mu.Unlock()
		},
	})
	ids := f.store(3, 10<<10)
	seg := f.segOf(ids[0])
	rec := f.segment(seg)
	lost := rec.Shards[2]
	f.net.mu.Lock()
	delete(f.net.peers[peer.ID(lost.Peer)], lost.ID)
	f.net.mu.Unlock()
	if err := f.gc.RenewAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(missing) != 1 || missing[0].ID != lost.ID {
		t.Fatalf("missing = %v, want [%s]", missing, lost.ID.Short())
	}
}

// A restore writes the drive's segment records and counter after the
// replica read its counter: new segments must not overwrite them.
func TestSegmentNumbersAfterRestore(t *testing.T) {
	f := newGCFixture(t)
	restored := Segment{Params: f.r.opts.Params, Size: 1, Chunks: []ChunkLoc{{Len: 1}}}
	v, err := peerdrive.Marshal(&restored)
	if err != nil {
		t.Fatal(err)
	}
	err = f.db.Update(0, func(tx *store.Txn) error {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], 3)
		if err := tx.Set([]byte{tagCounter, 's', 'e', 'g'}, c[:]); err != nil {
			return err
		}
		for _, n := range []uint64{0, 1, 2, 3} { // 3: a record beyond the counter
			if err := tx.Set(segKey(n), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := f.store(2, 1000)
	if got := f.segOf(ids[0]); got != 4 {
		t.Fatalf("new segment numbered %d, want 4", got)
	}
	f.db.View(func(tx *store.Txn) error {
		for _, n := range []uint64{0, 1, 2, 3} {
			if b, _ := tx.Get(segKey(n)); !bytes.Equal(b, v) {
				t.Errorf("restored segment %d overwritten", n)
			}
		}
		return nil
	})
}

// A segment whose live fraction is under RepackBelow has its live chunks
// placed anew; the old segment is then collected whole and the live chunk
// reads back from its new segment.
func TestGCRepack(t *testing.T) {
	f := newGCFixture(t)
	ids := f.store(8, 100<<10)
	old := f.segOf(ids[0])
	keep := ids[0]
	f.drop(ids[1:], true) // 1 of 8 live: 12.5% < 25%
	f.r.mu.Lock()         // not local: the repack fetches it
	f.r.opts.CacheBytes = 1
	f.r.evictLocked()
	f.r.opts.CacheBytes = 0
	f.r.mu.Unlock()
	f.snapshot()
	f.run()
	f.sync()
	moved := f.segOf(keep)
	if moved == old {
		t.Fatal("live chunk not repacked")
	}
	if !f.hasSeg(old) {
		t.Fatal("old segment collected before a snapshot later than the repack")
	}
	rec := f.segment(moved)
	f.ret.OK, f.ret.Oldest = true, time.Unix(rec.Time+1, 1)
	f.run()
	if f.hasSeg(old) {
		t.Fatal("old segment not collected after the repack")
	}
	f.r.mu.Lock()
	f.r.opts.CacheBytes = 1
	f.r.evictLocked()
	f.r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.r.Fetch(ctx, keep); err != nil {
		t.Fatalf("repacked chunk: %v", err)
	}
	if st := f.r.Stats(); st.PendingBytes != 0 {
		t.Fatalf("pending %d after the repack's upload", st.PendingBytes)
	}
}
