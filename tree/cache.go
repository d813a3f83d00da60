package tree

import (
	"container/list"
	"sync"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

func contentID(b []byte) [32]byte { return crypto.ContentID(b) }

// chunkCache is an LRU of decrypted chunks. Chunks are immutable (named by
// their hash), so entries never go stale; they are dropped when deleted only
// to free memory.
type chunkCache struct {
	mu    sync.Mutex
	max   int
	size  int
	order *list.List // front: most recent
	m     map[peerdrive.ChunkID]*list.Element
	loads map[peerdrive.ChunkID]*chunkLoad // loads in flight
}

// chunkLoad is a chunk being read and decrypted; data and err are set
// before done is closed.
type chunkLoad struct {
	done chan struct{}
	data []byte
	err  error
}

type cached struct {
	id   peerdrive.ChunkID
	data []byte
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, order: list.New(), m: map[peerdrive.ChunkID]*list.Element{}, loads: map[peerdrive.ChunkID]*chunkLoad{}}
}

// loading returns the load in flight of id; first is true if there was
// none and the caller must do it and then call loaded.
func (c *chunkCache) loading(id peerdrive.ChunkID) (l *chunkLoad, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.loads[id]; ok {
		return l, false
	}
	l = &chunkLoad{done: make(chan struct{})}
	c.loads[id] = l
	return l, true
}

// loaded ends the load l of id.
func (c *chunkCache) loaded(id peerdrive.ChunkID, l *chunkLoad) {
	c.mu.Lock()
	delete(c.loads, id)
	c.mu.Unlock()
	close(l.done)
}

func (c *chunkCache) get(id peerdrive.ChunkID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cached).data, true
}

func (c *chunkCache) put(id peerdrive.ChunkID, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; ok || len(data) > c.max {
		return
	}
	c.m[id] = c.order.PushFront(&cached{id, data})
	c.size += len(data)
	for c.size > c.max {
		e := c.order.Back()
		v := e.Value.(*cached)
		c.order.Remove(e)
		delete(c.m, v.id)
		c.size -= len(v.data)
	}
}

func (c *chunkCache) drop(id peerdrive.ChunkID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.order.Remove(e)
		delete(c.m, id)
		c.size -= len(e.Value.(*cached).data)
	}
}
