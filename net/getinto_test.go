package net

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

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

// TestBodiesAligned: PUT bodies are page-aligned with a capacity of whole
// pages, fresh or pooled, so that the store writes them with O_DIRECT;
// buffers that grew out of their array are not pooled.
func TestBodiesAligned(t *testing.T) {
	aligned := func(b []byte) bool {
		return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%bodyAlign == 0 && cap(b)%bodyAlign == 0
	}
	for _, n := range []int{1, 4095, 4096, 4097, 1<<20 + 41, 3 << 20} {
		b := getBody(n, 0)
		if len(b) != n || cap(b) < n || !aligned(b) {
			t.Fatalf("getBody(%d): len %d cap %d, aligned %v", n, len(b), cap(b), aligned(b))
		}
		putBody(b)
	}
	if b := getBody(0, getBodyCap); len(b) != 0 || !aligned(b) {
		t.Fatalf("getBody for a GET: len %d cap %d", len(b), cap(b))
	}
	grown := append(getBody(10, 0)[:10:10], make([]byte, 5000)...)
	if aligned(grown) {
		t.Skip("the grown slice happens to be aligned")
	}
	putBody(grown)
	for range 100 {
		if b := getBody(1, 0); !aligned(b) {
			t.Fatalf("pooled an unaligned buffer: cap %d", cap(b))
		}
	}
}
