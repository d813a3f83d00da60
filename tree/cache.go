package tree

import (
	"bytes"
	"container/list"
	"sync"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

// contentID hashes a chunk envelope to its ID; a variable so that tests can
// count the hashes a read costs.
var contentID = crypto.ContentID

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
	// opened are local chunk envelopes opened whole (checked to be their
	// ID's, by their location's tail check or their hash, and
	// authenticated) since the start: a small read of one out of the cache
	// decrypts only its part (Tree.ReadChunkAt). At most maxOpened.
	opened map[peerdrive.ChunkID]openedEnv
}

// openedEnv is what a partial read compares of an envelope opened whole
// before: its header and its length.
type openedEnv struct {
	header [crypto.ChunkHeaderSize]byte
	size   int64
}

// same reports whether an envelope of size bytes whose header is header
// (at least its first ChunkHeaderSize bytes) is the one o records.
func (o openedEnv) same(header []byte, size int64) bool {
	return size == o.size && len(header) >= crypto.ChunkHeaderSize && bytes.Equal(header[:crypto.ChunkHeaderSize], o.header[:])
}

// maxOpened bounds chunkCache.opened: under 8 MiB for 64 GiB of chunks.
const maxOpened = 1 << 16

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
	return &chunkCache{max: max, order: list.New(), m: map[peerdrive.ChunkID]*list.Element{}, loads: map[peerdrive.ChunkID]*chunkLoad{},
		opened: map[peerdrive.ChunkID]openedEnv{}}
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

// noteOpened records that the local envelope env of id opened whole.
func (c *chunkCache) noteOpened(id peerdrive.ChunkID, env []byte) {
	if !crypto.PartialOpen(env) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.opened) >= maxOpened {
		for k := range c.opened { // any one
			delete(c.opened, k)
			break
		}
	}
	o := openedEnv{size: int64(len(env))}
	copy(o.header[:], env)
	c.opened[id] = o
}

// openedEnv returns what was recorded of id's envelope.
func (c *chunkCache) openedEnv(id peerdrive.ChunkID) (openedEnv, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.opened[id]
	return o, ok
}

// forgetOpened drops what was recorded of id's envelope.
func (c *chunkCache) forgetOpened(id peerdrive.ChunkID) {
	c.mu.Lock()
	delete(c.opened, id)
	c.mu.Unlock()
}

func (c *chunkCache) drop(id peerdrive.ChunkID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.opened, id)
	if e, ok := c.m[id]; ok {
		c.order.Remove(e)
		delete(c.m, id)
		c.size -= len(e.Value.(*cached).data)
	}
}
