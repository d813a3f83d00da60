package net

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/peerdrive/peerdrive"
)

// GetShardInto reads into the given array when it has room, into a new
// slice when not, and verifies the bytes either way.
func TestGetShardInto(t *testing.T) {
	a, b := servingPair(t, openShards(t, 8<<20))
	ctx := ctxT(t, 30*time.Second)
	bp := b.Host().ID()
	id, data := testShard(300<<10, 9)
	if err := a.PutShard(ctx, bp, id, data); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, len(data))
	got, err := a.GetShardInto(ctx, bp, id, buf)
	if err != nil || !bytes.Equal(got, data) || &got[0] != &buf[:1][0] {
		t.Fatalf("GetShardInto with room = %d bytes, %v (in place %v)", len(got), err, err == nil && &got[0] == &buf[:1][0])
	}
	small := make([]byte, 0, len(data)-1)
	got, err = a.GetShardInto(ctx, bp, id, small)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetShardInto without room = %d bytes, %v", len(got), err)
	}

	l, liar := servingPair(t, lyingStore{openShards(t, 1<<20)})
	if err := l.PutShard(ctx, liar.Host().ID(), id, data); err != nil {
		t.Fatal(err)
	}
	got, err = l.GetShardInto(ctx, liar.Host().ID(), id, buf)
	if !errors.Is(err, ErrBadShard) || got != nil {
		t.Fatalf("GetShardInto from a liar = %d bytes, %v; want ErrBadShard", len(got), err)
	}
}

// TestServerBuffersReused: a server reading shards from a store.Shards
// into pooled buffers, shared with PUT bodies, answers concurrent GETs and
// PUTs of shards of many sizes each with its own bytes.
func TestServerBuffersReused(t *testing.T) {
	a, b := servingPair(t, openShards(t, 64<<20))
	ctx := ctxT(t, 60*time.Second)
	bp := b.Host().ID()
	type sh struct {
		id   peerdrive.ShardID
		data []byte
	}
	var shards []sh
	for i, n := range []int{1, 4096, 300 << 10, 1 << 20, 1<<20 + 7, 2 << 20, 5 << 20} {
		id, data := testShard(n, byte(i+20))
		if err := a.PutShard(ctx, bp, id, data); err != nil {
			t.Fatal(err)
		}
		shards = append(shards, sh{id, data})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*30)
	for g := range 8 {
		wg.Go(func() {
			for j := range 30 {
				s := shards[(g+j)%len(shards)]
				if g%4 == 3 { // a writer among the readers
					id, data := testShard(64<<10+j, byte(100+g))
					if err := a.PutShard(ctx, bp, id, data); err != nil {
						errs <- err
					}
					continue
				}
				got, err := a.GetShard(ctx, bp, s.id)
				if err != nil || !bytes.Equal(got, s.data) {
					errs <- fmt.Errorf("shard of %d bytes: got %d bytes, %v", len(s.data), len(got), err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
