package audit

import (
	"encoding/binary"
	"errors"
	"fmt"

	"lukechampine.com/blake3/guts"
)

// Version 2 (docs/audit.md §1.2): the audit tree is BLAKE3's own hash tree,
// so a shard's audit root is its ID, BLAKE3-256 of its bytes, and the owner
// computes nothing at upload beyond the ID. A leaf (4 KiB, four BLAKE3
// chunks, the same leaves as version 1) is a node of that tree: BLAKE3
// splits a run of chunks at the largest power of two below its length, so
// every 4-chunk-aligned run is a subtree, the last one included.

// Proof versions: the first byte of an encoded proof.
const (
	Version1 = 1
	Version2 = 2
)

// ErrVersion: an answer of another version than the one asked for (an
// older peer answers version 1 to a version 2 request).
var ErrVersion = errors.New("audit answer of another version")

// groupBuf is the scratch buffer CompressBuffer wants: its SIMD code reads
// whole blocks of chunks, past the bytes it is given.
type groupBuf = [guts.MaxSIMD * guts.ChunkSize]byte

// leafNode is the BLAKE3 node of leaf i, whose bytes are b, not yet
// compressed: the root flag goes on it when it is the whole tree.
func leafNode(buf *groupBuf, i int, b []byte) guts.Node {
	n := copy(buf[:], b)
	return guts.CompressBuffer(buf, n, &guts.IV, uint64(i)*LeafSize/guts.ChunkSize, 0)
}

// parentNode is the BLAKE3 parent of two chaining values.
func parentNode(l, r *[8]uint32) guts.Node { return guts.ParentNode(*l, *r, &guts.IV, 0) }

// rootOf finalizes the top node of the tree: the BLAKE3-256 hash.
func rootOf(n guts.Node) (out [32]byte) {
	n.Flags |= guts.FlagRoot
	w := guts.CompressNode(n)
	for i := range 8 {
		binary.LittleEndian.PutUint32(out[4*i:], w[i])
	}
	return out
}

func cvBytes(cv *[8]uint32) (out [32]byte) {
	for i := range 8 {
		binary.LittleEndian.PutUint32(out[4*i:], cv[i])
	}
	return out
}

func cvWords(b *[32]byte) (cv [8]uint32) {
	for i := range 8 {
		cv[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return cv
}

// ProveAllV2 returns the BLAKE3-256 hash of data (its audit root in
// version 2) and the version 2 proofs of the given leaves: the chaining
// values of the siblings on each leaf's path, from the leaf's level up.
func ProveAllV2(data []byte, leaves []int) ([32]byte, []Proof, error) {
	if err := checkLeaves(int64(len(data)), leaves); err != nil {
		return [32]byte{}, nil, err
	}
	var buf groupBuf
	proofs := make([]Proof, len(leaves))
	n := Leaves(int64(len(data)))
	if n == 1 {
		return rootOf(leafNode(&buf, 0, data)), proofs, nil
	}
	level := make([][32]byte, n)
	for i := range level {
		cv := guts.ChainingValue(leafNode(&buf, i, Leaf(data, i)))
		level[i] = cvBytes(&cv)
	}
	idx := append([]int(nil), leaves...)
	for len(level) > 2 {
		addSiblings(level, idx, proofs)
		level = up(level, parentCV)
	}
	addSiblings(level, idx, proofs)
	l, r := cvWords(&level[0]), cvWords(&level[1])
	return rootOf(parentNode(&l, &r)), proofs, nil
}

// parentCV is the chaining value of the parent of two chaining values, as
// bytes.
func parentCV(a, b *[32]byte) [32]byte {
	l, r := cvWords(a), cvWords(b)
	cv := guts.ChainingValue(parentNode(&l, &r))
	return cvBytes(&cv)
}

// VerifyV2 checks that leafBytes is leaf number leaf of the shard of size
// bytes whose ID (BLAKE3-256) is id, with a version 2 proof. It returns nil
// or an error wrapping ErrMismatch.
func VerifyV2(id [32]byte, size int64, leaf int, leafBytes []byte, proof Proof) error {
	if err := checkLeaf(size, leaf, leafBytes); err != nil {
		return err
	}
	var buf groupBuf
	node := leafNode(&buf, leaf, leafBytes)
	err := walk(size, leaf, proof, func(sb *[32]byte, left bool) {
		s, cur := cvWords(sb), guts.ChainingValue(node)
		if left {
			node = parentNode(&cur, &s)
		} else {
			node = parentNode(&s, &cur)
		}
	})
	if err != nil {
		return err
	}
	if rootOf(node) != id {
		return fmt.Errorf("leaf %d: %w", leaf, ErrMismatch)
	}
	return nil
}

// CheckV2 verifies answers of version 2 against the ID and size of the
// shard: ErrVersion if one is of another version, ErrMismatch if one does
// not verify.
func CheckV2(id [32]byte, size int64, answers []Answer) error {
	return check(Version2, VerifyV2, id, size, answers)
}
