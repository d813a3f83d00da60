package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// clock is a settable clock for the shard store.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// leasedShards is a shard store of 1 MiB with one-hour leases on a clock
// the test sets.
func leasedShards(t *testing.T) (*store.DB, *store.Shards, *clock) {
	t.Helper()
	db := openTemp(t)
	s, err := store.NewShards(db, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{time.Unix(1_800_000_000, 0)}
	s.SetClock(c.now)
	s.SetLease(time.Hour)
	return db, s, c
}

func usage(s *store.Shards) (used, count int64) {
	u, _, c := s.Usage()
	return u, c
}

// Holds expire after the lease; a renewal keeps one; a shard goes with its
// last hold; the sweep never drops a hold whose lease is live.
func TestLeaseExpiry(t *testing.T) {
	ctx := context.Background()
	db, s, c := leasedShards(t)
	t0 := c.t
	x, xb := shard(1000, 1)
	y, yb := shard(2000, 2)
	z, zb := shard(4000, 3)
	for _, p := range []struct {
		owner string
		id    peerdrive.ShardID
		b     []byte
	}{{"a", x, xb}, {"a", y, yb}, {"a", z, zb}, {"b", z, zb}} {
		if err := s.Put(ctx, p.owner, p.id, p.b); err != nil {
			t.Fatal(err)
		}
	}
	if e, err := s.Expiry(ctx, "a", x); err != nil || !e.Equal(t0.Add(time.Hour)) {
		t.Fatalf("expiry = %v, %v; want %v", e, err, t0.Add(time.Hour))
	}
	// Nothing has expired yet.
	if freed, holds, err := s.Sweep(ctx, t0.Add(59*time.Minute)); err != nil || freed != 0 || holds != 0 {
		t.Fatalf("early sweep = %d, %d, %v", freed, holds, err)
	}
	// a renews x and b renews z at 50 min.
	c.t = t0.Add(50 * time.Minute)
	if held, err := s.Renew(ctx, "a", []peerdrive.ShardID{x, {}}); err != nil || !held[0] || held[1] {
		t.Fatalf("renew = %v, %v", held, err)
	}
	if held, err := s.Renew(ctx, "b", []peerdrive.ShardID{z, y}); err != nil || !held[0] || held[1] {
		t.Fatalf("renew by b = %v, %v (b never held y)", held, err)
	}
	// At 61 min: y (a only) goes; z loses a's hold but b's keeps it; x stays.
	freed, holds, err := s.Sweep(ctx, t0.Add(61*time.Minute))
	if err != nil || freed != 2000 || holds != 2 {
		t.Fatalf("sweep = %d bytes, %d holds, %v; want 2000, 2", freed, holds, err)
	}
	if used, count := usage(s); used != 5000 || count != 2 {
		t.Fatalf("usage = %d, %d; want 5000, 2", used, count)
	}
	if ok, _ := s.Has(ctx, y); ok {
		t.Fatal("y still stored")
	}
	if owners, _ := s.Owners(ctx, z); len(owners) != 1 || owners[0] != "b" {
		t.Fatalf("owners of z = %q", owners)
	}
	// The lease index survives a reopen.
	s, err = store.NewShards(db, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	freed, holds, err = s.Sweep(ctx, t0.Add(111*time.Minute))
	if err != nil || freed != 5000 || holds != 2 {
		t.Fatalf("last sweep = %d bytes, %d holds, %v; want 5000, 2", freed, holds, err)
	}
	if used, count := usage(s); used != 0 || count != 0 {
		t.Fatalf("usage = %d, %d; want 0, 0", used, count)
	}
	// A put of a shard already held renews it.
	c.t = t0.Add(200 * time.Minute)
	s.SetClock(c.now)
	s.SetLease(time.Hour)
	if err := s.Put(ctx, "a", x, xb); err != nil {
		t.Fatal(err)
	}
	c.t = t0.Add(250 * time.Minute)
	if err := s.Put(ctx, "a", x, xb); err != nil {
		t.Fatal(err)
	}
	if _, holds, _ := s.Sweep(ctx, t0.Add(270*time.Minute)); holds != 0 {
		t.Fatal("a hold renewed by put was swept")
	}
	if err := s.Delete(ctx, "a", x); err != nil {
		t.Fatal(err)
	}
	if _, holds, _ := s.Sweep(ctx, t0.Add(1000*time.Minute)); holds != 0 {
		t.Fatal("sweep found a deleted hold")
	}
}

// A hold in the old form (size only) is read, never expires, and gets an
// expiry when renewed.
func TestLegacyHold(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	s, err := store.NewShards(db, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	x, xb := shard(300, 4)
	if err := s.Put(ctx, "peer", x, xb); err != nil {
		t.Fatal(err)
	}
	key := append(append([]byte{'Q'}, x[:]...), "peer"...)
	if err := db.Update(0, func(tx *store.Txn) error { return tx.Set(key, binary.AppendUvarint(nil, 300)) }); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Expiry(ctx, "peer", x); err != nil || !e.IsZero() {
		t.Fatalf("legacy expiry = %v, %v", e, err)
	}
	if _, holds, err := s.Sweep(ctx, time.Now().Add(10*store.LeaseTime)); err != nil || holds != 0 {
		t.Fatalf("sweep dropped a legacy hold: %d, %v", holds, err)
	}
	if b, n := s.OwnerUsage("peer"); b != 300 || n != 1 {
		t.Fatalf("OwnerUsage = %d, %d", b, n)
	}
	if held, err := s.Renew(ctx, "peer", []peerdrive.ShardID{x}); err != nil || !held[0] {
		t.Fatalf("renew = %v, %v", held, err)
	}
	if e, _ := s.Expiry(ctx, "peer", x); e.IsZero() {
		t.Fatal("renewed legacy hold has no expiry")
	}
	if err := s.Delete(ctx, "peer", x); err != nil {
		t.Fatal(err)
	}
	if used, count := usage(s); used != 0 || count != 0 {
		t.Fatalf("usage = %d, %d", used, count)
	}
}

func TestOwnerUsage(t *testing.T) {
	ctx := context.Background()
	s, err := store.NewShards(openTemp(t), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	x, xb := shard(100, 5)
	y, yb := shard(250, 6)
	for _, p := range []struct {
		owner string
		id    peerdrive.ShardID
		b     []byte
	}{{"owner:aa", x, xb}, {"owner:aa", y, yb}, {"owner:aab", x, xb}} {
		if err := s.Put(ctx, p.owner, p.id, p.b); err != nil {
			t.Fatal(err)
		}
	}
	for owner, want := range map[string][2]int64{"owner:aa": {350, 2}, "owner:aab": {100, 1}, "owner:a": {0, 0}} {
		if b, n := s.OwnerUsage(owner); b != want[0] || n != want[1] {
			t.Errorf("OwnerUsage(%s) = %d, %d; want %v", owner, b, n, want)
		}
	}
	if _, err := s.Expiry(ctx, "nobody", x); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Expiry of no hold = %v", err)
	}
}

// TestHeldByOwner: the tally kept up to date by puts, deletes and sweeps
// agrees with a count of the records, taken by a second store over them.
func TestHeldByOwner(t *testing.T) {
	ctx := context.Background()
	db, s, c := leasedShards(t)
	x, xb := shard(1000, 1)
	y, yb := shard(2000, 2)
	z, zb := shard(4000, 3)
	check := func(what string, want map[string]store.OwnerTally) {
		t.Helper()
		got, err := s.HeldByOwner()
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := store.NewShards(db, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		counted, err := fresh.HeldByOwner()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || len(counted) != len(want) {
			t.Fatalf("%s: tally %v, records %v; want %v", what, got, counted, want)
		}
		for o, w := range want {
			if got[o] != w || counted[o] != w {
				t.Fatalf("%s: owner %s: tally %v, records %v; want %v", what, o, got[o], counted[o], w)
			}
		}
	}
	put := func(owner string, id peerdrive.ShardID, b []byte) {
		t.Helper()
		if err := s.Put(ctx, owner, id, b); err != nil {
			t.Fatal(err)
		}
	}
	put("a", x, xb)
	check("first count", map[string]store.OwnerTally{"a": {1000, 1}})
	put("a", y, yb)
	put("a", y, yb) // again: a renewal
	put("b", y, yb) // a second owner
	put("b", z, zb)
	check("after puts", map[string]store.OwnerTally{"a": {3000, 2}, "b": {6000, 2}})
	if err := s.Delete(ctx, "a", y); err != nil {
		t.Fatal(err)
	}
	check("after a delete", map[string]store.OwnerTally{"a": {1000, 1}, "b": {6000, 2}})
	c.t = c.t.Add(30 * time.Minute)
	if _, err := s.Renew(ctx, "b", []peerdrive.ShardID{z}); err != nil {
		t.Fatal(err)
	}
	if _, holds, err := s.Sweep(ctx, c.t.Add(31*time.Minute)); err != nil || holds != 2 {
		t.Fatalf("sweep: %d holds, %v; want 2 (a's x, b's y)", holds, err)
	}
	check("after a sweep", map[string]store.OwnerTally{"b": {4000, 1}})
}
