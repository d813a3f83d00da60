package replica

import (
	"container/list"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// lru tracks the sealed chunks kept locally. Chunks waiting for upload are
// pinned: counted, never evicted. Uploaded chunks are in LRU order.
type lru struct {
	order  *list.List // front: most recently used
	m      map[peerdrive.ChunkID]*list.Element
	size   int64 // bytes of evictable chunks
	pinned int64 // bytes of chunks waiting for upload
}

type lruEntry struct {
	id   peerdrive.ChunkID
	size int64
}

func newLRU() *lru { return &lru{order: list.New(), m: map[peerdrive.ChunkID]*list.Element{}} }

func (c *lru) add(id peerdrive.ChunkID, size int64) {
	if e, ok := c.m[id]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.m[id] = c.order.PushFront(&lruEntry{id, size})
	c.size += size
}

func (c *lru) addPinned(n int64) { c.pinned = max(0, c.pinned+n) }

func (c *lru) touch(id peerdrive.ChunkID) {
	if e, ok := c.m[id]; ok {
		c.order.MoveToFront(e)
	}
}

func (c *lru) remove(id peerdrive.ChunkID) bool {
	e, ok := c.m[id]
	if !ok {
		return false
	}
	c.order.Remove(e)
	delete(c.m, id)
	c.size -= e.Value.(*lruEntry).size
	return true
}

func (c *lru) has(id peerdrive.ChunkID) bool { _, ok := c.m[id]; return ok }

// Full reports whether the cache holds more than its bound in chunks that
// cannot be evicted yet: writers should wait for uploads (back-pressure).
func (r *Replica) Full() bool {
	if r.opts.CacheBytes <= 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cache.pinned > r.opts.CacheBytes
}

// WaitRoom blocks while the cache is full of chunks waiting for upload
// and uploads are under way: back-pressure keeps the cache within its
// bound when the network is slower than the writer. It does not wait while
// no storage peer is connected, nor once no segment has been placed for
// Options.StallAfter: then nothing would drain the queue (an offline
// laptop, peers all full or refusing), and a writer held back would wait
// for ever, in an uninterruptible sleep if it is the kernel's write-back.
// The data then stays in the local store beyond the bound, as much as the
// disk holds (its reserve refuses writes with ENOSPC), and is uploaded when
// peers take it.
func (r *Replica) WaitRoom(stop <-chan struct{}) {
	for {
		full, stalled := r.room()
		if !full {
			return
		}
		if stalled || len(r.net.StoragePeers()) == 0 {
			r.noteOverflow()
			return
		}
		r.kick()
		select {
		case <-stop:
			return
		case <-r.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// room reports whether the cache is full of chunks waiting for upload
// (Full), and whether uploads stalled: no segment placed for StallAfter
// since the cache became full.
func (r *Replica) room() (full, stalled bool) {
	if r.opts.CacheBytes <= 0 {
		return false, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache.pinned <= r.opts.CacheBytes {
		r.fullSince = time.Time{}
		return false, false
	}
	now := time.Now()
	if r.fullSince.IsZero() {
		r.fullSince = now
	}
	since := r.fullSince
	if r.lastPlaced.After(since) {
		since = r.lastPlaced
	}
	return true, now.Sub(since) >= r.opts.StallAfter
}

// noteOverflow logs, once a minute at most, that writes go past the
// cache's bound.
func (r *Replica) noteOverflow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastOverflowLog) < time.Minute {
		return
	}
	r.lastOverflowLog = time.Now()
	r.log.Warn("cache full of data not on peers, and no upload is going on: writes go on past the cache bound",
		"pending_bytes", r.pending, "cache_bytes", r.opts.CacheBytes, "last_upload_error", r.lastErr)
}

// evictLocked deletes the least recently used uploaded chunks until the
// cache is within its bound. r.mu is held.
func (r *Replica) evictLocked() {
	if r.opts.CacheBytes <= 0 {
		return
	}
	for r.cache.size+r.cache.pinned > r.opts.CacheBytes && r.cache.order.Len() > 0 {
		var batch []*lruEntry
		var freed int64
		for e := r.cache.order.Back(); e != nil && len(batch) < 256; e = e.Prev() {
			v := e.Value.(*lruEntry)
			batch = append(batch, v)
			freed += v.size
			if r.cache.size+r.cache.pinned-freed <= r.opts.CacheBytes {
				break
			}
		}
		err := r.db.Update(0, func(tx *store.Txn) error {
			for _, v := range batch {
				if err := tx.DeleteChunk(v.id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			r.log.Warn("cache eviction failed", "err", err)
			return
		}
		for _, v := range batch {
			r.cache.remove(v.id)
		}
	}
}

// keeper evicts every keepEvery, and checks the health of placed segments
// as often, unless a check takes longer than healthShare of the time: a
// check reads every segment record (0.4 s for the 25,600 segments of a
// 100 GB drive here), so a large drive is checked less often rather than
// keep a core busy.
func (r *Replica) keeper() {
	defer r.wg.Done()
	r.mu.Lock()
	r.evictLocked()
	r.mu.Unlock()
	last := time.Now()
	r.checkHealth()
	took := time.Since(last)
	t := time.NewTicker(keepEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		r.evictLocked()
		r.mu.Unlock()
		if scanDue(last, took) {
			last = time.Now()
			r.checkHealth()
			took = time.Since(last)
		}
	}
}

const (
	keepEvery   = 5 * time.Second
	healthShare = 0.02 // of one core, at most, for periodic reads of every segment record
)

// scanDue reports whether a periodic read of every segment record that
// last started at last and took took may run again without taking more
// than healthShare of a core.
func scanDue(last time.Time, took time.Duration) bool {
	return time.Since(last) >= time.Duration(float64(took)/healthShare)
}
