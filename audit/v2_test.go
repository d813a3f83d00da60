package audit

import (
	"bytes"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

// TestV2RootIsID: the version 2 root of a shard is BLAKE3-256 of its bytes
// (zeebo/blake3, the shard ID), for every size that shapes the tree
// differently, and every leaf's proof verifies against it.
func TestV2RootIsID(t *testing.T) {
	const L, C = LeafSize, 1024
	for _, size := range []int{0, 1, C - 1, C, C + 1, 2 * C, 3*C + 5, L - 1, L, L + 1, 2 * L, 3 * L,
		size5, 7*L + 1, 8 * L, 16 * L, 17*L - 3, 100_000, 1 << 20, 1<<20 + 1, 1398102, 4 << 20} {
		data := pattern(size)
		id := blake3.Sum256(data)
		n := int(Leaves(int64(size)))
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		root, proofs, err := ProveAllV2(data, all)
		if err != nil || root != id {
			t.Fatalf("size %d: root %x, %v; BLAKE3 %x", size, root, err, id)
		}
		answers := make([]Answer, n)
		for i := range n {
			answers[i] = Answer{Index: i, Data: Leaf(data, i), Proof: proofs[i], Version: Version2}
		}
		if err := CheckV2(id, int64(size), answers); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, _, err := ProveAllV2(data, []int{n}); !errors.Is(err, ErrRange) {
			t.Fatalf("size %d: ProveAllV2(leaf %d) = %v, want ErrRange", size, n, err)
		}
	}
}

// TestVerifyV2Rejects is the table of what must not verify in version 2.
func TestVerifyV2Rejects(t *testing.T) {
	data := pattern(size5)
	id := blake3.Sum256(data)
	_, ps, _ := ProveAllV2(data, []int{2, 4})
	p2, p4 := ps[0], ps[1]
	_, v1, _ := ProveAll(data, []int{2})
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	badSib := append(Proof(nil), p2...)
	badSib[1][7] ^= 0x80
	swapped := Proof{p2[1], p2[0], p2[2]}
	for _, tc := range []struct {
		name  string
		id    [32]byte
		size  int64
		leaf  int
		bytes []byte
		proof Proof
	}{
		{"tampered leaf", id, size5, 2, flip(Leaf(data, 2), 100), p2},
		{"tampered last byte", id, size5, 4, flip(Leaf(data, 4), 903), p4},
		{"wrong index", id, size5, 3, Leaf(data, 2), p2},
		{"leaf of another index", id, size5, 2, Leaf(data, 3), p2},
		{"truncated proof", id, size5, 2, Leaf(data, 2), p2[:len(p2)-1]},
		{"empty proof", id, size5, 2, Leaf(data, 2), nil},
		{"extra sibling", id, size5, 2, Leaf(data, 2), append(append(Proof(nil), p2...), [32]byte{})},
		{"tampered sibling", id, size5, 2, Leaf(data, 2), badSib},
		{"siblings swapped", id, size5, 2, Leaf(data, 2), swapped},
		{"version 1 proof", id, size5, 2, Leaf(data, 2), v1[0]},
		{"wrong size", id, size5 + 1, 4, append(bytes.Clone(Leaf(data, 4)), 0), p4},
		{"wrong size, same leaves", id, size5 - 1, 4, Leaf(data, 4)[:903], p4},
		{"short leaf", id, size5, 2, Leaf(data, 2)[:1000], p2},
		{"index past the end", id, size5, 5, Leaf(data, 4), p4},
		{"negative index", id, size5, -1, Leaf(data, 0), p2},
		{"other shard", blake3.Sum256(pattern(size5 - 1)), size5, 2, Leaf(data, 2), p2},
		{"version 1 root", Root(data), size5, 2, Leaf(data, 2), p2},
	} {
		if err := VerifyV2(tc.id, tc.size, tc.leaf, tc.bytes, tc.proof); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: VerifyV2 = %v, want ErrMismatch", tc.name, err)
		}
	}
	// A version 1 answer to a version 2 audit is not a mismatch: the peer
	// is older, not lying.
	a := []Answer{{Index: 2, Data: Leaf(data, 2), Proof: v1[0], Version: Version1}}
	if err := CheckV2(id, size5, a); !errors.Is(err, ErrVersion) {
		t.Errorf("CheckV2 of a version 1 answer = %v, want ErrVersion", err)
	}
	a[0].Version, a[0].Proof = Version2, p2
	if err := Check(Root(data), size5, a); !errors.Is(err, ErrVersion) {
		t.Errorf("Check of a version 2 answer = %v, want ErrVersion", err)
	}
}

// TestGoldenV2 pins version 2 (docs/audit.md §1.2): the same shard as
// golden-v1.json; its root is the shard's BLAKE3-256.
func TestGoldenV2(t *testing.T) {
	path := filepath.Join("testdata", "golden-v2.json")
	data := pattern(size5)
	root, proofs, _ := ProveAllV2(data, []int{0, 4})
	g := golden{Size: size5, Root: hex.EncodeToString(root[:]), Proofs: map[string]string{}}
	for k, i := range []int{0, 4} {
		b, _ := proofs[k].AppendVersion(nil, Version2)
		g.Proofs[string(rune('0'+i))] = hex.EncodeToString(b)
	}
	want := syncGolden(t, path, g)
	if id := blake3.Sum256(data); want.Root != hex.EncodeToString(id[:]) || want.Size != g.Size {
		t.Fatalf("golden root %s is not the shard's BLAKE3 %x", want.Root, id)
	}
	for k, v := range want.Proofs {
		if g.Proofs[k] != v {
			t.Errorf("proof of leaf %s differs from the golden one", k)
		}
		pb, _ := hex.DecodeString(v)
		p, ver, rest, err := DecodeProof(pb)
		if err != nil || ver != Version2 || len(rest) != 0 {
			t.Fatalf("golden proof of leaf %s: version %d, %v", k, ver, err)
		}
		i := int(k[0] - '0')
		if err := VerifyV2(root, size5, i, Leaf(data, i), p); err != nil {
			t.Errorf("golden proof of leaf %d: %v", i, err)
		}
	}
}

func BenchmarkProveV2_1MiB(b *testing.B) {
	data := pattern(1 << 20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		ProveAllV2(data, []int{1, 100, 200, 255})
	}
}
