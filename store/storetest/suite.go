// Package storetest is the conformance suite for store.Blobs.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// Run checks that the Blobs made by newBlobs honours the store.Blobs contract.
func Run(t *testing.T, newBlobs func(t *testing.T) store.Blobs) {
	ctx := context.Background()
	id := func(b byte) peerdrive.ChunkID { var i peerdrive.ChunkID; i[0] = b; i[31] = b; return i }
	blob := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }

	t.Run("PutGetHasDelete", func(t *testing.T) {
		s := newBlobs(t)
		for _, n := range []int{0, 1, 4096, 1 << 20} {
			k, v := id(byte(n%251)+1), blob(n)
			if err := s.Put(ctx, k, v); err != nil {
				t.Fatalf("Put(%d bytes): %v", n, err)
			}
			got, err := s.Get(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Get(%d bytes) = %d bytes, %v", n, len(got), err)
			}
			if ok, err := s.Has(ctx, k); !ok || err != nil {
				t.Fatalf("Has = %v, %v", ok, err)
			}
			if err := s.Delete(ctx, k); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if ok, _ := s.Has(ctx, k); ok {
				t.Fatalf("Has after Delete = true")
			}
		}
	})
	t.Run("MissingIsNotFound", func(t *testing.T) {
		s := newBlobs(t)
		if _, err := s.Get(ctx, id(200)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, id(201)); err != nil {
			t.Fatalf("Delete(missing) = %v, want nil", err)
		}
	})
	t.Run("GetReturnsACopy", func(t *testing.T) {
		s := newBlobs(t)
		v := blob(64)
		want := append([]byte(nil), v...)
		if err := s.Put(ctx, id(7), v); err != nil {
			t.Fatal(err)
		}
		v[0] ^= 0xff // the caller reuses its buffer
		got, _ := s.Get(ctx, id(7))
		got[1] ^= 0xff
		again, _ := s.Get(ctx, id(7))
		if !bytes.Equal(again, want) {
			t.Fatalf("stored bytes changed through a caller's buffer")
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		s := newBlobs(t)
		c, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(c, id(9), blob(8)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with cancelled ctx = %v", err)
		}
		if _, err := s.Get(c, id(9)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Get with cancelled ctx = %v", err)
		}
	})
}
