package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"syscall"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	pdnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/store"
)

// The network's shard server serves a *store.Shards.
var _ pdnet.ShardStore = (*store.Shards)(nil)

func shard(n int, seed byte) (peerdrive.ShardID, []byte) {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return peerdrive.ShardID(crypto.ContentID(b)), b
}

// op is one step of a shard store scenario.
type op struct {
	do    string // put, get, has, delete, reopen, capacity
	owner string
	shard int   // index into the scenario's shards
	n     int64 // capacity for "capacity"/"reopen"
	err   error // wanted error (errors.Is), nil for success
	has   bool  // for "has"
	// wanted tally after the step
	used, count int64
}

func TestShards(t *testing.T) {
	sizes := []int{1000, 3000, 500, 0}
	tests := []struct {
		name     string
		capacity int64
		ops      []op
	}{
		{"put get delete", 10000, []op{
			{do: "put", owner: "A", shard: 0, used: 1000, count: 1},
			{do: "get", shard: 0, used: 1000, count: 1},
			{do: "has", shard: 0, has: true, used: 1000, count: 1},
			{do: "has", shard: 1, has: false, used: 1000, count: 1},
			{do: "delete", owner: "A", shard: 0, used: 0, count: 0},
			{do: "get", shard: 0, err: store.ErrNotFound},
			{do: "has", shard: 0, has: false},
		}},
		{"idempotent put", 10000, []op{
			{do: "put", owner: "A", shard: 1, used: 3000, count: 1},
			{do: "put", owner: "A", shard: 1, used: 3000, count: 1},
			{do: "delete", owner: "A", shard: 1},
			{do: "delete", owner: "A", shard: 1, err: store.ErrNotFound},
		}},
		{"two owners", 10000, []op{
			{do: "put", owner: "A", shard: 0, used: 1000, count: 1},
			{do: "put", owner: "B", shard: 0, used: 1000, count: 1},
			{do: "delete", owner: "C", shard: 0, err: store.ErrNotOwner, used: 1000, count: 1},
			{do: "delete", owner: "A", shard: 0, used: 1000, count: 1},
			{do: "get", shard: 0, used: 1000, count: 1},
			{do: "delete", owner: "A", shard: 0, err: store.ErrNotOwner, used: 1000, count: 1},
			{do: "delete", owner: "B", shard: 0},
			{do: "get", shard: 0, err: store.ErrNotFound},
		}},
		{"full", 3500, []op{
			{do: "put", owner: "A", shard: 1, used: 3000, count: 1},
			{do: "put", owner: "A", shard: 0, err: store.ErrFull, used: 3000, count: 1},
			{do: "put", owner: "A", shard: 2, used: 3500, count: 2}, // exactly fits
			{do: "put", owner: "A", shard: 3, used: 3500, count: 3}, // empty shard always fits
			// A second owner of a stored shard needs no space.
			{do: "put", owner: "B", shard: 1, used: 3500, count: 3},
			{do: "delete", owner: "A", shard: 2, used: 3000, count: 2},
			{do: "put", owner: "A", shard: 0, err: store.ErrFull, used: 3000, count: 2},
			{do: "capacity", n: 4000, used: 3000, count: 2},
			{do: "put", owner: "A", shard: 0, used: 4000, count: 3},
		}},
		{"zero capacity", 0, []op{
			{do: "put", owner: "A", shard: 2, err: store.ErrFull},
			{do: "put", owner: "A", shard: 3, count: 1},
		}},
		{"reopen keeps tally and holds", 10000, []op{
			{do: "put", owner: "A", shard: 0, used: 1000, count: 1},
			{do: "put", owner: "B", shard: 0, used: 1000, count: 1},
			{do: "put", owner: "A", shard: 1, used: 4000, count: 2},
			{do: "reopen", n: 10000, used: 4000, count: 2},
			{do: "get", shard: 1, used: 4000, count: 2},
			{do: "delete", owner: "A", shard: 0, used: 4000, count: 2},
			{do: "reopen", n: 4400, used: 4000, count: 2},
			{do: "put", owner: "A", shard: 2, err: store.ErrFull, used: 4000, count: 2},
			{do: "delete", owner: "B", shard: 0, used: 3000, count: 1},
			{do: "reopen", n: 4400, used: 3000, count: 1},
			{do: "get", shard: 0, err: store.ErrNotFound, used: 3000, count: 1},
			{do: "put", owner: "A", shard: 2, used: 3500, count: 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			db, err := store.Open(dir, store.Options{Reserve: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			s, err := store.NewShards(db, tc.capacity)
			if err != nil {
				t.Fatal(err)
			}
			capacity := tc.capacity
			for i, o := range tc.ops {
				id, data := shard(sizes[o.shard], byte(o.shard))
				step := fmt.Sprintf("step %d (%s %s shard %d)", i, o.do, o.owner, o.shard)
				var err error
				switch o.do {
				case "put":
					err = s.Put(ctx, o.owner, id, data)
				case "get":
					var got []byte
					got, err = s.Get(ctx, id)
					if err == nil && !bytes.Equal(got, data) {
						t.Fatalf("%s: got %d bytes, not the shard", step, len(got))
					}
				case "has":
					var ok bool
					ok, err = s.Has(ctx, id)
					if ok != o.has {
						t.Fatalf("%s: Has = %v, want %v", step, ok, o.has)
					}
				case "delete":
					err = s.Delete(ctx, o.owner, id)
				case "capacity":
					s.SetCapacity(o.n)
					capacity = o.n
				case "reopen":
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					if db, err = store.Open(dir, store.Options{Reserve: 1}); err != nil {
						t.Fatal(err)
					}
					if s, err = store.NewShards(db, o.n); err != nil {
						t.Fatal(err)
					}
					capacity = o.n
				default:
					t.Fatalf("bad op %q", o.do)
				}
				if !errors.Is(err, o.err) || (err == nil) != (o.err == nil) {
					t.Fatalf("%s: error %v, want %v", step, err, o.err)
				}
				used, gotCap, count := s.Usage()
				if used != o.used || count != o.count || gotCap != capacity {
					t.Fatalf("%s: Usage = %d used, %d cap, %d shards; want %d, %d, %d",
						step, used, gotCap, count, o.used, capacity, o.count)
				}
			}
		})
	}
}

// The errors also carry the standard classes the network server maps to
// protocol statuses (net must not import store).
func TestShardsErrorClasses(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	s, err := store.NewShards(db, 100)
	if err != nil {
		t.Fatal(err)
	}
	id, data := shard(200, 1)
	err = s.Put(ctx, "A", id, data)
	if !errors.Is(err, store.ErrFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Put over capacity = %v, want ErrFull and ENOSPC", err)
	}
	_, err = s.Get(ctx, id)
	if !errors.Is(err, store.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get(missing) = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	err = s.Delete(ctx, "A", id)
	if !errors.Is(err, store.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Delete(missing) = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	id, data = shard(10, 2)
	if err := s.Put(ctx, "A", id, data); err != nil {
		t.Fatal(err)
	}
	err = s.Delete(ctx, "B", id)
	if !errors.Is(err, store.ErrNotOwner) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("Delete by non-owner = %v, want ErrNotOwner and fs.ErrPermission", err)
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Delete by non-owner = %v matches another class", err)
	}
	if err := s.Put(ctx, "", id, data); err == nil {
		t.Error("Put with empty owner: no error")
	}
}

func TestShardsNoSpace(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := store.NewShards(db, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	id, data := shard(100, 3)
	err = s.Put(context.Background(), "A", id, data)
	if !errors.Is(err, store.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put on a full disk = %v, want ErrNoSpace and ENOSPC", err)
	}
	if used, _, count := s.Usage(); used != 0 || count != 0 {
		t.Fatalf("Usage after a refused put = %d, %d", used, count)
	}
}

func TestShardsOwners(t *testing.T) {
	ctx := context.Background()
	s, err := store.NewShards(openTemp(t), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	id, data := shard(64, 4)
	other, odata := shard(64, 5)
	for _, o := range []string{"peerC", "peerA", "peerB"} {
		if err := s.Put(ctx, o, id, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "peerZ", other, odata); err != nil {
		t.Fatal(err)
	}
	got, err := s.Owners(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"peerA", "peerB", "peerC"}; !slices.Equal(got, want) {
		t.Fatalf("Owners = %v, want %v", got, want)
	}
	if err := s.Delete(ctx, "peerB", id); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Owners(ctx, id)
	if want := []string{"peerA", "peerC"}; !slices.Equal(got, want) {
		t.Fatalf("Owners after delete = %v, want %v", got, want)
	}
	var missing peerdrive.ShardID
	if got, err := s.Owners(ctx, missing); err != nil || len(got) != 0 {
		t.Fatalf("Owners(missing) = %v, %v", got, err)
	}
}

func TestShardsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := store.NewShards(openTemp(t), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	id, data := shard(10, 6)
	if err := s.Put(ctx, "A", id, data); !errors.Is(err, context.Canceled) {
		t.Errorf("Put = %v", err)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, context.Canceled) {
		t.Errorf("Get = %v", err)
	}
	if _, err := s.Has(ctx, id); !errors.Is(err, context.Canceled) {
		t.Errorf("Has = %v", err)
	}
	if err := s.Delete(ctx, "A", id); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete = %v", err)
	}
	if _, err := s.Owners(ctx, id); !errors.Is(err, context.Canceled) {
		t.Errorf("Owners = %v", err)
	}
}

func TestShardsCorruptTally(t *testing.T) {
	db := openTemp(t)
	for _, v := range [][]byte{{}, {0x80}, {1}, {1, 1, 1}} {
		if err := db.Update(0, func(tx *store.Txn) error { return tx.Set([]byte{'T'}, v) }); err != nil {
			t.Fatal(err)
		}
		if _, err := store.NewShards(db, 1); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("tally %x: NewShards = %v, want ErrCorrupt", v, err)
		}
	}
}

// Shards of up to 32 MiB (the protocol's maximum) fit badger's limits.
func TestShardsLargest(t *testing.T) {
	ctx := context.Background()
	s, err := store.NewShards(openTemp(t), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	id, data := shard(32<<20, 9)
	if err := s.Put(ctx, "A", id, data); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}
}
