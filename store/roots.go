package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/peerdrive/peerdrive"
)

// tagRoot is the key tag of root records held for drives (docs/format.md
// §6, §14): 'W' || 32-byte owner key -> the record's encoding.
const tagRoot = 'W'

// Roots is a node's store of drives' root records, in the DB's badger: for
// each owner key, the valid record with the highest Seq seen. Records are
// signed by their owners, so Roots takes them from anyone and checks each
// signature before keeping it.
//
// Errors: Put of a record that does not verify wraps
// peerdrive.ErrBadSignature; Get of an owner with no record wraps
// ErrNotFound, which also matches fs.ErrNotExist (so the network's root
// server can classify it without importing store); a disk too full wraps
// ErrNoSpace, which also matches syscall.ENOSPC.
type Roots struct {
	db *DB
	mu sync.Mutex // serializes Put's read-compare-write
}

// NewRoots returns the root-record store in db.
func NewRoots(db *DB) *Roots { return &Roots{db: db} }

func rootKey(owner ed25519.PublicKey) []byte {
	k := make([]byte, 1+ed25519.PublicKeySize)
	k[0] = tagRoot
	copy(k[1:], owner)
	return k
}

// Put keeps rec if it verifies and its Seq is higher than that of the
// record held for its owner (or none is held), durably: it returns after
// the record is synced to disk. stored says whether rec replaced what was
// held; a record whose Seq is lower than or equal to the held one's is
// ignored (stored false, no error). A record that does not verify is
// peerdrive.ErrBadSignature; one over peerdrive.MaxRootSize is
// peerdrive.ErrTooLarge.
func (r *Roots) Put(ctx context.Context, rec *peerdrive.RootRecord) (stored bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if rec == nil {
		return false, errors.New("put root record: nil record")
	}
	if err := rec.Verify(); err != nil {
		return false, fmt.Errorf("put root record: %w", err)
	}
	b, err := peerdrive.MarshalRoot(rec)
	if err != nil {
		return false, fmt.Errorf("put root record: %w", err)
	}
	key := rootKey(rec.Owner)

	r.mu.Lock()
	defer r.mu.Unlock()
	held, err := r.get(key, rec.Owner)
	switch {
	case errors.Is(err, ErrNotFound):
	case errors.Is(err, ErrCorrupt):
		// A damaged record is replaced by any valid one.
	case err != nil:
		return false, fmt.Errorf("put root record %x: %w", shortKey(rec.Owner), err)
	case rec.Seq <= held.Seq:
		return false, nil
	}
	err = r.db.Update(int64(len(key)+len(b)), func(t *Txn) error { return t.Set(key, b) })
	if err != nil {
		if errors.Is(err, ErrNoSpace) {
			err = classed{err, syscall.ENOSPC}
		}
		return false, fmt.Errorf("put root record %x seq %d: %w", shortKey(rec.Owner), rec.Seq, err)
	}
	if err := r.db.SyncShared(); err != nil {
		return false, fmt.Errorf("put root record %x seq %d: %w", shortKey(rec.Owner), rec.Seq, err)
	}
	return true, nil
}

// Get returns the record held for owner: ErrNotFound if there is none,
// ErrCorrupt if the stored bytes do not decode or verify as owner's record.
func (r *Roots) Get(ctx context.Context, owner ed25519.PublicKey) (*peerdrive.RootRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(owner) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("root record: %d-byte owner key: %w", len(owner), classify(ErrNotFound))
	}
	rec, err := r.get(rootKey(owner), owner)
	if err != nil {
		return nil, fmt.Errorf("root record %x: %w", shortKey(owner), classify(err))
	}
	return rec, nil
}

// get reads and checks the record under key.
func (r *Roots) get(key []byte, owner ed25519.PublicKey) (*peerdrive.RootRecord, error) {
	var v []byte
	err := r.db.View(func(t *Txn) error {
		var err error
		v, err = t.Get(key)
		return err
	})
	if err != nil {
		return nil, err
	}
	rec, err := peerdrive.UnmarshalRoot(v)
	if err == nil {
		err = rec.Verify()
	}
	if err == nil && !bytes.Equal(rec.Owner, owner) {
		err = errors.New("record of another owner")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return rec, nil
}

func shortKey(k []byte) []byte { return k[:min(len(k), 6)] }
