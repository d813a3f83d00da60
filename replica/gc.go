package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// Garbage collection of segments and renewal of shard leases:
// docs/gc.md.

// Key tags the collector reads or writes besides its own.
const (
	tagTomb       = 'F' // 'F' || chunk ID -> death time (unix ns, 8 bytes BE)
	tagInfo       = 'R' // tree: chunk information; present while the chunk is referenced
	tagPieceDedup = 'Y' // snapshot: dedup hash of a tree piece -> its ID
)

// GC defaults.
const (
	DefaultGCEvery = time.Hour
	// RepackBelow is the live fraction under which a segment would be
	// repacked (docs/gc.md §2.3; not implemented yet).
	RepackBelow = 0.25
	// deleteParallel bounds the DELETEs in flight.
	deleteParallel = 16
)

// Retained describes what the drive's retained snapshots need.
type Retained struct {
	// OK is false when the retained snapshots are not known: nothing
	// new is collected then.
	OK bool
	// Oldest is the time of the oldest retained snapshot (the time its
	// tree was read).
	Oldest time.Time
	// Objects are the manifests and tree pieces of retained snapshots.
	Objects map[peerdrive.ChunkID]bool
	// Segments hold those objects, as the snapshots' references record
	// them: their shards are renewed even when this drive has no record
	// of them (the newest snapshot's own pieces, on a restored drive).
	Segments []Segment
}

// GCOptions configure a GC.
type GCOptions struct {
	// Every is the period of passes besides those Kick asks for (0:
	// DefaultGCEvery).
	Every time.Duration
	// RenewEvery is the period of lease renewals (0: store.RenewEvery).
	RenewEvery time.Duration
	// Retained says what retained snapshots need (required).
	Retained func(ctx context.Context) (Retained, error)
	// Delete removes this drive's hold on a shard at a peer; nil also
	// when the peer no longer has it for us (required).
	Delete func(ctx context.Context, p peer.ID, id peerdrive.ShardID) error
	// Renew extends this drive's holds; held[i] is false for a shard the
	// peer does not hold for us. Nil: no renewals.
	Renew func(ctx context.Context, p peer.ID, ids []peerdrive.ShardID) ([]bool, error)
	// OnMissing receives the shards a peer said it does not hold (repair
	// re-places them). May be nil.
	OnMissing func(seg uint64, shards []ShardLoc)
	// Lock, if set, is held during a pass (the node's publish lock: no
	// publish runs while objects are judged and collected).
	Lock sync.Locker
	// Timeout bounds one DELETE (0: 10 s).
	Timeout time.Duration
	Log     *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// GCStats are the collector's figures.
type GCStats struct {
	PendingBytes int64 // shard bytes of dead data not freed yet
	FreedBytes   int64 // shard bytes whose hold was deleted since start
	Collected    int64 // segments fully collected since start
	Passes       int64
	LastPass     time.Duration
	LastErr      error
}

// GC collects the drive's dead segments and renews its shard leases.
type GC struct {
	r    *Replica
	opts GCOptions
	log  *slog.Logger

	kick   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	runMu   sync.Mutex       // one pass at a time
	deleted map[shardAt]bool // shards of segments being collected deleted so far (under runMu)
	mu      sync.Mutex
	stats   GCStats
}

// NewGC returns the collector of r's segments. Call Start to run it
// periodically, or Run for one pass.
func NewGC(r *Replica, o GCOptions) *GC {
	if o.Every == 0 {
		o.Every = DefaultGCEvery
	}
	if o.RenewEvery == 0 {
		o.RenewEvery = store.RenewEvery
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = r.log
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &GC{r: r, opts: o, log: o.Log, kick: make(chan struct{}, 1), stop: make(chan struct{}), ctx: ctx, cancel: cancel,
		deleted: map[shardAt]bool{}}
}

// Start runs passes every Every and when kicked, and renewals every
// RenewEvery (the first soon after start).
func (g *GC) Start() {
	g.wg.Add(1)
	go g.loop()
}

// Close stops the background work.
func (g *GC) Close() {
	g.cancel()
	close(g.stop)
	g.wg.Wait()
}

// Kick asks for a pass soon (after a publish).
func (g *GC) Kick() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// Stats returns the collector's figures.
func (g *GC) Stats() GCStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

func (g *GC) loop() {
	defer g.wg.Done()
	pass := time.NewTicker(g.opts.Every)
	defer pass.Stop()
	renew := time.NewTimer(min(g.opts.RenewEvery, 10*time.Second))
	defer renew.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-g.kick:
		case <-pass.C:
		case <-renew.C:
			if err := g.RenewAll(g.ctx); err != nil && g.ctx.Err() == nil {
				g.log.Warn("lease renewal incomplete", "err", err)
			}
			renew.Reset(g.opts.RenewEvery)
			continue
		}
		if _, err := g.Run(g.ctx); err != nil && g.ctx.Err() == nil {
			g.log.Warn("garbage collection pass failed", "err", err)
		}
	}
}

// shardAt identifies a shard at a holder.
type shardAt struct {
	id peerdrive.ShardID
	p  peer.ID
}

// noSegment marks a shard renewed for a retained snapshot's reference.
const noSegment = ^uint64(0)

func tombKey(id peerdrive.ChunkID) []byte { return idKey(tagTomb, id) }

// noteDeath records that chunk id lost its last reference now (replica's
// Dropped calls it, after the tree's commit).
func (r *Replica) noteDeath(id peerdrive.ChunkID) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(time.Now().UnixNano()))
	if err := r.db.Update(0, func(tx *store.Txn) error { return tx.Set(tombKey(id), v[:]) }); err != nil {
		// The next pass gives the dead entry a later tombstone.
		r.log.Warn("tombstone not written", "chunk", id.Short(), "err", err)
	}
}

// segState is one segment as a pass sees it.
type segState struct {
	num        uint64
	rec        Segment
	collecting bool                // no chunks left: deletes outstanding
	collect    bool                // every entry dead past the boundary
	deadObjs   []peerdrive.ChunkID // entries that are dead objects
	deadBytes  int64
	liveChunks []ChunkLoc // live entries that are placed tree chunks
	liveOther  bool       // a live entry that is an object or queued
	repack     bool       // mostly dead: move the live chunks out
}

// shardBytes is the size of one shard of rec.
func shardBytes(rec Segment) int64 {
	if rec.Params.K <= 0 {
		return 0
	}
	return int64(rec.Params.ShardSize(int(rec.Size)))
}

// Run makes one pass (docs/gc.md §2.2) and returns the shard bytes freed.
func (g *GC) Run(ctx context.Context) (freed int64, err error) {
	g.runMu.Lock()
	defer g.runMu.Unlock()
	start := time.Now()
	defer func() {
		g.mu.Lock()
		g.stats.Passes++
		g.stats.LastPass = time.Since(start)
		g.stats.LastErr = err
		g.mu.Unlock()
	}()
	work, pending, err := g.judge(ctx)
	if err != nil {
		return 0, err
	}
	// The segments in work are out of the drive: their deletes need no
	// lock, so a publish need not wait for slow or absent holders.
	freed, left := g.deleteShards(ctx, work)
	g.mu.Lock()
	g.stats.PendingBytes = pending + left
	g.stats.FreedBytes += freed
	g.mu.Unlock()
	if len(work) > 0 {
		g.log.Info("garbage collected", "segments", len(work), "freed_bytes", freed, "pending_bytes", pending+left, "took", time.Since(start))
	}
	return freed, ctx.Err()
}

// judge, under the publish lock, finds the dead segments and retires the
// collectable ones. It returns the segments being collected and the shard
// bytes of dead data that stays for now.
func (g *GC) judge(ctx context.Context) (work []*segState, pending int64, err error) {
	if g.opts.Lock != nil {
		g.opts.Lock.Lock()
		defer g.opts.Lock.Unlock()
	}
	ret, err := g.opts.Retained(ctx)
	if err != nil {
		// Still finish the deletes of segments already being collected.
		g.log.Warn("retained snapshots unknown; collecting nothing new", "err", err)
		ret = Retained{}
	}
	now := g.opts.Now()
	segs, tombs, pending, err := g.scan(ret, now)
	if err != nil {
		return nil, 0, err
	}
	if len(tombs) > 0 {
		if err := g.writeTombs(tombs, now); err != nil {
			return nil, 0, err
		}
	}
	repacks := 0
	for _, s := range segs {
		if s.repack && repacks < maxRepacks {
			repacks++
			if err := g.repackSeg(ctx, s); err != nil {
				g.log.Warn("segment not repacked", "segment", s.num, "err", err)
			}
			continue
		}
		if s.collect {
			if err := g.retire(s); err != nil {
				return nil, 0, err
			}
			s.collecting = true
		}
		if s.collecting {
			work = append(work, s)
		}
	}
	return work, pending, nil
}

// maxRepacks bounds the segments one pass repacks.
const maxRepacks = 8

// repackSeg queues the live chunks of a mostly-dead segment for upload
// again (docs/gc.md §2.3): the uploader packs them into new segments, and
// once their new placement commits the old entries are superseded, so a
// later pass collects the old segment whole. A chunk not in the local
// store is fetched first.
func (g *GC) repackSeg(ctx context.Context, s *segState) error {
	r := g.r
	for _, c := range s.liveChunks {
		var data []byte
		err := r.db.View(func(tx *store.Txn) error {
			b, err := tx.GetChunk(c.ID)
			if err == nil {
				data = b
				return nil
			}
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return err
		}
		if data == nil {
			fctx, cancel := context.WithTimeout(ctx, time.Minute)
			data, err = r.Fetch(fctx, c.ID)
			cancel()
			if err != nil {
				return fmt.Errorf("chunk %s: %w", c.ID.Short(), err)
			}
			if peerdrive.ChunkID(crypto.ContentID(data)) != c.ID { // Fetch does not check
				return fmt.Errorf("chunk %s: rebuilt bytes do not match: %w", c.ID.Short(), store.ErrCorrupt)
			}
		}
		if err := g.requeue(c, s.num, data); err != nil {
			return err
		}
	}
	g.log.Info("segment repacked", "segment", s.num, "live_chunks", len(s.liveChunks), "size", s.rec.Size)
	return nil
}

// requeue puts chunk c back on the upload queue, pinned, if it is still
// referenced, placed in segment num and not queued.
func (g *GC) requeue(c ChunkLoc, num uint64, data []byte) error {
	r := g.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.queueSet[c.ID]; ok {
		return nil
	}
	size := int64(len(data))
	queued := false
	err := r.db.Update(size, func(tx *store.Txn) error {
		if ok, err := tx.Has(idKey(tagInfo, c.ID)); err != nil || !ok {
			return err
		}
		if here, err := locatedIn(tx, c.ID, num); err != nil || !here {
			return err
		}
		if ok, err := tx.HasChunk(c.ID); err != nil {
			return err
		} else if !ok {
			if err := tx.PutChunk(c.ID, data); err != nil {
				return err
			}
		}
		var sz [4]byte
		binary.BigEndian.PutUint32(sz[:], uint32(size))
		queued = true
		return tx.Set(QueueKey(c.ID), sz[:])
	})
	if err != nil || !queued {
		return err
	}
	// As Queued, with the chunk taken out of the evictable part first.
	r.cache.remove(c.ID)
	r.queue = append(r.queue, c.ID)
	r.queueSet[c.ID] = size
	r.pending += size
	r.cache.addPinned(size)
	r.kick()
	return nil
}

// scan classifies every segment's entries. It returns the segments to work
// on, the dead chunks that need a tombstone, and the shard bytes of dead
// data that stays for now.
func (g *GC) scan(ret Retained, now time.Time) (segs []*segState, tombs []peerdrive.ChunkID, pending int64, err error) {
	cutoff := ret.Oldest.UnixNano()
	err = g.r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			if len(k) != 9 {
				return true, nil
			}
			s := &segState{num: binary.BigEndian.Uint64(k[1:])}
			if err := peerdrive.Unmarshal(v, &s.rec); err != nil {
				return false, fmt.Errorf("segment %d: %w", s.num, err)
			}
			if len(s.rec.Chunks) == 0 {
				s.collecting = true
				segs = append(segs, s)
				return true, nil
			}
			collectable := ret.OK
			live := false
			for _, c := range s.rec.Chunks {
				at, placed, err := location(tx, c.ID)
				if err != nil {
					return false, err
				}
				if placed && at == s.num {
					inTree, err := tx.Has(idKey(tagInfo, c.ID))
					if err != nil {
						return false, err
					}
					queued, err := tx.Has(QueueKey(c.ID))
					if err != nil {
						return false, err
					}
					if inTree && !queued {
						s.liveChunks = append(s.liveChunks, c)
					}
					if inTree || queued || ret.Objects[c.ID] || !ret.OK {
						live = true
						s.liveOther = s.liveOther || !inTree || queued
						continue
					}
					// An object no retained snapshot names.
					s.deadObjs = append(s.deadObjs, c.ID)
					s.deadBytes += int64(c.Len)
					continue
				}
				s.deadBytes += int64(c.Len)
				died, err := deathOf(tx, c.ID, at, placed)
				if err != nil {
					return false, err
				}
				if died < 0 {
					// No tombstone (a Dropped lost in a crash, a chunk
					// deleted while its segment was uploaded): start one.
					tombs = append(tombs, c.ID)
					died = now.UnixNano()
				}
				if died >= cutoff {
					collectable = false
				}
			}
			s.collect = collectable && !live
			var liveBytes int64
			for _, c := range s.liveChunks {
				liveBytes += int64(c.Len)
			}
			s.repack = collectable && live && !s.liveOther && len(s.deadObjs) == 0 && s.rec.Size > 0 &&
				float64(liveBytes) < RepackBelow*float64(s.rec.Size)
			if s.collect || s.repack {
				segs = append(segs, s)
			}
			if !s.collect && s.rec.Size > 0 && s.deadBytes > 0 {
				n := int64(len(s.rec.Shards))
				pending += shardBytes(s.rec) * n * s.deadBytes / int64(s.rec.Size)
			}
			return true, nil
		})
	})
	return segs, tombs, pending, err
}

// location returns the segment id's location record names, if any.
func location(tx *store.Txn, id peerdrive.ChunkID) (seg uint64, placed bool, err error) {
	v, err := tx.Get(idKey(tagLocation, id))
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var loc Location
	if err := peerdrive.Unmarshal(v, &loc); err != nil {
		return 0, false, err
	}
	return loc.Seg, true, nil
}

// locatedIn reports whether id's location record names segment num.
func locatedIn(tx *store.Txn, id peerdrive.ChunkID, num uint64) (bool, error) {
	seg, placed, err := location(tx, id)
	return placed && seg == num, err
}

// deathOf returns since when (unix ns) an entry of chunk id that is not its
// current location has been dead; -1 if unknown. at is the segment of its
// current location, if placed.
//
// Placed elsewhere: the entry died at the latest when the new placement
// committed (which also cleared any older tombstone), so its time, rounded
// up to the next second, bounds the death. Not placed: the tombstone
// written when it lost its last reference (placement commits clear
// tombstones, so one present is about a death after this entry's
// placement).
func deathOf(tx *store.Txn, id peerdrive.ChunkID, at uint64, placed bool) (int64, error) {
	if placed {
		rec, err := getSegment(tx, at)
		if err != nil {
			return 0, err
		}
		return (rec.Time + 1) * int64(time.Second), nil
	}
	v, err := tx.Get(tombKey(id))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return -1, nil
	case err != nil:
		return 0, err
	case len(v) != 8:
		return -1, nil
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// referenced reports whether the tree references id or it waits for
// upload.
func referenced(tx *store.Txn, id peerdrive.ChunkID) (bool, error) {
	if ok, err := tx.Has(idKey(tagInfo, id)); err != nil || ok {
		return ok, err
	}
	return tx.Has(QueueKey(id))
}

// writeTombs gives dead entries without a believable tombstone one now.
func (g *GC) writeTombs(ids []peerdrive.ChunkID, now time.Time) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(now.UnixNano()))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		err := g.r.db.Update(0, func(tx *store.Txn) error {
			for _, id := range batch {
				// A chunk revived since the scan has a new life: its
				// tombstone then is at worst "now", later than the death.
				if err := tx.Set(tombKey(id), v[:]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write tombstones: %w", err)
		}
	}
	return nil
}

// retire takes a collectable segment's chunks out of the drive in one
// transaction, leaving its record with no chunks and the shards still to
// delete (docs/gc.md §2.2, step 3).
func (g *GC) retire(s *segState) error {
	dead := map[peerdrive.ChunkID]bool{}
	for _, id := range s.deadObjs {
		dead[id] = true
	}
	r := g.r
	r.mu.Lock() // no commitSegment meanwhile
	defer r.mu.Unlock()
	var dropped []peerdrive.ChunkID
	err := r.db.Update(0, func(tx *store.Txn) error {
		for _, c := range s.rec.Chunks {
			here, err := locatedIn(tx, c.ID, s.num)
			if err != nil {
				return err
			}
			if here {
				if !dead[c.ID] {
					return fmt.Errorf("segment %d: chunk %s came back to life", s.num, c.ID.Short())
				}
				if err := tx.Delete(idKey(tagLocation, c.ID)); err != nil {
					return err
				}
				if ok, err := tx.HasChunk(c.ID); err != nil {
					return err
				} else if ok {
					if err := tx.DeleteChunk(c.ID); err != nil {
						return err
					}
					dropped = append(dropped, c.ID)
				}
			}
			if err := tx.Delete(tombKey(c.ID)); err != nil {
				return err
			}
		}
		if len(dead) > 0 {
			// A later publish must not reuse a collected piece.
			var keys [][]byte
			err := tx.Iterate([]byte{tagPieceDedup}, nil, true, func(k, v []byte) (bool, error) {
				var id peerdrive.ChunkID
				if len(v) == len(id) {
					copy(id[:], v)
					if dead[id] {
						keys = append(keys, append([]byte(nil), k...))
					}
				}
				return true, nil
			})
			if err != nil {
				return err
			}
			for _, k := range keys {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
		}
		rec := s.rec
		rec.Chunks = nil
		v, err := peerdrive.Marshal(&rec)
		if err != nil {
			return err
		}
		return tx.Set(segKey(s.num), v)
	})
	if err != nil {
		return fmt.Errorf("retire segment %d: %w", s.num, err)
	}
	for _, id := range dropped {
		r.cache.remove(id)
	}
	s.rec.Chunks = nil
	return nil
}

// deleteShards sends DELETE for the shards of segments being collected
// that no earlier pass of this process deleted, and deletes a segment's
// record once all of its shards are. It returns the shard bytes freed and
// left. The record keeps its full shard list meanwhile (repair and health
// expect n shards); which shards are done is kept in memory only: after a
// restart every DELETE is sent again, which is harmless (a hold already
// gone answers not-found or not-owner, both success here).
func (g *GC) deleteShards(ctx context.Context, segs []*segState) (freed, left int64) {
	sem := make(chan struct{}, deleteParallel)
	for _, s := range segs {
		if ctx.Err() != nil {
			break
		}
		size := shardBytes(s.rec)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, sh := range s.rec.Shards {
			k := shardAt{sh.ID, peer.ID(sh.Peer)}
			mu.Lock()
			done := g.deleted[k]
			mu.Unlock()
			if done {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func(sh ShardLoc) {
				defer wg.Done()
				defer func() { <-sem }()
				dctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
				defer cancel()
				if err := g.opts.Delete(dctx, k.p, sh.ID); err != nil {
					g.log.Debug("shard delete failed; will retry", "segment", s.num, "shard", sh.ID.Short(), "err", err)
					return
				}
				mu.Lock()
				g.deleted[k] = true
				freed += size
				mu.Unlock()
			}(sh)
		}
		wg.Wait()
		rest := 0
		for _, sh := range s.rec.Shards {
			if !g.deleted[shardAt{sh.ID, peer.ID(sh.Peer)}] {
				rest++
			}
		}
		left += size * int64(rest)
		if rest > 0 {
			continue
		}
		if err := g.r.db.Update(0, func(tx *store.Txn) error { return tx.Delete(segKey(s.num)) }); err != nil {
			g.log.Warn("collected segment's record not deleted", "segment", s.num, "err", err)
			continue
		}
		for _, sh := range s.rec.Shards {
			delete(g.deleted, shardAt{sh.ID, peer.ID(sh.Peer)})
		}
		g.mu.Lock()
		g.stats.Collected++
		g.mu.Unlock()
	}
	return freed, left
}

// RenewAll renews the leases of every shard of every live segment, in
// batches per peer, and hands the shards a peer no longer holds to
// OnMissing. Errors of single peers are joined; the others are renewed.
func (g *GC) RenewAll(ctx context.Context) error {
	if g.opts.Renew == nil {
		return nil
	}
	type ref struct {
		seg uint64
		sh  ShardLoc
	}
	byPeer := map[peer.ID][]ref{}
	seen := map[shardAt]bool{}
	add := func(num uint64, sh ShardLoc) {
		k := shardAt{sh.ID, peer.ID(sh.Peer)}
		if !seen[k] {
			seen[k] = true
			byPeer[k.p] = append(byPeer[k.p], ref{num, sh})
		}
	}
	err := g.r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			if len(k) != 9 {
				return true, nil
			}
			var rec Segment
			if err := peerdrive.Unmarshal(v, &rec); err != nil {
				return false, err
			}
			if len(rec.Chunks) == 0 {
				return true, nil // being collected: let the leases run out
			}
			num := binary.BigEndian.Uint64(k[1:])
			for _, sh := range rec.Shards {
				add(num, sh)
			}
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	if ret, err := g.opts.Retained(ctx); err == nil && ret.OK {
		for _, s := range ret.Segments {
			for _, sh := range s.Shards {
				add(noSegment, sh)
			}
		}
	}
	var errs []error
	for p, refs := range byPeer {
		ids := make([]peerdrive.ShardID, len(refs))
		for i, r := range refs {
			ids[i] = r.sh.ID
		}
		held, err := g.opts.Renew(ctx, p, ids)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		missing := map[uint64][]ShardLoc{}
		for i, h := range held {
			if !h && i < len(refs) {
				missing[refs[i].seg] = append(missing[refs[i].seg], refs[i].sh)
			}
		}
		delete(missing, noSegment) // a retained snapshot's object we have no record of
		for seg, shs := range missing {
			g.log.Warn("peer no longer holds shards", "peer", p, "segment", seg, "shards", len(shs))
			if g.opts.OnMissing != nil {
				g.opts.OnMissing(seg, shs)
			}
		}
	}
	return errors.Join(errs...)
}

// freeSegNum returns the first segment number from num on that is free: not
// below the stored counter and without a segment record. A restore loads
// the counter and the segment records of the drive after the replica read
// its counter; numbering from the stale one would overwrite them.
func freeSegNum(tx *store.Txn, num uint64) (uint64, error) {
	v, err := tx.Get([]byte{tagCounter, 's', 'e', 'g'})
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return 0, err
	case len(v) == 8:
		num = max(num, binary.BigEndian.Uint64(v))
	}
	for {
		ok, err := tx.Has(segKey(num))
		if err != nil || !ok {
			return num, err
		}
		num++
	}
}
