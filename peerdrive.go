package peerdrive

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// FormatVersion is the version of the on-disk format this code writes
// (docs/format.md). It reads every version from OldestFormatVersion on.
const FormatVersion = 3

// OldestFormatVersion is the oldest on-disk format this code reads. Version
// 1 differs from 2 only in lacking chunk envelope 0x02 and patch records,
// and 2 from 3 only in lacking chunk locations that record the chunk's
// tag; an older store opened for writing is upgraded by rewriting its
// format record.
const OldestFormatVersion = 1

// ChunkSize is the largest plaintext a chunk holds: file data is cut at
// multiples of ChunkSize from the start of the file.
const ChunkSize = 1 << 20

// RootIno is the inode number of the drive's root directory.
const RootIno Ino = 1

// Ino is an inode number. It is stable for the life of the file.
type Ino uint64

// ChunkID names a sealed chunk: the BLAKE3-256 hash of its sealed bytes, so
// anyone can verify a chunk without a key.
type ChunkID [32]byte

// String returns the ID in lowercase hex.
func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for logs.
func (id ChunkID) Short() string { return hex.EncodeToString(id[:6]) }

// ParseChunkID parses the hex form of an ID.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("chunk id %q: %w", s, ErrMalformed)
	}
	copy(id[:], b)
	return id, nil
}

// ErrMalformed reports a record that does not decode.
var ErrMalformed = errors.New("malformed record")

// Inode is the stored attributes of a file, directory, symlink or special
// file. Times are nanoseconds since the Unix epoch.
type Inode struct {
	Mode   uint32 `cbor:"1,keyasint"` // type and permission bits, as st_mode
	UID    uint32 `cbor:"2,keyasint,omitempty"`
	GID    uint32 `cbor:"3,keyasint,omitempty"`
	Size   uint64 `cbor:"4,keyasint,omitempty"`
	Nlink  uint32 `cbor:"5,keyasint"`
	Rdev   uint32 `cbor:"6,keyasint,omitempty"`
	Atime  int64  `cbor:"7,keyasint"`
	Mtime  int64  `cbor:"8,keyasint"`
	Ctime  int64  `cbor:"9,keyasint"`
	Target string `cbor:"10,keyasint,omitempty"` // symlink target
	Btime  int64  `cbor:"11,keyasint,omitempty"` // creation time
	// Alloc is 1 + the plaintext bytes of a regular file's chunks (holes
	// take none), for st_blocks; 0 means unknown (an inode written before
	// the field), and st_blocks then follows the size.
	Alloc uint64 `cbor:"12,keyasint,omitempty"`
}

// Dirent is one name in a directory.
type Dirent struct {
	Name string `cbor:"1,keyasint"`
	Ino  Ino    `cbor:"2,keyasint"`
	Mode uint32 `cbor:"3,keyasint"` // type bits of the child (S_IFMT part)
}

// ChunkRef places a chunk in a file: the chunk at index i covers bytes
// [i*ChunkSize, i*ChunkSize+Len).
type ChunkRef struct {
	ID  ChunkID `cbor:"1,keyasint"`
	Len uint32  `cbor:"2,keyasint"` // plaintext length
}

// Patch is bytes written to a chunk since it was stored, kept at fsync
// instead of the whole chunk (docs/format.md §5.9). A chunk's patches are
// numbered; in order, over Base's plaintext (zeros past its end, all zeros
// for a zero Base), they give the chunk: Len is its length once the patch
// is applied.
type Patch struct {
	Base    ChunkID       `cbor:"1,keyasint"`
	Len     uint32        `cbor:"2,keyasint"`
	Extents []PatchExtent `cbor:"3,keyasint"`
}

// PatchExtent is bytes of a patched chunk, at offset Off within it.
type PatchExtent struct {
	Off  uint32 `cbor:"1,keyasint"`
	Data []byte `cbor:"2,keyasint"`
}

// ApplyPatches returns the plaintext of a chunk whose base plaintext is base
// (nil for none) after ps, in order. They must share one Base (the caller
// checks it is the base's ID), their Len must not shrink, and each one's
// extents must be in order, disjoint, non-empty and within its Len; else
// the error wraps ErrMalformed.
func ApplyPatches(base []byte, ps []Patch) ([]byte, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("no patches: %w", ErrMalformed)
	}
	last := ps[len(ps)-1].Len
	if last == 0 || last > ChunkSize {
		return nil, fmt.Errorf("patched chunk of %d bytes: %w", last, ErrMalformed)
	}
	out := make([]byte, last)
	copy(out, base)
	prevLen := uint32(0)
	for i, p := range ps {
		if p.Base != ps[0].Base || p.Len < prevLen {
			return nil, fmt.Errorf("patch %d: base or length differs from the patches before: %w", i, ErrMalformed)
		}
		prevLen = p.Len
		end := uint64(0)
		for _, e := range p.Extents {
			if uint64(e.Off) < end || uint64(e.Off)+uint64(len(e.Data)) > uint64(p.Len) || len(e.Data) == 0 {
				return nil, fmt.Errorf("patch %d: extent [%d, +%d) in %d bytes after %d: %w", i, e.Off, len(e.Data), p.Len, end, ErrMalformed)
			}
			copy(out[e.Off:], e.Data)
			end = uint64(e.Off) + uint64(len(e.Data))
		}
	}
	return out, nil
}

// ChunkInfo is the bookkeeping of one stored chunk.
type ChunkInfo struct {
	Refs   uint64   `cbor:"1,keyasint"` // chunk map entries pointing here
	Dedup  [32]byte `cbor:"2,keyasint"` // keyed hash of the plaintext
	Len    uint32   `cbor:"3,keyasint"` // plaintext length
	Sealed uint32   `cbor:"4,keyasint"` // sealed length
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string `cbor:"1,keyasint"`
	Value []byte `cbor:"2,keyasint"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  4,
		MaxArrayElements: 1 << 16,
		MaxMapPairs:      64,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		// Names, symlink targets and xattr names are Linux's: bytes, not
		// necessarily UTF-8. They are written unchanged as text strings,
		// so a text string is read as the bytes it holds.
		UTF8: cbor.UTF8DecodeInvalid,
		// Unknown fields are ignored: a newer minor version may add some.
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes a record (a pointer to one of the record types of this
// package or of a package that stores its own) in canonical CBOR.
func Marshal(r any) ([]byte, error) { return encMode.Marshal(r) }

// Unmarshal decodes a record; a decoding failure wraps ErrMalformed.
func Unmarshal(b []byte, r any) error {
	if err := decMode.Unmarshal(b, r); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// ShardID names an erasure-coded shard stored on a peer: the BLAKE3-256 hash
// of its bytes. Peers verify shards by it without any key.
type ShardID [32]byte

// String returns the ID in lowercase hex.
func (id ShardID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for logs.
func (id ShardID) Short() string { return hex.EncodeToString(id[:6]) }
