package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
)

// maxSegmentsInFlight is how many segments are encoded and sent at once.
const maxSegmentsInFlight = 3

// minScanGap is the least time between two reads of the upload queue (a
// variable for tests).
var minScanGap = 100 * time.Millisecond

type queued struct {
	id   peerdrive.ChunkID
	size int64
}

// uploader packs queued chunks into segments and places them, until Close.
func (r *Replica) uploader() {
	defer r.wg.Done()
	backoff := time.Duration(0)
	var lastScan time.Time
	sem := make(chan struct{}, maxSegmentsInFlight)
	var segWG sync.WaitGroup
	defer segWG.Wait()
	for {
		var timer <-chan time.Time
		if backoff > 0 {
			timer = time.After(backoff)
		} else {
			timer = time.After(r.opts.PackDelay / 2)
		}
		select {
		case <-r.stop:
			return
		case <-r.wake:
		case <-timer:
		}
		// Every write of a new chunk wakes the uploader; reading the queue
		// for each would cost O(queue) per chunk. Scan at most every
		// minScanGap, and during a back-off only when a sync asks.
		// A sync that asks meanwhile ends the wait: Publish syncs three
		// times in a row, and each would otherwise wait out the gap.
		for {
			r.mu.Lock()
			flush := r.flushReq
			r.mu.Unlock()
			wait := minScanGap - time.Since(lastScan)
			if backoff > 0 {
				wait = max(wait, backoff-time.Since(lastScan))
			}
			if wait <= 0 || flush {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-r.wake:
			case <-t.C:
			}
			t.Stop()
		}
		if !r.yield() {
			return
		}
		lastScan = time.Now()
		if len(r.net.StoragePeers()) == 0 {
			r.mu.Lock()
			waiting := r.pending > 0
			r.mu.Unlock()
			if waiting {
				r.setErr(ErrNoPeers)
				backoff = nextBackoff(backoff)
			}
			continue
		}
		batches, err := r.nextBatches()
		if err != nil {
			r.log.Error("upload queue unreadable", "err", err)
			continue
		}
		failed := false
		var fmu sync.Mutex
		for _, b := range batches {
			select {
			case sem <- struct{}{}:
			case <-r.stop:
				return
			}
			segWG.Add(1)
			go func(b []queued) {
				defer segWG.Done()
				defer func() { <-sem }()
				if err := r.uploadSegment(r.ctx, b); err != nil {
					if r.ctx.Err() == nil {
						r.log.Warn("segment upload failed; will retry", "chunks", len(b), "err", err)
					}
					r.setErr(err)
					fmu.Lock()
					failed = true
					fmu.Unlock()
				}
				r.mu.Lock()
				for _, q := range b {
					delete(r.inflight, q.id)
				}
				r.cond.Broadcast()
				r.mu.Unlock()
				r.kick()
			}(b)
		}
		fmu.Lock()
		f := failed
		fmu.Unlock()
		if f {
			backoff = nextBackoff(backoff)
		} else if len(batches) > 0 {
			backoff = 0
		}
	}
}

// yield waits while a writer keeps adding chunks (see Options.YieldGap).
// It returns false when the replica stops.
func (r *Replica) yield() bool {
	for {
		d := r.yieldFor()
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-r.stop:
			t.Stop()
			return false
		case <-r.wake: // another chunk, or a sync
		case <-t.C:
		}
		t.Stop()
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 500 * time.Millisecond
	}
	return min(2*d, 30*time.Second)
}

func (r *Replica) setErr(err error) {
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
}

// nextBatches reads the queue and cuts the chunks not already in flight
// into segment-sized batches. A last partial batch waits for more chunks
// unless its oldest chunk waited PackDelay or a sync asked for everything.
func (r *Replica) nextBatches() ([][]queued, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var fresh []queued
	oldest := now
	live := r.queue[:0] // compact: keep only IDs still queued
	for _, id := range r.queue {
		size, ok := r.queueSet[id]
		if !ok {
			delete(r.firstSeen, id)
			continue
		}
		live = append(live, id)
		t, seen := r.firstSeen[id]
		if !seen {
			t = now
			r.firstSeen[id] = t
		}
		if r.inflight[id] {
			continue
		}
		if t.Before(oldest) {
			oldest = t
		}
		fresh = append(fresh, queued{id, size})
	}
	clear(r.queue[len(live):])
	r.queue = live
	flush := r.flushReq || now.Sub(oldest) >= r.opts.PackDelay
	var batches [][]queued
	var cur []queued
	var size int64
	for _, q := range fresh {
		cur = append(cur, q)
		size += q.size
		if size >= segment.TargetSize {
			batches = append(batches, cur)
			cur, size = nil, 0
		}
	}
	if len(cur) > 0 && flush {
		batches = append(batches, cur)
	}
	if len(cur) == 0 || flush {
		r.flushReq = false
	}
	for _, b := range batches {
		for _, q := range b {
			r.inflight[q.id] = true
		}
	}
	return batches, nil
}

// uploadSegment packs the chunks of b, erasure-codes them, places every
// shard and records the placement.
func (r *Replica) uploadSegment(ctx context.Context, b []queued) error {
	var total int
	for _, q := range b {
		total += int(q.size)
	}
	p := r.opts.Params
	seg := segBuffer(p, total) // packed in place: no copy to cut shards
	// Every PUT is over (place waits for them) when this returns.
	defer func() { segBufs.Put(&seg) }()
	var chunks []ChunkLoc
	err := r.db.View(func(tx *store.Txn) error {
		for _, q := range b {
			off := len(seg)
			var err error
			seg, _, err = tx.AppendChunk(seg, q.id)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			chunks = append(chunks, ChunkLoc{ID: q.id, Off: uint32(off), Len: uint32(len(seg) - off)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(chunks) == 0 {
		return nil
	}
	enc, err := segment.Encode(p, seg)
	if err != nil {
		return err
	}
	placed, err := r.place(ctx, enc)
	if err != nil {
		return err
	}
	rec := Segment{Params: p, Size: uint32(len(seg)), Shards: placed, Chunks: chunks, Time: time.Now().Unix()}
	if err := r.commitSegment(rec); err != nil {
		return err
	}
	r.committed(placed, int64(p.ShardSize(len(seg))))
	return nil
}

// committed counts shards of size bytes a segment record now names on
// their peers in HeldBy at once (the next health check recounts all) and
// tells Options.Committed.
func (r *Replica) committed(shards []ShardLoc, size int64) {
	if m := r.maint; m != nil {
		m.mu.Lock()
		for _, sh := range shards {
			m.held[peer.ID(sh.Peer)] += size
		}
		m.mu.Unlock()
	}
	if f := r.opts.Committed; f != nil {
		f(shards)
	}
}

// segBufs holds the arrays of segments uploaded, for the next ones
// (*[]byte, each of a segment.Buffer's capacity).
var segBufs sync.Pool

// segBuffer is segment.Buffer(p, size), reusing an array from segBufs if
// one is large enough.
func segBuffer(p segment.Params, size int) []byte {
	if b, ok := segBufs.Get().(*[]byte); ok && cap(*b) >= p.ShardSize(size)*p.N() {
		return (*b)[:0]
	}
	return segment.Buffer(p, size)
}

// place sends every shard to a peer: distinct peers while there are enough,
// else spread evenly. A failed shard is retried on the next best peer.
func (r *Replica) place(ctx context.Context, enc *segment.Encoded) ([]ShardLoc, error) {
	peers := r.placementOrder()
	if len(peers) == 0 {
		return nil, ErrNoPeers
	}
	n := len(enc.Shards)
	out := make([]ShardLoc, n)
	errs := make([]error, n)
	var mu sync.Mutex
	load := map[peer.ID]int{} // shards of this segment per peer
	pick := func(exclude map[peer.ID]bool) (peer.ID, bool) {
		mu.Lock()
		defer mu.Unlock()
		best, bestLoad := peer.ID(""), int(^uint(0)>>1)
		for _, p := range peers { // ranked: the first with the least load wins
			if exclude[p] {
				continue
			}
			if load[p] < bestLoad {
				best, bestLoad = p, load[p]
			}
		}
		if best == "" {
			return "", false
		}
		load[best]++
		return best, true
	}
	var wg sync.WaitGroup
	for i := range enc.Shards {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tried := map[peer.ID]bool{}
			for attempt := 0; attempt < 4; attempt++ {
				p, ok := pick(tried)
				if !ok {
					break
				}
				tried[p] = true
				sctx, cancel := context.WithTimeout(ctx, r.opts.ShardTimeout)
				err := r.net.PutShard(sctx, p, enc.IDs[i], enc.Shards[i])
				cancel()
				if err == nil {
					out[i] = ShardLoc{ID: enc.IDs[i], Peer: []byte(p)}
					errs[i] = nil
					return
				}
				mu.Lock()
				load[p]--
				mu.Unlock()
				errs[i] = fmt.Errorf("shard %d to %s: %w", i, p.ShortString(), err)
				if ctx.Err() != nil {
					return
				}
			}
			if errs[i] == nil {
				errs[i] = fmt.Errorf("shard %d: %w", i, ErrNoPeers)
			}
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Placer is a Network that orders peers for a new segment's shards, best
// first (net.Node: usable peers in a random order weighted toward low
// latency and free space, then the others ranked).
type Placer interface {
	PlacementOrder(ps []peer.ID) []peer.ID
}

// placementOrder lists the storage peers for a new segment, best first: the
// Network's order if it is a Placer, else a random one.
func (r *Replica) placementOrder() []peer.ID {
	ps := r.net.StoragePeers()
	if o, ok := r.net.(Placer); ok {
		return o.PlacementOrder(ps)
	}
	rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	return ps
}

// commitSegment records a placed segment and takes its chunks off the
// queue, in one transaction; the chunks become evictable.
func (r *Replica) commitSegment(rec Segment) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	num := r.nextSeg
	var moved []ChunkLoc
	err := r.db.Update(0, func(tx *store.Txn) error {
		var err error
		if num, err = freeSegNum(tx, num); err != nil { // gc.go: never over a restored segment
			return err
		}
		v, err := peerdrive.Marshal(&rec)
		if err != nil {
			return err
		}
		if err := tx.Set(segKey(num), v); err != nil {
			return err
		}
		for _, c := range rec.Chunks {
			if err := tx.Delete(tombKey(c.ID)); err != nil { // a new life (gc.go)
				return err
			}
			ok, err := tx.Has(QueueKey(c.ID))
			if err != nil {
				return err
			}
			if !ok {
				continue // deleted meanwhile
			}
			lv, err := peerdrive.Marshal(&Location{Seg: num, Off: c.Off, Len: c.Len})
			if err != nil {
				return err
			}
			if err := tx.Set(idKey(tagLocation, c.ID), lv); err != nil {
				return err
			}
			if err := tx.Delete(QueueKey(c.ID)); err != nil {
				return err
			}
			moved = append(moved, c)
		}
		var cb [8]byte
		binary.BigEndian.PutUint64(cb[:], num+1)
		return tx.Set([]byte{tagCounter, 's', 'e', 'g'}, cb[:])
	})
	if err != nil {
		return err
	}
	r.nextSeg = num + 1
	r.lastPlaced = time.Now()
	for _, c := range moved {
		if size, ok := r.queueSet[c.ID]; ok {
			delete(r.queueSet, c.ID)
			r.cache.addPinned(-size)
			r.pending -= size
		}
		r.cache.add(c.ID, int64(c.Len))
	}
	r.lastErr = nil
	r.cond.Broadcast()
	r.evictLocked()
	return nil
}
