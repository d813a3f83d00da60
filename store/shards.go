package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"syscall"
	"time"

	"github.com/peerdrive/peerdrive"
)

// Sentinel errors of the shard store. Each also matches a standard error
// class with errors.Is, so that consumers that must not import store (the net
// package's shard server) can classify them: ErrNotFound from Shards matches
// fs.ErrNotExist, ErrFull and ErrNoSpace match syscall.ENOSPC, ErrNotOwner
// matches fs.ErrPermission.
var (
	ErrFull     = errors.New("contributed space is full")
	ErrNotOwner = errors.New("not an owner of the shard")
)

// Key tags of the shard store (docs/format.md, "Storage node"). Other tags in
// the same badger: store C; tree V K I D M X R H O N S; replica U L G Z.
const (
	tagShard = 'P' // 'P' || shard ID -> shard bytes
	tagHold  = 'Q' // 'Q' || shard ID || owner -> shard size (uvarint)
	tagTally = 'T' // 'T' -> used bytes (uvarint) || shard count (uvarint)
	tagLease = 'E' // 'E' || expiry (8, unix s) || shard ID || owner -> empty (docs/gc.md §6)
)

// Lease timing (docs/gc.md §3): the one place these constants live.
const (
	// LeaseTime is how long a hold lives without renewal.
	LeaseTime = 30 * 24 * time.Hour
	// RenewEvery is how often an owner renews all its holds.
	RenewEvery = 24 * time.Hour
	// SweepEvery is how often a storage node drops expired holds.
	SweepEvery = time.Hour
)

// Shards is a storage node's store of other peers' shards, in the DB's
// badger: the bytes of each shard once, and one hold per owner that put it.
// A shard stays until every owner has deleted its hold. The bytes stored
// count against the capacity the node contributes; that count (used) and the
// number of shards are kept in a tally record written in the same
// transaction as every change, so they are right after a crash or reopen.
//
// Shards does not verify that a shard's bytes hash to its ID; the network
// server does that before Put, and readers do it after Get.
//
// All writes go through one mutex (the DB runs without conflict detection).
type Shards struct {
	db *DB

	mu       sync.Mutex // serializes writers; guards the fields below
	capacity int64
	used     int64
	count    int64
	lease    time.Duration    // LeaseTime unless SetLease
	now      func() time.Time // time.Now; tests replace it
	// owners tallies the holds by owner: nil until HeldByOwner first
	// counts them, then kept up to date by every hold added or dropped.
	owners map[string]OwnerTally
}

// tallyKey is where the tally lives.
var tallyKey = []byte{tagTally}

func shardKey(id peerdrive.ShardID) []byte {
	k := make([]byte, 1+len(id))
	k[0] = tagShard
	copy(k[1:], id[:])
	return k
}

func holdPrefix(id peerdrive.ShardID) []byte {
	k := make([]byte, 1+len(id))
	k[0] = tagHold
	copy(k[1:], id[:])
	return k
}

func holdKey(id peerdrive.ShardID, owner string) []byte {
	return append(holdPrefix(id), owner...)
}

// NewShards opens the shard store in db with the given capacity in bytes
// (what the node contributes). It reads the tally; a tally that does not
// decode is ErrCorrupt.
func NewShards(db *DB, capacity int64) (*Shards, error) {
	s := &Shards{db: db, capacity: max(capacity, 0), lease: LeaseTime, now: time.Now}
	err := db.View(func(t *Txn) error {
		v, err := t.Get(tallyKey)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		s.used, s.count, err = decodeTally(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open shard store: %w", err)
	}
	return s, nil
}

func encodeTally(used, count int64) []byte {
	b := binary.AppendUvarint(nil, uint64(used))
	return binary.AppendUvarint(b, uint64(count))
}

func decodeTally(b []byte) (used, count int64, err error) {
	u, n := binary.Uvarint(b)
	if n <= 0 || u > 1<<62 {
		return 0, 0, fmt.Errorf("shard tally %x: %w", b, ErrCorrupt)
	}
	c, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) || c > 1<<62 {
		return 0, 0, fmt.Errorf("shard tally %x: %w", b, ErrCorrupt)
	}
	return int64(u), int64(c), nil
}

// SetCapacity changes the contributed capacity. Shards already stored stay
// even if they now exceed it; new ones are refused until there is room.
func (s *Shards) SetCapacity(capacity int64) {
	s.mu.Lock()
	s.capacity = max(capacity, 0)
	s.mu.Unlock()
}

// Usage reports the bytes of shards stored, the capacity, and the number of
// shards.
func (s *Shards) Usage() (used, capacity, count int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.capacity, s.count
}

// Put stores data as shard id held by owner (a peer ID string, not empty),
// durably: it returns after the shard is synced to disk (syncs of
// concurrent puts are shared).
// If the shard is already stored, only owner's hold is added (or nothing, if
// owner already holds it): that never needs space. Otherwise it returns
// ErrFull when the shard does not fit in the capacity, and ErrNoSpace when
// the home's disk is too full.
func (s *Shards) Put(ctx context.Context, owner string, id peerdrive.ShardID, data []byte) error {
	if err := s.put(ctx, owner, id, data); err != nil {
		return err
	}
	if err := s.db.SyncShared(); err != nil {
		return fmt.Errorf("put shard %s: %w", id.Short(), err)
	}
	return nil
}

func (s *Shards) put(ctx context.Context, owner string, id peerdrive.ShardID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if owner == "" {
		return fmt.Errorf("put shard %s: empty owner", id.Short())
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	var stored, held bool
	err := s.db.View(func(t *Txn) error {
		var err error
		if stored, err = t.Has(shardKey(id)); err != nil {
			return err
		}
		held, err = t.Has(holdKey(id, owner))
		return err
	})
	if err != nil {
		return fmt.Errorf("put shard %s: %w", id.Short(), err)
	}
	expiry := s.now().Add(s.lease).Unix()
	if held && stored {
		_, err := s.renewLocked(owner, []peerdrive.ShardID{id}, expiry)
		return err
	}

	size := int64(len(data))
	used, count := s.used, s.count
	need := int64(64)
	if !stored {
		if used+size > s.capacity {
			return fmt.Errorf("put shard %s (%d bytes): %d of %d bytes used: %w",
				id.Short(), size, used, s.capacity, classed{ErrFull, syscall.ENOSPC})
		}
		used += size
		count++
		need += size
	}
	hold := encodeHold(size, expiry)
	err = s.db.Update(need, func(t *Txn) error {
		if !stored {
			// A shard skips the page cache (packs.append).
			if err := t.putBlob(shardKey(id), data, false, true); err != nil {
				return err
			}
		}
		if err := t.Set(holdKey(id, owner), hold); err != nil {
			return err
		}
		if err := t.Set(leaseKey(expiry, id, owner), nil); err != nil {
			return err
		}
		return t.Set(tallyKey, encodeTally(used, count))
	})
	if err != nil {
		if errors.Is(err, ErrNoSpace) {
			err = classed{err, syscall.ENOSPC}
		}
		return fmt.Errorf("put shard %s: %w", id.Short(), err)
	}
	s.used, s.count = used, count
	if s.owners != nil && !held {
		s.owners[owner] = s.owners[owner].plus(size)
	}
	return nil
}

// Get returns a copy of shard id's bytes, or an error wrapping ErrNotFound.
func (s *Shards) Get(ctx context.Context, id peerdrive.ShardID) ([]byte, error) {
	return s.GetInto(ctx, id, nil)
}

// GetInto is Get that appends the bytes to dst (into its spare capacity if
// it has room) and returns the extended slice: a storage node serving
// reads reuses buffers instead of a fresh megabyte per shard, whose page
// faults, zeroing and collection were 16% of six peers' CPU while a mount
// read 256 MiB cold from them (perf record -a).
func (s *Shards) GetInto(ctx context.Context, id peerdrive.ShardID, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	v := dst
	err := s.db.View(func(t *Txn) error {
		var err error
		v, _, err = t.appendBlob(dst, shardKey(id), true)
		return err
	})
	if err != nil {
		return dst, fmt.Errorf("shard %s: %w", id.Short(), classify(err))
	}
	return v, nil
}

// Has reports whether shard id is stored.
func (s *Shards) Has(ctx context.Context, id peerdrive.ShardID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var ok bool
	err := s.db.View(func(t *Txn) error {
		var err error
		ok, err = t.Has(shardKey(id))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("shard %s: %w", id.Short(), err)
	}
	return ok, nil
}

// holdOf returns owner's hold record on shard id (nil if none) and whether
// anyone else holds the shard too.
func holdOf(t *Txn, id peerdrive.ShardID, owner string) (hold []byte, others bool, err error) {
	hold, err = t.Get(holdKey(id, owner))
	if errors.Is(err, ErrNotFound) {
		hold, err = nil, nil
	}
	if err != nil {
		return nil, false, err
	}
	mine := holdKey(id, owner)
	err = t.Iterate(holdPrefix(id), nil, false, func(k, _ []byte) (bool, error) {
		if !bytes.Equal(k, mine) {
			others = true
			return false, nil
		}
		return true, nil
	})
	return hold, others, err
}

// Delete removes owner's hold on shard id, and the shard's bytes with the
// last hold. It returns ErrNotFound if the shard is not stored and
// ErrNotOwner if it is but owner holds none of it.
func (s *Shards) Delete(ctx context.Context, owner string, id peerdrive.ShardID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	var (
		stored bool
		hold   []byte
		others bool
	)
	err := s.db.View(func(t *Txn) error {
		var err error
		if stored, err = t.Has(shardKey(id)); err != nil || !stored {
			return err
		}
		hold, others, err = holdOf(t, id, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete shard %s: %w", id.Short(), err)
	}
	if !stored {
		return fmt.Errorf("delete shard %s: %w", id.Short(), classify(ErrNotFound))
	}
	if hold == nil {
		return fmt.Errorf("delete shard %s for %s: %w", id.Short(), owner, classed{ErrNotOwner, fs.ErrPermission})
	}
	size, expiry, err := decodeHold(hold)
	if err != nil {
		return fmt.Errorf("delete shard %s: %w", id.Short(), err)
	}
	if err := s.dropHoldLocked(id, owner, size, expiry, others); err != nil {
		return fmt.Errorf("delete shard %s: %w", id.Short(), err)
	}
	return nil
}

// dropHoldLocked deletes owner's hold on id (with its lease index entry)
// and, if no other owner holds it, the shard and its bytes from the tally.
// s.mu is held.
func (s *Shards) dropHoldLocked(id peerdrive.ShardID, owner string, size uint64, expiry int64, others bool) error {
	used, count := s.used, s.count
	if !others {
		used = max(used-int64(size), 0)
		count = max(count-1, 0)
	}
	err := s.db.Update(0, func(t *Txn) error {
		if err := t.Delete(holdKey(id, owner)); err != nil {
			return err
		}
		if expiry != 0 {
			if err := t.Delete(leaseKey(expiry, id, owner)); err != nil {
				return err
			}
		}
		if others {
			return nil
		}
		if err := t.DeleteBlob(shardKey(id)); err != nil {
			return err
		}
		return t.Set(tallyKey, encodeTally(used, count))
	})
	if err != nil {
		return err
	}
	s.used, s.count = used, count
	if s.owners != nil {
		if t := s.owners[owner].minus(int64(size)); t.Shards > 0 {
			s.owners[owner] = t
		} else {
			delete(s.owners, owner)
		}
	}
	return nil
}

// Owners returns the owners holding shard id, sorted (none if it is not
// stored).
func (s *Shards) Owners(ctx context.Context, id peerdrive.ShardID) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var owners []string
	p := holdPrefix(id)
	err := s.db.View(func(t *Txn) error {
		return t.Iterate(p, nil, false, func(k, _ []byte) (bool, error) {
			owners = append(owners, string(k[len(p):]))
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("owners of shard %s: %w", id.Short(), err)
	}
	return owners, nil
}

// classify adds the standard error class to ErrNotFound.
func classify(err error) error {
	if errors.Is(err, ErrNotFound) {
		return classed{err, fs.ErrNotExist}
	}
	return err
}

// classed is err, which also matches class with errors.Is. Its message is
// err's alone.
type classed struct{ err, class error }

func (c classed) Error() string   { return c.err.Error() }
func (c classed) Unwrap() []error { return []error{c.err, c.class} }
