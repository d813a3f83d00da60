package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/peerdrive/peerdrive"
)

// Blobs is a content-addressed store of sealed chunks. Implementations
// never interpret the bytes. Get of an absent chunk returns an error wrapping
// ErrNotFound. storetest.Run checks an implementation against this contract.
type Blobs interface {
	Put(ctx context.Context, id peerdrive.ChunkID, data []byte) error
	Get(ctx context.Context, id peerdrive.ChunkID) ([]byte, error)
	Has(ctx context.Context, id peerdrive.ChunkID) (bool, error)
	Delete(ctx context.Context, id peerdrive.ChunkID) error
}

// Memory is a Blobs held in memory, for tests and in-process peers.
type Memory struct {
	mu sync.RWMutex
	m  map[peerdrive.ChunkID][]byte
}

var _ Blobs = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{m: map[peerdrive.ChunkID][]byte{}} }

func (s *Memory) Put(ctx context.Context, id peerdrive.ChunkID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.m[id] = append([]byte(nil), data...)
	s.mu.Unlock()
	return nil
}

func (s *Memory) Get(ctx context.Context, id peerdrive.ChunkID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	v, ok := s.m[id]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

func (s *Memory) Has(ctx context.Context, id peerdrive.ChunkID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.RLock()
	_, ok := s.m[id]
	s.mu.RUnlock()
	return ok, nil
}

func (s *Memory) Delete(ctx context.Context, id peerdrive.ChunkID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
	return nil
}
