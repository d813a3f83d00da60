// Package snapshot publishes the drive's file tree to the network and brings
// it back: the metadata records (already sealed with the drive key) are cut
// into pieces, sealed again as chunks and placed on peers like file data; a
// manifest listing the pieces goes into the owner's signed root record.
// Each published root is a snapshot.
package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// DumpTags are the key tags of the metadata that make up a snapshot: the
// tree (docs/format.md §6) and the placement of its chunks (§12). Local
// cache locations (C), the upload queue (U) and what a storage node holds
// for others (P, Q, T, W) are not part of a drive.
var DumpTags = []byte{'V', 'K', 'N', 'S', 'I', 'D', 'X', 'M', 'R', 'H', 'L', 'G', 'Z'}

const (
	pieceMin = 64 << 10 // a piece ends at a record boundary chosen by key ...
	pieceMax = 1 << 20  // ... or at the latest past this size
)

// Record is one key and its stored value.
type Record struct {
	Key, Value []byte
}

// Dump reads every metadata record in one consistent view and cuts the
// stream into pieces. It also returns the chunks still waiting for upload at
// that moment, whose placement records the caller adds once they are placed.
//
// A piece is a sequence of uvarint(len(key)) key uvarint(len(value)) value.
// It ends after a record whose key's content hash starts with a zero byte
// (once it holds pieceMin bytes) or past pieceMax: cut points depend on the
// keys, so a change to the tree changes only the pieces around it and the
// others deduplicate from one snapshot to the next.
func Dump(db *store.DB) (pieces [][]byte, queued [][]byte, err error) {
	var cur bytes.Buffer
	flush := func() {
		if cur.Len() > 0 {
			pieces = append(pieces, bytes.Clone(cur.Bytes()))
			cur.Reset()
		}
	}
	err = db.View(func(tx *store.Txn) error {
		for _, tag := range DumpTags {
			err := tx.Iterate([]byte{tag}, nil, true, func(k, v []byte) (bool, error) {
				appendRecord(&cur, k, v)
				if cur.Len() >= pieceMax || cur.Len() >= pieceMin && cutAfter(k) {
					flush()
				}
				return true, nil
			})
			if err != nil {
				return err
			}
		}
		return tx.Iterate([]byte{'U'}, nil, false, func(k, _ []byte) (bool, error) {
			queued = append(queued, bytes.Clone(k[1:]))
			return true, nil
		})
	})
	flush()
	return pieces, queued, err
}

func appendRecord(b *bytes.Buffer, k, v []byte) { b.Write(appendRecordBytes(nil, k, v)) }

func appendRecordBytes(b, k, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func cutAfter(key []byte) bool {
	h := crypto.ContentID(key)
	return h[0] == 0
}

// ErrMalformed reports a piece that does not parse.
var ErrMalformed = errors.New("malformed snapshot piece")

// Records parses a piece.
func Records(piece []byte) ([]Record, error) {
	var out []Record
	r := bytes.NewReader(piece)
	for r.Len() > 0 {
		k, err := readField(r)
		if err != nil {
			return nil, err
		}
		v, err := readField(r)
		if err != nil {
			return nil, err
		}
		if len(k) == 0 {
			return nil, fmt.Errorf("%w: empty key", ErrMalformed)
		}
		out = append(out, Record{k, v})
	}
	return out, nil
}

func readField(r *bytes.Reader) ([]byte, error) {
	before := r.Len()
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if before-r.Len() != len(binary.AppendUvarint(nil, n)) {
		return nil, fmt.Errorf("%w: length not minimally encoded", ErrMalformed)
	}
	if n > uint64(r.Len()) {
		return nil, fmt.Errorf("%w: field of %d bytes with %d left", ErrMalformed, n, r.Len())
	}
	b := make([]byte, n)
	r.Read(b)
	return b, nil
}

// Load writes the records of pieces into db, which should be empty. Only
// the tags of DumpTags are accepted.
func Load(db *store.DB, pieces [][]byte) (int, error) {
	allowed := map[byte]bool{}
	for _, t := range DumpTags {
		allowed[t] = true
	}
	n := 0
	for i, p := range pieces {
		recs, err := Records(p)
		if err != nil {
			return n, fmt.Errorf("piece %d: %w", i, err)
		}
		for len(recs) > 0 {
			// Batches of at most 1000 records and 2 MiB: badger bounds a
			// transaction's size.
			var size int64
			end := 0
			for end < len(recs) && end < 1000 && size < 2<<20 {
				size += int64(len(recs[end].Key) + len(recs[end].Value))
				end++
			}
			batch := recs[:end]
			recs = recs[end:]
			err := db.Update(size, func(tx *store.Txn) error {
				for _, r := range batch {
					if !allowed[r.Key[0]] {
						return fmt.Errorf("%w: record with tag %q", ErrMalformed, r.Key[0])
					}
					if err := tx.Set(r.Key, r.Value); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return n, fmt.Errorf("piece %d: %w", i, err)
			}
			n += len(batch)
		}
	}
	return n, nil
}
