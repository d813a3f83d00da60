package wasm

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// allocator backs guest linear memory with an anonymous mapping of the
// unit's memory limit (pages are committed only when touched) and refuses,
// recording it in hit, any growth past the limit.
type allocator struct {
	limit int64
	hit   atomic.Bool
}

var _ experimental.MemoryAllocator = (*allocator)(nil)

// Allocate implements experimental.MemoryAllocator.
func (a *allocator) Allocate(_, max uint64) experimental.LinearMemory {
	size := uint64(a.limit)
	if max < size {
		size = max
	}
	m := &linearMemory{a: a}
	if size > 0 {
		b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
		if err == nil {
			m.mapped = b
		}
	}
	return m
}

type linearMemory struct {
	a      *allocator
	mapped []byte // the reservation; nil if mmap failed (then: Go slices)
	buf    []byte
}

// Reallocate implements experimental.LinearMemory. Memory only grows, and
// fresh mapped pages are zero, as wasm requires.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > uint64(m.a.limit) {
		m.a.hit.Store(true)
		return nil
	}
	if m.mapped != nil {
		if size > uint64(len(m.mapped)) {
			return nil
		}
		m.buf = m.mapped[:size]
		return m.buf
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	nb := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), uint64(m.a.limit)))
	copy(nb, m.buf)
	m.buf = nb
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	if m.mapped != nil {
		unix.Munmap(m.mapped)
		m.mapped = nil
	}
	m.buf = nil
}
