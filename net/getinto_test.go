package net

import (
	"bytes"
	"errors"
	"testing"
	"time"
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
