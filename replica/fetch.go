package replica

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
)

// hedgeAfter is how long a shard request may take before another shard is
// asked for as well.
const hedgeAfter = 1500 * time.Millisecond

type recentSeg struct {
	num uint64
	seg []byte
	rec Segment
}

type fetchCall struct {
	done chan struct{}
	seg  []byte
	rec  Segment
	err  error
}

// Fetch returns the sealed bytes of chunk id from peers: it fetches any k
// verified shards of the chunk's segment, rebuilds the segment and puts the
// segment's live chunks back into the local cache. Callers check the
// chunk's hash (the GC's repack does), or use FetchVerified. The returned
// slice shares the rebuilt segment's array (no copy): callers must not
// change it.
func (r *Replica) Fetch(ctx context.Context, id peerdrive.ChunkID) ([]byte, error) {
	b, _, _, err := r.fetch(ctx, id)
	return b, err
}

// FetchVerified is Fetch for a caller that would otherwise hash the chunk
// (tree does on every read): the segment was rebuilt from shards that
// matched their hashes in its record, and the chunk's location record and
// the segment record's chunk list, written together, give the same place
// for it, so the bytes are chunk id's without another pass over them
// (hashing them cost a tenth of a cold read's CPU). When the two records
// disagree, it hashes the bytes.
func (r *Replica) FetchVerified(ctx context.Context, id peerdrive.ChunkID) ([]byte, error) {
	b, loc, rec, err := r.fetch(ctx, id)
	if err != nil {
		return nil, err
	}
	if !rec.lists(id, loc) && peerdrive.ChunkID(crypto.ContentID(b)) != id {
		return nil, fmt.Errorf("chunk %s: segment %d holds other bytes at its location: %w", id.Short(), loc.Seg, store.ErrCorrupt)
	}
	return b, nil
}

// lists reports whether rec's chunk list has chunk id at loc.
func (rec Segment) lists(id peerdrive.ChunkID, loc Location) bool {
	// The list is in the order of the chunks in the segment.
	i, found := slices.BinarySearchFunc(rec.Chunks, loc.Off, func(c ChunkLoc, off uint32) int { return cmp.Compare(c.Off, off) })
	return found && rec.Chunks[i].ID == id && rec.Chunks[i].Len == loc.Len
}

func (r *Replica) fetch(ctx context.Context, id peerdrive.ChunkID) ([]byte, Location, Segment, error) {
	var loc Location
	err := r.db.View(func(tx *store.Txn) error {
		v, err := tx.Get(idKey(tagLocation, id))
		if err != nil {
			return err
		}
		return peerdrive.Unmarshal(v, &loc)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, loc, Segment{}, fmt.Errorf("chunk %s: in no placed segment: %w", id.Short(), ErrUnavailable)
	}
	if err != nil {
		return nil, loc, Segment{}, fmt.Errorf("chunk %s location: %w", id.Short(), err)
	}
	seg, rec, err := r.fetchSegment(ctx, loc.Seg)
	if err != nil {
		return nil, loc, rec, fmt.Errorf("chunk %s: %w", id.Short(), err)
	}
	if int(loc.Off)+int(loc.Len) > len(seg) {
		return nil, loc, rec, fmt.Errorf("chunk %s: location past segment %d end: %w", id.Short(), loc.Seg, store.ErrCorrupt)
	}
	b := seg[loc.Off : loc.Off+loc.Len]
	r.refill(seg, rec)
	return b[:len(b):len(b)], loc, rec, nil
}

// fetchSegment rebuilds segment num, one fetch per segment at a time.
func (r *Replica) fetchSegment(ctx context.Context, num uint64) ([]byte, Segment, error) {
	r.fetchMu.Lock()
	if r.recent != nil && r.recent.num == num {
		c := r.recent
		r.fetchMu.Unlock()
		return c.seg, c.rec, nil
	}
	if c, ok := r.fetches[num]; ok {
		r.fetchMu.Unlock()
		select {
		case <-c.done:
			return c.seg, c.rec, c.err
		case <-ctx.Done():
			return nil, Segment{}, ctx.Err()
		}
	}
	c := &fetchCall{done: make(chan struct{})}
	r.fetches[num] = c
	r.fetchMu.Unlock()
	c.seg, c.rec, c.err = r.doFetch(ctx, num)
	close(c.done)
	r.fetchMu.Lock()
	delete(r.fetches, num)
	if c.err == nil {
		// Keep the last segment: with a cache smaller than a segment, a
		// sequential read would otherwise fetch it again for every chunk.
		r.recent = &recentSeg{num: num, seg: c.seg, rec: c.rec}
	}
	r.fetchMu.Unlock()
	return c.seg, c.rec, c.err
}

func (r *Replica) doFetch(ctx context.Context, num uint64) ([]byte, Segment, error) {
	var rec Segment
	err := r.db.View(func(tx *store.Txn) (err error) {
		rec, err = getSegment(tx, num)
		return err
	})
	if err != nil {
		return nil, rec, fmt.Errorf("segment %d record: %w", num, err)
	}
	seg, err := r.FetchSegment(ctx, rec)
	if err != nil {
		return nil, rec, fmt.Errorf("segment %d: %w", num, err)
	}
	return seg, rec, nil
}

// FetchSegment rebuilds the segment that rec describes from any k of its
// shards, verified. It needs no local record: a restore on a new machine
// fetches the drive's metadata this way.
func (r *Replica) FetchSegment(ctx context.Context, rec Segment) ([]byte, error) {
	p := rec.Params
	if len(rec.Shards) != p.N() {
		return nil, fmt.Errorf("%d shards for %d+%d: %w", len(rec.Shards), p.K, p.M, store.ErrCorrupt)
	}
	type result struct {
		i    int
		data []byte
		err  error
	}
	results := make(chan result, p.N())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Ask the data shards first (no decoding needed), the parity shards as
	// hedges when a request fails or is slow.
	order := r.shardOrder(rec)
	// Data shards are read into one array, which becomes the segment when
	// no shard is missing (no copy); a request still running when the
	// segment is rebuilt from parity writes only into its own part of it,
	// which the rebuilt segment (a new slice) does not share.
	into, _ := r.net.(shardReaderInto)
	var buf []byte
	if into != nil {
		buf = segment.DataBuffer(p, int(rec.Size))
	}
	next := 0
	launch := func() bool {
		if next >= len(order) {
			return false
		}
		i := order[next]
		next++
		go func() {
			sctx, scancel := context.WithTimeout(ctx, r.opts.ShardTimeout)
			defer scancel()
			var b []byte
			var err error
			if dst := segment.DataShard(buf, p, int(rec.Size), i); dst != nil {
				b, err = into.GetShardInto(sctx, peer.ID(rec.Shards[i].Peer), rec.Shards[i].ID, dst)
			} else {
				b, err = r.net.GetShard(sctx, peer.ID(rec.Shards[i].Peer), rec.Shards[i].ID)
			}
			results <- result{i, b, err}
		}()
		return true
	}
	for range p.K {
		launch()
	}
	shards := make([][]byte, p.N())
	have, outstanding := 0, p.K
	var errs []error
	hedge := time.NewTimer(hedgeAfter)
	defer hedge.Stop()
	for have < p.K {
		if outstanding == 0 && !launch() {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, errors.Join(errs...))
		} else if outstanding == 0 {
			outstanding++
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-hedge.C:
			if launch() {
				outstanding++
			}
			hedge.Reset(hedgeAfter)
		case res := <-results:
			outstanding--
			if res.err != nil {
				errs = append(errs, fmt.Errorf("shard %d: %w", res.i, res.err))
				r.log.Debug("shard fetch failed", "shard", res.i, "peer", peer.ID(rec.Shards[res.i].Peer), "err", res.err)
				if launch() {
					outstanding++
				}
				continue
			}
			shards[res.i] = res.data
			have++
		}
	}
	return segment.DecodeIn(p, shards, int(rec.Size), buf)
}

// shardReaderInto is a Network that can read a shard into a given array
// (net.Node does).
type shardReaderInto interface {
	GetShardInto(ctx context.Context, p peer.ID, id peerdrive.ShardID, buf []byte) ([]byte, error)
}

// peerLatency is a Network that knows its peers' service latency (net.Node).
type peerLatency interface {
	// PeerLatency returns p's measured service latency (0 if never
	// measured) and whether p is healthy.
	PeerLatency(p peer.ID) (lat time.Duration, healthy bool)
}

// Read order (shardOrder): a data shard is read before parity, which
// costs a decode, unless its peer is slower than slowFactor times the
// k-th fastest of the segment's healthy peers plus slowSlack; an unmeasured
// peer counts as unmeasuredLatency.
const (
	slowFactor        = 2
	slowSlack         = 20 * time.Millisecond
	unmeasuredLatency = 50 * time.Millisecond
)

// shardOrder lists the shards to ask for, first k first: on connected
// healthy peers, the data shards (no decode) unless their peer is much
// slower than enough others, then the others fastest first; then shards
// on connected peers that failed lately or served bad bytes; then those
// on peers not connected. A slow or failing peer holding a data shard no
// longer costs every read of its segments the hedge delay.
func (r *Replica) shardOrder(rec Segment) []int {
	connected := map[string]bool{}
	for _, p := range r.net.StoragePeers() {
		connected[string(p)] = true
	}
	pl, _ := r.net.(peerLatency)
	judge, _ := r.net.(peerJudge)
	type cand struct {
		i   int
		lat time.Duration
	}
	var healthy []cand
	var sick, down []int
	for i, s := range rec.Shards {
		p := peer.ID(s.Peer)
		switch {
		case !connected[string(s.Peer)]:
			down = append(down, i)
			continue
		case judge != nil && judge.Distrusted(p):
			sick = append(sick, i)
			continue
		}
		lat, ok := unmeasuredLatency, true
		if pl != nil {
			var l time.Duration
			if l, ok = pl.PeerLatency(p); l > 0 {
				lat = l
			}
		}
		if !ok {
			sick = append(sick, i)
			continue
		}
		healthy = append(healthy, cand{i, lat})
	}
	k := rec.Params.K
	limit := time.Duration(math.MaxInt64)
	if len(healthy) >= k {
		lats := make([]time.Duration, len(healthy))
		for j, c := range healthy {
			lats[j] = c.lat
		}
		slices.Sort(lats)
		limit = slowFactor*lats[k-1] + slowSlack
	}
	var first, rest []cand
	for _, c := range healthy {
		if c.i < k && c.lat <= limit {
			first = append(first, c)
		} else {
			rest = append(rest, c)
		}
	}
	slices.SortStableFunc(rest, func(a, b cand) int { return cmp.Compare(a.lat, b.lat) })
	out := make([]int, 0, len(rec.Shards))
	for _, c := range first {
		out = append(out, c.i)
	}
	for _, c := range rest {
		out = append(out, c.i)
	}
	out = append(out, sick...)
	return append(out, down...)
}

// refill puts the live chunks of a fetched segment back into the cache, if
// the cache has room for them: with a cache smaller than what is being read,
// writing fetched data to disk only to evict it again doubles the disk
// traffic of a read (the last segment stays in memory anyway).
func (r *Replica) refill(seg []byte, rec Segment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.CacheBytes > 0 && r.cache.size+r.cache.pinned+int64(len(seg)) > r.opts.CacheBytes {
		return
	}
	var put []ChunkLoc
	err := r.db.Update(int64(len(seg)), func(tx *store.Txn) error {
		for _, c := range rec.Chunks {
			if _, q := r.queueSet[c.ID]; q || r.cache.has(c.ID) {
				continue // queued again (a repack, gc.go): pinned, not evictable
			}
			if ok, err := tx.Has(idKey(tagLocation, c.ID)); err != nil || !ok {
				continue // deleted since
			}
			if err := tx.PutChunk(c.ID, seg[c.Off:c.Off+c.Len]); err != nil {
				return err
			}
			put = append(put, c)
		}
		return nil
	})
	if err != nil {
		r.log.Debug("cache refill skipped", "err", err)
		return
	}
	for _, c := range put {
		r.cache.add(c.ID, int64(c.Len))
	}
	r.evictLocked()
}
