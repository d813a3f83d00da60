// Package audit is the proof of storage: a Merkle tree over a shard's bytes
// whose root the owner keeps, and proofs that a leaf belongs to it, so that a
// peer can show it still holds a shard by sending a few random leaves
// instead of the whole shard. The formats are docs/audit.md §1: version 1,
// a tree of its own, and version 2, BLAKE3's tree, whose root is the shard's
// ID.
package audit

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// LeafSize is the size of a leaf: every leaf but the last is this long.
// 4 KiB, four BLAKE3 chunks, lets BLAKE3 hash a leaf's chunks in parallel
// (SIMD): 1 KiB leaves made the tree three times slower to build.
const LeafSize = 4096

// leafContext is the BLAKE3 key derivation context of leaf hashes: leaves
// are hashed in derive-key mode, nodes and the root in plain mode with a
// prefix byte, so no hash of one kind is a hash of another.
const leafContext = "peerdrive 2026-11-28 audit v1 leaf"

// MaxProofLen is the most siblings a proof may hold (a tree of 2^64 leaves).
const MaxProofLen = 64

// Domain prefixes of inner nodes and the root.
const (
	prefixNode = 0x01
	prefixRoot = 0x02
)

// Errors callers branch on.
var (
	// ErrMismatch: the leaf and proof do not lead to the root.
	ErrMismatch = errors.New("audit proof does not match the root")
	// ErrMalformed: an encoded proof that does not decode.
	ErrMalformed = errors.New("malformed audit proof")
	// ErrRange: a leaf index not below the leaf count.
	ErrRange = errors.New("audit leaf index out of range")
)

// Answer is one leaf of a shard as a peer sent it in answer to an audit,
// not verified until Check or Verify (CheckV2 or VerifyV2) says so.
type Answer struct {
	Index   int
	Data    []byte
	Proof   Proof
	Version byte // of the proof: Version1 or Version2
}

// Check verifies every answer, of version 1, against the root and size of
// the shard.
func Check(root [32]byte, size int64, answers []Answer) error {
	return check(Version1, Verify, root, size, answers)
}

// check verifies every answer, which must be of version v, with verify.
func check(v byte, verify func([32]byte, int64, int, []byte, Proof) error, root [32]byte, size int64, answers []Answer) error {
	for _, a := range answers {
		if a.Version != v {
			return fmt.Errorf("leaf %d: version %d: %w", a.Index, a.Version, ErrVersion)
		}
		if err := verify(root, size, a.Index, a.Data, a.Proof); err != nil {
			return err
		}
	}
	return nil
}

// Proof is the sibling hashes on the path from a leaf to the top, from the
// leaf's level upward.
type Proof [][32]byte

// Leaves is the number of leaves of a shard of size bytes.
func Leaves(size int64) int64 {
	if size <= 0 {
		return 1
	}
	return (size + LeafSize - 1) / LeafSize
}

// Leaf returns leaf i of data (a sub-slice), or nil if i is out of range.
func Leaf(data []byte, i int) []byte {
	if i < 0 || int64(i) >= Leaves(int64(len(data))) {
		return nil
	}
	lo := i * LeafSize
	return data[lo:min(lo+LeafSize, len(data))]
}

// leafHasher hashes leaves, in derive-key mode.
type leafHasher struct{ h *blake3.Hasher }

func newHasher() leafHasher { return leafHasher{blake3.NewDeriveKey(leafContext)} }

func leafHash(h leafHasher, b []byte) (out [32]byte) {
	h.h.Reset()
	h.h.Write(b)
	h.h.Sum(out[:0])
	return out
}

func nodeHash(a, b *[32]byte) (out [32]byte) {
	var buf [65]byte
	buf[0] = prefixNode
	copy(buf[1:], a[:])
	copy(buf[33:], b[:])
	return blake3.Sum256(buf[:])
}

func rootHash(size int64, top *[32]byte) (out [32]byte) {
	var buf [41]byte
	buf[0] = prefixRoot
	binary.BigEndian.PutUint64(buf[1:9], uint64(size))
	copy(buf[9:], top[:])
	return blake3.Sum256(buf[:])
}

// levels returns level 0 (the leaf hashes) of data.
func leafLevel(h leafHasher, data []byte) [][32]byte {
	n := Leaves(int64(len(data)))
	level := make([][32]byte, n)
	for i := range level {
		level[i] = leafHash(h, Leaf(data, i))
	}
	return level
}

// up computes the next level, in place, joining pairs with node; an odd
// last node goes up unchanged (both versions).
func up(level [][32]byte, node func(a, b *[32]byte) [32]byte) [][32]byte {
	next := level[:0]
	for i := 0; i < len(level); i += 2 {
		if i+1 == len(level) {
			next = append(next, level[i])
		} else {
			next = append(next, node(&level[i], &level[i+1]))
		}
	}
	return next
}

// checkLeaves checks that every index of leaves is a leaf of a shard of
// size bytes.
func checkLeaves(size int64, leaves []int) error {
	n := Leaves(size)
	for _, i := range leaves {
		if i < 0 || int64(i) >= n {
			return fmt.Errorf("leaf %d of %d: %w", i, n, ErrRange)
		}
	}
	return nil
}

// addSiblings appends to proofs[k] the sibling at level of the node on
// the path of idx[k] (none for an odd last node), and moves idx[k] up to
// the next level (both versions).
func addSiblings(level [][32]byte, idx []int, proofs []Proof) {
	for k, i := range idx {
		if i%2 == 1 {
			proofs[k] = append(proofs[k], level[i-1])
		} else if i+1 < len(level) {
			proofs[k] = append(proofs[k], level[i+1])
		}
		idx[k] = i / 2
	}
}

// Root is the audit root of a shard's bytes.
func Root(data []byte) [32]byte {
	level := leafLevel(newHasher(), data)
	for len(level) > 1 {
		level = up(level, nodeHash)
	}
	return rootHash(int64(len(data)), &level[0])
}

// Prove returns the proof of leaf i of data.
func Prove(data []byte, leaf int) (Proof, error) {
	var p Proof
	_, proofs, err := ProveAll(data, []int{leaf})
	if err == nil {
		p = proofs[0]
	}
	return p, err
}

// ProveAll returns the root of data and the proofs of the given leaves, in
// one pass over the tree.
func ProveAll(data []byte, leaves []int) ([32]byte, []Proof, error) {
	if err := checkLeaves(int64(len(data)), leaves); err != nil {
		return [32]byte{}, nil, err
	}
	level := leafLevel(newHasher(), data)
	proofs := make([]Proof, len(leaves))
	idx := append([]int(nil), leaves...)
	for len(level) > 1 {
		addSiblings(level, idx, proofs)
		level = up(level, nodeHash)
	}
	return rootHash(int64(len(data)), &level[0]), proofs, nil
}

// Verify checks that leafBytes is leaf number leaf of the shard of size
// bytes whose audit root is root, with proof. It returns nil or an error
// wrapping ErrMismatch.
func Verify(root [32]byte, size int64, leaf int, leafBytes []byte, proof Proof) error {
	if err := checkLeaf(size, leaf, leafBytes); err != nil {
		return err
	}
	h := newHasher()
	cur := leafHash(h, leafBytes)
	err := walk(size, leaf, proof, func(s *[32]byte, left bool) {
		if left {
			cur = nodeHash(&cur, s)
		} else {
			cur = nodeHash(s, &cur)
		}
	})
	if err != nil {
		return err
	}
	if rootHash(size, &cur) != root {
		return fmt.Errorf("leaf %d: %w", leaf, ErrMismatch)
	}
	return nil
}

// checkLeaf checks that leaf is a leaf of a shard of size bytes and that
// leafBytes is as long as that leaf (both versions).
func checkLeaf(size int64, leaf int, leafBytes []byte) error {
	n := Leaves(size)
	if size < 0 || leaf < 0 || int64(leaf) >= n {
		return fmt.Errorf("leaf %d of %d: %w", leaf, n, ErrMismatch)
	}
	want := int64(LeafSize)
	if int64(leaf) == n-1 {
		want = size - int64(leaf)*LeafSize
	}
	if int64(len(leafBytes)) != want {
		return fmt.Errorf("leaf %d is %d bytes, want %d: %w", leaf, len(leafBytes), want, ErrMismatch)
	}
	return nil
}

// walk goes up the path of leaf in the tree of a shard of size bytes (the
// same shape in both versions) and calls up with each sibling of proof, in
// order, and whether the path's node is the left child. The levels where
// the path's node is an odd last node have no sibling. Every sibling must
// be used exactly once.
func walk(size int64, leaf int, proof Proof, up func(s *[32]byte, left bool)) error {
	i, count, used := int64(leaf), Leaves(size), 0
	for count > 1 {
		if !(i == count-1 && count%2 == 1) {
			if used >= len(proof) {
				return fmt.Errorf("proof of leaf %d too short: %w", leaf, ErrMismatch)
			}
			up(&proof[used], i%2 == 0)
			used++
		}
		i /= 2
		count = (count + 1) / 2
	}
	if used != len(proof) {
		return fmt.Errorf("proof of leaf %d has %d siblings, want %d: %w", leaf, len(proof), used, ErrMismatch)
	}
	return nil
}

// EncodedLen is the length of p encoded.
func (p Proof) EncodedLen() int { return 2 + 32*len(p) }

// AppendBinary appends p's encoding as a version 1 proof (docs/audit.md §1)
// to b.
func (p Proof) AppendBinary(b []byte) ([]byte, error) { return p.AppendVersion(b, Version1) }

// AppendVersion appends p's encoding as a proof of version v to b.
func (p Proof) AppendVersion(b []byte, v byte) ([]byte, error) {
	if len(p) > MaxProofLen {
		return b, fmt.Errorf("%d siblings: %w", len(p), ErrMalformed)
	}
	if v != Version1 && v != Version2 {
		return b, fmt.Errorf("version %d: %w", v, ErrMalformed)
	}
	b = append(b, v, byte(len(p)))
	for i := range p {
		b = append(b, p[i][:]...)
	}
	return b, nil
}

// MarshalBinary encodes p.
func (p Proof) MarshalBinary() ([]byte, error) { return p.AppendBinary(nil) }

// DecodeProof decodes a proof of either version at the start of b and
// returns it with its version and the bytes that follow it.
func DecodeProof(b []byte) (Proof, byte, []byte, error) {
	p, rest, err := decodeProof(b)
	if err != nil {
		return nil, 0, b, err
	}
	return p, b[0], rest, nil
}

func decodeProof(b []byte) (Proof, []byte, error) {
	if len(b) < 2 {
		return nil, b, fmt.Errorf("%d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != Version1 && b[0] != Version2 {
		return nil, b, fmt.Errorf("version %d: %w", b[0], ErrMalformed)
	}
	c := int(b[1])
	if c > MaxProofLen {
		return nil, b, fmt.Errorf("%d siblings: %w", c, ErrMalformed)
	}
	if len(b) < 2+32*c {
		return nil, b, fmt.Errorf("%d siblings in %d bytes: %w", c, len(b), ErrMalformed)
	}
	p := make(Proof, c)
	for i := range p {
		copy(p[i][:], b[2+32*i:])
	}
	return p, b[2+32*c:], nil
}

// UnmarshalBinary decodes exactly one proof, of either version.
func (p *Proof) UnmarshalBinary(b []byte) error {
	q, rest, err := decodeProof(b)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d trailing bytes: %w", len(rest), ErrMalformed)
	}
	*p = q
	return nil
}
