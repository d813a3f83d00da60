// Package segment packs sealed chunks into segments and erasure-codes a
// segment into shards for peers, Reed-Solomon style: any k of its k+m shards
// rebuild it. It sees only ciphertext.
package segment

import (
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

// Errors callers branch on.
var (
	ErrTooFewShards = errors.New("too few shards to rebuild the segment")
	ErrParams       = errors.New("bad erasure coding parameters")
)

// TargetSize is the size segments are packed up to. Small chunks are packed
// together so that the network never carries tiny objects; a single large
// chunk makes a segment of its own.
const TargetSize = 4 << 20

// Params are the erasure coding parameters of a segment.
type Params struct {
	K int `cbor:"1,keyasint"` // data shards
	M int `cbor:"2,keyasint"` // parity shards
}

// N is the number of shards.
func (p Params) N() int { return p.K + p.M }

func (p Params) valid() error {
	if p.K < 1 || p.M < 0 || p.K+p.M > 256 {
		return fmt.Errorf("%w: k=%d m=%d", ErrParams, p.K, p.M)
	}
	return nil
}

// ShardSize is the size of each shard of a segment of size bytes.
func (p Params) ShardSize(size int) int { return (size + p.K - 1) / p.K }

// Encoded is a segment cut into shards.
type Encoded struct {
	Shards [][]byte
	IDs    []peerdrive.ShardID // BLAKE3-256 of each shard
}

// Buffer returns an empty slice with room for the shards of a segment of
// up to size bytes: a segment packed into it (by appending) is encoded in
// place, without a copy.
func Buffer(p Params, size int) []byte {
	if p.K < 1 || size <= 0 {
		return nil
	}
	return make([]byte, 0, p.ShardSize(size)*p.N())
}

// Encode cuts seg into p.K data shards (the last zero-padded) and computes
// p.M parity shards. When seg's spare capacity holds all the shards (see
// Buffer), the shards are cut from seg's backing array, which then belongs
// to the result; otherwise seg is copied.
func Encode(p Params, seg []byte) (*Encoded, error) {
	if err := p.valid(); err != nil {
		return nil, err
	}
	if len(seg) == 0 {
		return nil, fmt.Errorf("%w: empty segment", ErrParams)
	}
	ss := p.ShardSize(len(seg))
	var buf []byte
	if cap(seg) >= ss*p.N() {
		buf = seg[:ss*p.N()]
		clear(buf[len(seg) : ss*p.K]) // the padding; parity is overwritten
	} else {
		buf = make([]byte, ss*p.N())
		copy(buf, seg)
	}
	shards := make([][]byte, p.N())
	for i := range shards {
		shards[i] = buf[i*ss : (i+1)*ss : (i+1)*ss]
	}
	if p.M > 0 {
		enc, err := reedsolomon.New(p.K, p.M)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrParams, err)
		}
		if err := enc.Encode(shards); err != nil {
			return nil, fmt.Errorf("encode segment: %w", err)
		}
	}
	e := &Encoded{Shards: shards, IDs: make([]peerdrive.ShardID, len(shards))}
	for i, s := range shards {
		e.IDs[i] = peerdrive.ShardID(crypto.ContentID(s))
	}
	return e, nil
}

// Decode rebuilds a segment of size bytes from its shards; missing shards
// are nil. Callers verify each shard against its ID before passing it in:
// Reed-Solomon cannot tell a wrong shard from a right one.
func Decode(p Params, shards [][]byte, size int) ([]byte, error) {
	return DecodeIn(p, shards, size, nil)
}

// DecodeIn is Decode for data shards read into buf, a DataBuffer: when every
// data shard is present in its place in buf, the segment is buf[:size],
// without a copy; otherwise it is a new slice.
func DecodeIn(p Params, shards [][]byte, size int, buf []byte) ([]byte, error) {
	if err := p.valid(); err != nil {
		return nil, err
	}
	if len(shards) != p.N() {
		return nil, fmt.Errorf("%w: %d shards for %d+%d", ErrParams, len(shards), p.K, p.M)
	}
	ss := p.ShardSize(size)
	have := 0
	for i, s := range shards {
		if s == nil {
			continue
		}
		if len(s) != ss {
			return nil, fmt.Errorf("shard %d is %d bytes, want %d: %w", i, len(s), ss, ErrParams)
		}
		have++
	}
	if have < p.K {
		return nil, fmt.Errorf("%w: have %d of %d needed", ErrTooFewShards, have, p.K)
	}
	dataPresent := true
	for _, s := range shards[:p.K] {
		if s == nil {
			dataPresent = false
		}
	}
	if !dataPresent {
		enc, err := reedsolomon.New(p.K, p.M)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrParams, err)
		}
		shards = append([][]byte(nil), shards...)
		if err := enc.ReconstructData(shards); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTooFewShards, err)
		}
	}
	if inPlace(shards[:p.K], ss, buf) {
		return buf[:size:size], nil
	}
	out := make([]byte, 0, ss*p.K)
	for _, s := range shards[:p.K] {
		out = append(out, s...)
	}
	return out[:size], nil
}

// DataBuffer returns an array for the data shards of a segment of size
// bytes, one after another: shard i (i < p.K) is DataShard(buf, p, size, i).
func DataBuffer(p Params, size int) []byte {
	if p.K < 1 || size <= 0 {
		return nil
	}
	return make([]byte, p.ShardSize(size)*p.K)
}

// DataShard is the room for data shard i in a DataBuffer, with no length
// and the shard's size as capacity.
func DataShard(buf []byte, p Params, size, i int) []byte {
	ss := p.ShardSize(size)
	if i < 0 || i >= p.K || len(buf) < ss*p.K {
		return nil
	}
	return buf[i*ss : i*ss : (i+1)*ss]
}

// inPlace reports whether shard i, ss bytes, is buf[i*ss:(i+1)*ss] for
// every shard.
func inPlace(shards [][]byte, ss int, buf []byte) bool {
	if ss == 0 || len(buf) < ss*len(shards) {
		return false
	}
	for i, s := range shards {
		if len(s) != ss || &s[0] != &buf[i*ss] {
			return false
		}
	}
	return true
}
