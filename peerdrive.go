package peerdrive

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// FormatVersion is the version of the on-disk format this code writes
// (docs/format.md). It reads every version from OldestFormatVersion on.
const FormatVersion = 2

// OldestFormatVersion is the oldest on-disk format this code reads. Version
// 1 differs from 2 only in lacking chunk envelope 0x02; a version 1 store
// opened for writing is upgraded by rewriting its format record.
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
