package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/peerdrive/peerdrive"
)

// Leases on holds (docs/gc.md §3): every hold carries an expiry, indexed
// under 'E' by expiry time so that Sweep reads only what has expired.

func leaseKey(expiry int64, id peerdrive.ShardID, owner string) []byte {
	k := make([]byte, 9, 9+len(id)+len(owner))
	k[0] = tagLease
	binary.BigEndian.PutUint64(k[1:], uint64(expiry))
	k = append(k, id[:]...)
	return append(k, owner...)
}

// encodeHold is a hold's value: uvarint(size) || uvarint(expiry, unix s).
func encodeHold(size, expiry int64) []byte {
	b := binary.AppendUvarint(nil, uint64(size))
	return binary.AppendUvarint(b, uint64(expiry))
}

// decodeHold reads a hold's value; the old form (size only) has expiry 0:
// no expiry.
func decodeHold(b []byte) (size uint64, expiry int64, err error) {
	size, n := binary.Uvarint(b)
	if n <= 0 || size > 1<<62 {
		return 0, 0, fmt.Errorf("hold %x: %w", b, ErrCorrupt)
	}
	if n == len(b) {
		return size, 0, nil
	}
	e, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) || e == 0 || e > 1<<62 {
		return 0, 0, fmt.Errorf("hold %x: %w", b, ErrCorrupt)
	}
	return size, int64(e), nil
}

// SetLease changes the lifetime of holds put or renewed from now on
// (LeaseTime by default; tests shorten it).
func (s *Shards) SetLease(d time.Duration) {
	s.mu.Lock()
	if d > 0 {
		s.lease = d
	}
	s.mu.Unlock()
}

// SetClock replaces the store's clock (tests).
func (s *Shards) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// Renew extends owner's holds on ids to now + the lease time. held[i] says
// whether owner holds ids[i]; a shard owner does not hold (never stored,
// expired, deleted) is left alone.
func (s *Shards) Renew(ctx context.Context, owner string, ids []peerdrive.ShardID) (held []bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	held, err = s.renewLocked(owner, ids, s.now().Add(s.lease).Unix())
	if err != nil {
		return nil, fmt.Errorf("renew %d shards: %w", len(ids), err)
	}
	return held, nil
}

// renewLocked sets the expiry of owner's holds on ids. s.mu is held.
func (s *Shards) renewLocked(owner string, ids []peerdrive.ShardID, expiry int64) ([]bool, error) {
	held := make([]bool, len(ids))
	type change struct {
		id         peerdrive.ShardID
		size, prev int64
	}
	var changes []change
	err := s.db.View(func(t *Txn) error {
		for i, id := range ids {
			v, err := t.Get(holdKey(id, owner))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			size, prev, err := decodeHold(v)
			if err != nil {
				return err
			}
			held[i] = true
			if prev != expiry {
				changes = append(changes, change{id, int64(size), prev})
			}
		}
		return nil
	})
	if err != nil || len(changes) == 0 {
		return held, err
	}
	// Badger bounds a transaction's size: write in slices.
	for len(changes) > 0 {
		batch := changes[:min(len(changes), 512)]
		changes = changes[len(batch):]
		err := s.db.Update(0, func(t *Txn) error {
			for _, c := range batch {
				if c.prev != 0 {
					if err := t.Delete(leaseKey(c.prev, c.id, owner)); err != nil {
						return err
					}
				}
				if err := t.Set(holdKey(c.id, owner), encodeHold(c.size, expiry)); err != nil {
					return err
				}
				if err := t.Set(leaseKey(expiry, c.id, owner), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return held, err
		}
	}
	return held, nil
}

// Sweep drops every hold whose lease expired before now (a shard goes with
// its last hold) and returns the bytes of shards freed and the holds
// dropped. A hold whose expiry is in the future is never dropped.
func (s *Shards) Sweep(ctx context.Context, now time.Time) (freed, holds int64, err error) {
	type exp struct {
		id     peerdrive.ShardID
		owner  string
		expiry int64
	}
	limit := now.Unix()
	for {
		if err := ctx.Err(); err != nil {
			return freed, holds, err
		}
		var batch []exp
		err := s.db.View(func(t *Txn) error {
			return t.Iterate([]byte{tagLease}, nil, false, func(k, _ []byte) (bool, error) {
				if len(k) < 9+len(peerdrive.ShardID{})+1 {
					return true, nil // not a lease entry
				}
				e := int64(binary.BigEndian.Uint64(k[1:9]))
				if e >= limit {
					return false, nil
				}
				var id peerdrive.ShardID
				copy(id[:], k[9:])
				batch = append(batch, exp{id, string(k[9+len(id):]), e})
				return len(batch) < 256, nil
			})
		})
		if err != nil {
			return freed, holds, fmt.Errorf("sweep holds: %w", err)
		}
		if len(batch) == 0 {
			return freed, holds, nil
		}
		for _, x := range batch {
			f, ok, err := s.expire(x.id, x.owner, x.expiry, limit)
			if err != nil {
				return freed, holds, fmt.Errorf("sweep holds: %w", err)
			}
			freed += f
			if ok {
				holds++
			}
		}
	}
}

// expire drops owner's hold on id if its expiry is still e (< limit); a
// stale index entry (the hold was renewed or deleted) is removed.
func (s *Shards) expire(id peerdrive.ShardID, owner string, e, limit int64) (freed int64, dropped bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		hold   []byte
		others bool
	)
	err = s.db.View(func(t *Txn) error {
		var err error
		hold, others, err = holdOf(t, id, owner)
		return err
	})
	if err != nil {
		return 0, false, err
	}
	var size uint64
	var cur int64
	if hold != nil {
		if size, cur, err = decodeHold(hold); err != nil {
			return 0, false, err
		}
	}
	if hold == nil || cur != e || cur >= limit {
		return 0, false, s.db.Update(0, func(t *Txn) error { return t.Delete(leaseKey(e, id, owner)) })
	}
	if err := s.dropHoldLocked(id, owner, size, e, others); err != nil {
		return 0, false, err
	}
	if others {
		return 0, true, nil
	}
	return int64(size), true, nil
}

// Expiry returns when owner's hold on id expires (zero time: the hold has
// no expiry). ErrNotFound if owner holds none of it.
func (s *Shards) Expiry(ctx context.Context, owner string, id peerdrive.ShardID) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	var e int64
	err := s.db.View(func(t *Txn) error {
		v, err := t.Get(holdKey(id, owner))
		if err != nil {
			return err
		}
		_, e, err = decodeHold(v)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("hold on %s: %w", id.Short(), err)
	}
	if e == 0 {
		return time.Time{}, nil
	}
	return time.Unix(e, 0), nil
}

// OwnerTally is what one owner holds here: a shard held by several owners
// counts for each.
type OwnerTally struct{ Bytes, Shards int64 }

// plus and minus count a hold of size bytes in or out.
func (t OwnerTally) plus(size int64) OwnerTally { return OwnerTally{t.Bytes + size, t.Shards + 1} }
func (t OwnerTally) minus(size int64) OwnerTally {
	return OwnerTally{max(t.Bytes-size, 0), max(t.Shards-1, 0)}
}

// OwnerUsage returns the bytes and the number of shards owner holds here
// (a shard held by several owners counts for each).
func (s *Shards) OwnerUsage(owner string) (bytes, shards int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.countOwnersLocked(); err != nil {
		return 0, 0
	}
	return s.owners[owner].Bytes, s.owners[owner].Shards
}

// HeldByOwner returns what each owner holds here. The first call reads
// every hold; the store keeps the tally up to date from then on, so later
// calls cost a copy of it (the ledger asks every second).
func (s *Shards) HeldByOwner() (map[string]OwnerTally, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.countOwnersLocked(); err != nil {
		return nil, err
	}
	return maps.Clone(s.owners), nil
}

// countOwnersLocked makes the tally of holds by owner by reading every
// hold, unless it is made. s.mu is held.
func (s *Shards) countOwnersLocked() error {
	if s.owners != nil {
		return nil
	}
	m := map[string]OwnerTally{}
	err := s.db.View(func(t *Txn) error {
		return t.Iterate([]byte{tagHold}, nil, true, func(k, v []byte) (bool, error) {
			if len(k) <= 1+len(peerdrive.ShardID{}) {
				return true, nil
			}
			size, _, err := decodeHold(v)
			if err != nil {
				return true, nil // counted as nothing, as before
			}
			owner := string(k[1+len(peerdrive.ShardID{}):])
			m[owner] = m[owner].plus(int64(size))
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("count holds: %w", err)
	}
	s.owners = m
	return nil
}
