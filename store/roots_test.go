package store_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"testing"

	"github.com/peerdrive/peerdrive"
	pdnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/store"
)

// The network's root server serves a *store.Roots.
var _ pdnet.RootStore = (*store.Roots)(nil)

func ownerKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func signedRoot(priv ed25519.PrivateKey, seq uint64, body string) *peerdrive.RootRecord {
	r := &peerdrive.RootRecord{Seq: seq, Time: int64(seq) * 1e9, Writer: "12D3KooWTest", LeaseUntil: int64(seq+60) * 1e9, Body: []byte(body)}
	r.Sign(priv)
	return r
}

func mustGet(t *testing.T, r *store.Roots, owner ed25519.PrivateKey, wantSeq uint64, wantBody string) {
	t.Helper()
	got, err := r.Get(context.Background(), owner.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Seq != wantSeq || string(got.Body) != wantBody {
		t.Fatalf("Get = seq %d %q, want seq %d %q", got.Seq, got.Body, wantSeq, wantBody)
	}
	if err := got.Verify(); err != nil {
		t.Fatalf("Get returned a record that does not verify: %v", err)
	}
}

func TestRoots(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	roots := store.NewRoots(db)
	a, b := ownerKey(1), ownerKey(2)
	apub := a.Public().(ed25519.PublicKey)

	if _, err := roots.Get(ctx, apub); !errors.Is(err, store.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get of no record = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	steps := []struct {
		name       string
		rec        *peerdrive.RootRecord
		wantStored bool
		wantErr    error
		wantSeq    uint64
		wantBody   string
	}{
		{"first", signedRoot(a, 5, "five"), true, nil, 5, "five"},
		{"same again", signedRoot(a, 5, "five"), false, nil, 5, "five"},
		{"equal seq, other body", signedRoot(a, 5, "other five"), false, nil, 5, "five"},
		{"replayed lower seq", signedRoot(a, 4, "four"), false, nil, 5, "five"},
		{"seq zero", signedRoot(a, 0, "zero"), false, nil, 5, "five"},
		{"higher", signedRoot(a, 6, "six"), true, nil, 6, "six"},
		{"jump", signedRoot(a, 1000, "thousand"), true, nil, 1000, "thousand"},
		{"another owner's own record", signedRoot(b, 1, "b"), true, nil, 1000, "thousand"},
		{"forged: signed by b, owner a", func() *peerdrive.RootRecord {
			r := signedRoot(b, 2000, "forged")
			r.Owner = apub
			return r
		}(), false, peerdrive.ErrBadSignature, 1000, "thousand"},
		{"tampered seq", func() *peerdrive.RootRecord {
			r := signedRoot(a, 1001, "tampered")
			r.Seq = 3000
			return r
		}(), false, peerdrive.ErrBadSignature, 1000, "thousand"},
		{"tampered body", func() *peerdrive.RootRecord {
			r := signedRoot(a, 1001, "tampered")
			r.Body[0] ^= 1
			return r
		}(), false, peerdrive.ErrBadSignature, 1000, "thousand"},
		{"unsigned", &peerdrive.RootRecord{Owner: apub, Seq: 5000}, false, peerdrive.ErrBadSignature, 1000, "thousand"},
		{"oversized", func() *peerdrive.RootRecord {
			r := &peerdrive.RootRecord{Seq: 4000, Body: make([]byte, peerdrive.MaxRootSize)}
			r.Sign(a)
			return r
		}(), false, peerdrive.ErrTooLarge, 1000, "thousand"},
	}
	for _, s := range steps {
		stored, err := roots.Put(ctx, s.rec)
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: Put err = %v, want %v", s.name, err, s.wantErr)
		}
		if stored != s.wantStored {
			t.Fatalf("%s: stored = %v, want %v", s.name, stored, s.wantStored)
		}
		mustGet(t, roots, a, s.wantSeq, s.wantBody)
	}
	mustGet(t, roots, b, 1, "b")
	if _, err := roots.Put(ctx, nil); err == nil {
		t.Fatal("Put(nil) succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := roots.Put(cctx, signedRoot(a, 9999, "x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context = %v", err)
	}
	if _, err := roots.Get(cctx, apub); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context = %v", err)
	}
}

// TestRootsReopen checks that the records survive closing the store.
func TestRootsReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := ownerKey(1)
	db, err := store.Open(dir, store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewRoots(db).Put(ctx, signedRoot(a, 7, "seven")); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir)
	roots := store.NewRoots(db)
	mustGet(t, roots, a, 7, "seven")
	if stored, err := roots.Put(ctx, signedRoot(a, 6, "six")); stored || err != nil {
		t.Fatalf("replay after reopen: stored %v, %v", stored, err)
	}
	mustGet(t, roots, a, 7, "seven")
}

// TestRootsCorrupt: a stored record that no longer verifies is ErrCorrupt
// on Get, and any valid record replaces it.
func TestRootsCorrupt(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	roots := store.NewRoots(db)
	a := ownerKey(1)
	apub := a.Public().(ed25519.PublicKey)
	rec := signedRoot(a, 10, "ten")
	if _, err := roots.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	b, err := peerdrive.MarshalRoot(rec)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1 // the signature's last byte
	key := append([]byte{'W'}, apub...)
	if err := db.Update(1, func(tx *store.Txn) error { return tx.Set(key, b) }); err != nil {
		t.Fatal(err)
	}
	if _, err := roots.Get(ctx, apub); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Get of a damaged record = %v, want ErrCorrupt", err)
	}
	if stored, err := roots.Put(ctx, signedRoot(a, 1, "one")); !stored || err != nil {
		t.Fatalf("Put over a damaged record: stored %v, %v", stored, err)
	}
	mustGet(t, roots, a, 1, "one")
}
