// Package replica keeps the drive's chunks on peers: it packs chunks that
// wait for upload into segments, erasure-codes them and places the shards on
// distinct peers; it fetches chunks back from any k shards when the local
// cache no longer has them; and it bounds the local cache. It moves only
// ciphertext and never imports fs.
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
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
)

// Network is what replica needs of the peer network (net.Node implements it).
type Network interface {
	// StoragePeers are the connected peers that store shards.
	StoragePeers() []peer.ID
	// RankPeers orders peers best first (healthy, not full, low latency).
	RankPeers(ps []peer.ID) []peer.ID
	PutShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, data []byte) error
	// GetShard returns the shard's bytes, verified against id. A peer that
	// does not hold the shard gives an error matching fs.ErrNotExist.
	GetShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) ([]byte, error)
}

// Errors callers branch on.
var (
	// ErrUnavailable: too few shards of a chunk's segment could be fetched.
	ErrUnavailable = errors.New("chunk unavailable: too few shards reachable")
	ErrNoPeers     = errors.New("no storage peers")
)

// Key tags (docs/format.md, "Replication records").
const (
	tagQueue    = 'U' // 'U' || chunk ID: chunk waiting for upload (written by tree)
	tagLocation = 'L' // 'L' || chunk ID -> Location
	tagSegment  = 'G' // 'G' || segment number (8 bytes) -> Segment
	tagCounter  = 'Z' // 'Z' "seg" -> next segment number
)

// Location is where a chunk's sealed bytes are inside a segment.
type Location struct {
	Seg uint64 `cbor:"1,keyasint"`
	Off uint32 `cbor:"2,keyasint"`
	Len uint32 `cbor:"3,keyasint"`
}

// ShardLoc is one placed shard. Records written before audit version 2 may
// hold key 3, a version 1 audit root: it is ignored (version 2 audits
// against the ID, docs/audit.md §3).
type ShardLoc struct {
	ID   peerdrive.ShardID `cbor:"1,keyasint"`
	Peer []byte            `cbor:"2,keyasint"` // libp2p peer ID, binary form
}

// ChunkLoc lists a chunk inside a segment.
type ChunkLoc struct {
	ID  peerdrive.ChunkID `cbor:"1,keyasint"`
	Off uint32            `cbor:"2,keyasint"`
	Len uint32            `cbor:"3,keyasint"`
}

// Segment is the record of a placed segment.
type Segment struct {
	Params segment.Params `cbor:"1,keyasint"`
	Size   uint32         `cbor:"2,keyasint"`
	Shards []ShardLoc     `cbor:"3,keyasint"`
	Chunks []ChunkLoc     `cbor:"4,keyasint"`
	Time   int64          `cbor:"5,keyasint"`
}

func segKey(n uint64) []byte {
	k := make([]byte, 9)
	k[0] = tagSegment
	binary.BigEndian.PutUint64(k[1:], n)
	return k
}

// getSegment reads the record of segment num.
func getSegment(tx *store.Txn, num uint64) (Segment, error) {
	var rec Segment
	v, err := tx.Get(segKey(num))
	if err != nil {
		return rec, err
	}
	return rec, peerdrive.Unmarshal(v, &rec)
}

func idKey(tag byte, id peerdrive.ChunkID) []byte { return append([]byte{tag}, id[:]...) }

// QueueKey is the key tree writes when it stores a new chunk, in the same
// transaction, so that no chunk is ever committed without being queued.
func QueueKey(id peerdrive.ChunkID) []byte { return idKey(tagQueue, id) }

// Options of a Replica.
type Options struct {
	Params     segment.Params
	CacheBytes int64         // bound of sealed chunk bytes kept locally (0: no bound)
	PackDelay  time.Duration // how long a partial segment waits for more chunks (0: 1 s)
	Log        *slog.Logger
	// ShardTimeout bounds one shard transfer (0: 60 s).
	ShardTimeout time.Duration
	// Uploads yield to a writer: while new chunks keep coming (the last one
	// less than YieldGap ago) and less than YieldBytes waits, the uploader
	// waits, so that a burst of writes goes at the local disk's speed
	// instead of sharing the CPU with its own upload, which follows at
	// once. A sync never waits. 0 takes DefaultYieldGap and half of
	// CacheBytes, at most DefaultYieldBytes; a negative YieldGap turns it
	// off.
	YieldGap   time.Duration
	YieldBytes int64
	// StallAfter is how long writers wait for room in a full cache while
	// no segment gets placed before they are let through (0: 30 s; see
	// WaitRoom).
	StallAfter time.Duration
	// Committed, if set, is told the shards a segment record gained each
	// time one commits (a new segment, a repair), after the commit (the
	// ledger counts what peers hold for us by it, node/ledger.go).
	Committed     func(shards []ShardLoc)
	RepairOptions // audits and repair (audit.go, repair.go)
}

// Replica runs replication for one drive.
type Replica struct {
	db   *store.DB
	net  Network
	opts Options
	log  *slog.Logger

	wake   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	cancel context.CancelFunc
	ctx    context.Context

	mu      sync.Mutex
	cond    *sync.Cond
	pending int64 // sealed bytes waiting for upload
	// The upload queue in memory, in arrival order; the U records are its
	// durable copy, read once at start. queue may hold IDs no longer in
	// queueSet (dropped or placed): they are skipped and compacted away.
	queue     []peerdrive.ChunkID
	queueSet  map[peerdrive.ChunkID]int64
	inflight  map[peerdrive.ChunkID]bool
	flushReq  bool
	lastNew   time.Time // when the last chunk was queued
	lastErr   error
	health    Health
	nextSeg   uint64
	cache     *lru
	fetchMu   sync.Mutex
	fetches   map[uint64]*fetchCall
	recent    *recentSeg // the last segment fetched (under fetchMu)
	firstSeen map[peerdrive.ChunkID]time.Time
	maint     *maintenance // audits and repair (audit.go, repair.go)

	// lastPlaced is when a segment was last placed, fullSince when the
	// cache last became full of chunks waiting (zero while it is not),
	// lastOverflowLog when WaitRoom last said it let a write past the
	// bound (cache.go).
	lastPlaced, fullSince, lastOverflowLog time.Time
}

// New returns a Replica over db. Call Start to run it.
func New(db *store.DB, n Network, o Options) (*Replica, error) {
	if o.PackDelay == 0 {
		o.PackDelay = time.Second
	}
	if o.StallAfter == 0 {
		o.StallAfter = 30 * time.Second
	}
	if o.ShardTimeout == 0 {
		o.ShardTimeout = 60 * time.Second
	}
	if o.YieldGap == 0 {
		o.YieldGap = DefaultYieldGap
	}
	if o.YieldBytes == 0 {
		o.YieldBytes = DefaultYieldBytes
		if o.CacheBytes > 0 {
			o.YieldBytes = min(o.CacheBytes/2, DefaultYieldBytes)
		}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Params.K == 0 {
		o.Params = segment.Params{K: 12, M: 4}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replica{
		db: db, net: n, opts: o, log: o.Log,
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
		ctx: ctx, cancel: cancel,
		inflight: map[peerdrive.ChunkID]bool{}, fetches: map[uint64]*fetchCall{},
		queueSet:  map[peerdrive.ChunkID]int64{},
		firstSeen: map[peerdrive.ChunkID]time.Time{},
		cache:     newLRU(),
	}
	r.cond = sync.NewCond(&r.mu)
	if err := r.load(); err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

// load reads the segment counter and sizes up the cache.
func (r *Replica) load() error {
	return r.db.View(func(tx *store.Txn) error {
		v, err := tx.Get([]byte{tagCounter, 's', 'e', 'g'})
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case len(v) == 8:
			r.nextSeg = binary.BigEndian.Uint64(v)
		default:
			return fmt.Errorf("segment counter: %w", store.ErrCorrupt)
		}
		if err := tx.Iterate([]byte{tagQueue}, nil, true, func(k, v []byte) (bool, error) {
			var id peerdrive.ChunkID
			copy(id[:], k[1:])
			var size int64
			if len(v) == 4 {
				size = int64(binary.BigEndian.Uint32(v))
			}
			r.queue = append(r.queue, id)
			r.queueSet[id] = size
			r.pending += size
			return true, nil
		}); err != nil {
			return err
		}
		return tx.IterateChunks(func(id peerdrive.ChunkID, size int64) (bool, error) {
			if _, ok := r.queueSet[id]; ok {
				r.cache.addPinned(size)
			} else {
				r.cache.add(id, size)
			}
			return true, nil
		})
	})
}

// Start runs the uploader and the cache keeper.
func (r *Replica) Start() {
	r.startMaintenance()
	r.wg.Add(2)
	go r.uploader()
	go r.keeper()
}

// Close stops background work; queued chunks stay queued for next time.
func (r *Replica) Close() {
	r.cancel()
	close(r.stop)
	r.mu.Lock()
	r.cond.Broadcast()
	r.mu.Unlock()
	r.wg.Wait()
}

// Queued tells the uploader that a new chunk waits (tree calls it after the
// commit that wrote its queue record).
func (r *Replica) Queued(id peerdrive.ChunkID, sealedBytes int64) {
	r.mu.Lock()
	if _, ok := r.queueSet[id]; !ok {
		r.queue = append(r.queue, id)
		r.queueSet[id] = sealedBytes
		r.pending += sealedBytes
		r.cache.addPinned(sealedBytes)
	}
	r.lastNew = time.Now()
	r.mu.Unlock()
	r.kick()
}

// Defaults of Options.YieldGap and YieldBytes.
const (
	DefaultYieldGap   = 250 * time.Millisecond
	DefaultYieldBytes = 1 << 30
)

// yieldFor says how long the uploader should still leave the CPU and the
// disk to a writer (see Options.YieldGap); 0 when it should go on.
func (r *Replica) yieldFor() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.YieldGap < 0 || r.flushReq || r.pending >= r.opts.YieldBytes {
		return 0
	}
	return max(r.opts.YieldGap-time.Since(r.lastNew), 0)
}

func (r *Replica) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Dropped tells the replica that a chunk was deleted locally (tree calls it
// after the transaction that deleted the chunk's last reference).
func (r *Replica) Dropped(id peerdrive.ChunkID, sealedBytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if size, ok := r.queueSet[id]; ok { // not uploaded yet: pinned and queued
		delete(r.queueSet, id)
		r.cache.addPinned(-size)
		r.pending -= size
		return
	}
	r.noteDeath(id) // placed: tombstone for the collector (gc.go)
	r.cache.remove(id)
}

// QueueObject stores sealed bytes that are not file data (the drive's
// metadata, published as snapshots) and queues them for upload like a chunk.
// It is a no-op for an object already stored or placed.
func (r *Replica) QueueObject(id peerdrive.ChunkID, sealed []byte) error {
	queued := false
	err := r.db.Update(int64(len(sealed)), func(tx *store.Txn) error {
		if ok, err := tx.HasChunk(id); err != nil || ok {
			return err
		}
		if ok, err := tx.Has(idKey(tagLocation, id)); err != nil || ok {
			return err
		}
		if err := tx.PutChunk(id, sealed); err != nil {
			return err
		}
		var sz [4]byte
		binary.BigEndian.PutUint32(sz[:], uint32(len(sealed)))
		queued = true
		return tx.Set(QueueKey(id), sz[:])
	})
	if err == nil && queued {
		r.Queued(id, int64(len(sealed)))
	}
	return err
}

// Locate returns where a placed chunk or object is: its segment record and
// place in it. ErrUnavailable if it is not placed (yet).
func (r *Replica) Locate(id peerdrive.ChunkID) (Segment, Location, error) {
	var loc Location
	var rec Segment
	err := r.db.View(func(tx *store.Txn) error {
		v, err := tx.Get(idKey(tagLocation, id))
		if err != nil {
			return err
		}
		if err := peerdrive.Unmarshal(v, &loc); err != nil {
			return err
		}
		v, err = tx.Get(segKey(loc.Seg))
		if err != nil {
			return err
		}
		return peerdrive.Unmarshal(v, &rec)
	})
	if errors.Is(err, store.ErrNotFound) {
		return rec, loc, fmt.Errorf("%s: %w", id.Short(), ErrUnavailable)
	}
	return rec, loc, err
}

// Accessed marks a chunk as recently used.
func (r *Replica) Accessed(id peerdrive.ChunkID) {
	r.mu.Lock()
	r.cache.touch(id)
	r.mu.Unlock()
}

// Stats are replication figures for status.
type Stats struct {
	PendingBytes int64
	CachedBytes  int64
	LastErr      error // the last upload failure, until an upload succeeds
	Health
}

// Stats returns the current figures.
func (r *Replica) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{PendingBytes: r.pending, CachedBytes: r.cache.size + r.cache.pinned, LastErr: r.lastErr, Health: r.health}
}

// Sync waits until every chunk queued so far is placed at full redundancy,
// calling progress with the bytes still pending now and then.
func (r *Replica) Sync(ctx context.Context, progress func(pending int64)) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	seg0 := r.nextSeg
	r.flushReq = true
	r.kick()
	last := time.Time{}
	for r.pending > 0 || len(r.inflight) > 0 {
		if err := ctx.Err(); err != nil {
			if r.lastErr != nil {
				return fmt.Errorf("%w (last upload error: %v)", err, r.lastErr)
			}
			return err
		}
		select {
		case <-r.stop:
			return errors.New("replica stopped")
		default:
		}
		if progress != nil && time.Since(last) > 500*time.Millisecond {
			p := r.pending
			r.mu.Unlock()
			progress(p)
			r.mu.Lock()
			last = time.Now()
		}
		r.flushReq = true
		waitCond(r.cond, 500*time.Millisecond)
	}
	if r.nextSeg != seg0 {
		// What status says of redundancy (peers that may be lost, chunks
		// under-replicated) must include what was just placed, not wait
		// for the keeper's next check.
		r.mu.Unlock()
		r.checkHealth()
		r.mu.Lock()
	}
	if progress != nil {
		progress(0)
	}
	return nil
}

// waitCond waits on c (whose lock is held) for at most d.
func waitCond(c *sync.Cond, d time.Duration) {
	t := time.AfterFunc(d, func() {
		c.L.Lock()
		c.Broadcast()
		c.L.Unlock()
	})
	c.Wait()
	t.Stop()
}
