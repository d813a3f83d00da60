package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

var update = flag.Bool("update", false, "rewrite the golden fixture")

// size5 is a shard of 5 leaves, an odd count, the last one 904 bytes.
const size5 = 4*LeafSize + 904

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// TestProveVerify proves and verifies every leaf of shards of many sizes:
// empty, one short leaf, exact powers of two, odd leaf counts.
func TestProveVerify(t *testing.T) {
	const L = LeafSize
	for _, size := range []int{0, 1, L - 1, L, L + 1, 2 * L, 3 * L, size5, 7*L + 1, 16 * L, 17*L - 3, 100_000} {
		data := pattern(size)
		root := Root(data)
		n := int(Leaves(int64(size)))
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		root2, proofs, err := ProveAll(data, all)
		if err != nil || root2 != root {
			t.Fatalf("size %d: ProveAll root %x, %v; Root %x", size, root2, err, root)
		}
		for i := range n {
			p, err := Prove(data, i)
			if err != nil {
				t.Fatalf("size %d leaf %d: %v", size, i, err)
			}
			if len(p) != len(proofs[i]) {
				t.Fatalf("size %d leaf %d: Prove and ProveAll differ", size, i)
			}
			if err := Verify(root, int64(size), i, Leaf(data, i), p); err != nil {
				t.Fatalf("size %d leaf %d: %v", size, i, err)
			}
		}
		if _, err := Prove(data, n); !errors.Is(err, ErrRange) {
			t.Fatalf("size %d: Prove(leaf %d) = %v, want ErrRange", size, n, err)
		}
	}
}

// TestVerifyRejects is the table of what must not verify.
func TestVerifyRejects(t *testing.T) {
	data := pattern(size5) // 5 leaves: an odd count, the last short
	root := Root(data)
	p2, _ := Prove(data, 2)
	p4, _ := Prove(data, 4)
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	badSib := append(Proof(nil), p2...)
	badSib[1][7] ^= 0x80
	for _, tc := range []struct {
		name  string
		root  [32]byte
		size  int64
		leaf  int
		bytes []byte
		proof Proof
	}{
		{"tampered leaf", root, size5, 2, flip(Leaf(data, 2), 100), p2},
		{"wrong index", root, size5, 3, Leaf(data, 2), p2},
		{"leaf of another index", root, size5, 2, Leaf(data, 3), p2},
		{"truncated proof", root, size5, 2, Leaf(data, 2), p2[:len(p2)-1]},
		{"empty proof", root, size5, 2, Leaf(data, 2), nil},
		{"extra sibling", root, size5, 2, Leaf(data, 2), append(append(Proof(nil), p2...), [32]byte{})},
		{"tampered sibling", root, size5, 2, Leaf(data, 2), badSib},
		{"wrong size", root, size5 + 1, 4, append(bytes.Clone(Leaf(data, 4)), 0), p4},
		{"wrong size, same leaves", root, size5 - 1, 4, Leaf(data, 4)[:903], p4},
		{"short leaf", root, size5, 2, Leaf(data, 2)[:1000], p2},
		{"index past the end", root, size5, 5, Leaf(data, 4), p4},
		{"negative index", root, size5, -1, Leaf(data, 0), p2},
		{"other root", Root(pattern(size5 - 1)), size5, 2, Leaf(data, 2), p2},
	} {
		if err := Verify(tc.root, tc.size, tc.leaf, tc.bytes, tc.proof); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: Verify = %v, want ErrMismatch", tc.name, err)
		}
	}
}

// TestDomains checks that a one-leaf root is not the plain BLAKE3 of the
// data (the shard ID) and that roots commit to the size.
func TestDomains(t *testing.T) {
	if Root(nil) == Root([]byte{0}) {
		t.Fatal("empty and one zero byte share a root")
	}
	if Root(make([]byte, LeafSize)) == Root(make([]byte, LeafSize-1)) {
		t.Fatal("sizes LeafSize-1 and LeafSize of zeros share a root")
	}
}

func TestProofEncoding(t *testing.T) {
	p, _ := Prove(pattern(1<<20), 201)
	if len(p) != 8 {
		t.Fatalf("1 MiB shard: %d siblings, want 8", len(p))
	}
	b, err := p.MarshalBinary()
	if err != nil || len(b) != 258 || len(b) != p.EncodedLen() {
		t.Fatalf("encoded %d bytes, %v; want 258", len(b), err)
	}
	var q Proof
	if err := q.UnmarshalBinary(b); err != nil || len(q) != len(p) || q[7] != p[7] {
		t.Fatalf("round trip: %v", err)
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{3}, b[1:]...),
		"truncated": b[:len(b)-1],
		"trailing":  append(bytes.Clone(b), 0),
		"count":     {1, 65},
	} {
		if err := q.UnmarshalBinary(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

type golden struct {
	Size   int64             `json:"size"`
	Root   string            `json:"root"`
	Proofs map[string]string `json:"proofs"` // leaf index -> encoded proof, hex
}

// syncGolden rewrites the fixture at path with g under -update, and
// returns the fixture.
func syncGolden(t *testing.T, path string, g golden) golden {
	t.Helper()
	if *update {
		b, _ := json.MarshalIndent(g, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want golden
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestGolden pins version 1 of the tree (docs/audit.md §1).
func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "golden-v1.json")
	data := pattern(size5)
	root := Root(data)
	g := golden{Size: size5, Root: hex.EncodeToString(root[:]), Proofs: map[string]string{}}
	for _, i := range []int{0, 4} {
		p, _ := Prove(data, i)
		b, _ := p.MarshalBinary()
		g.Proofs[string(rune('0'+i))] = hex.EncodeToString(b)
	}
	want := syncGolden(t, path, g)
	if want.Root != g.Root || want.Size != g.Size {
		t.Fatalf("root %s, golden %s", g.Root, want.Root)
	}
	for k, v := range want.Proofs {
		if g.Proofs[k] != v {
			t.Errorf("proof of leaf %s differs from the golden one", k)
		}
		pb, _ := hex.DecodeString(v)
		var p Proof
		if err := p.UnmarshalBinary(pb); err != nil {
			t.Fatal(err)
		}
		i := int(k[0] - '0')
		if err := Verify(root, size5, i, Leaf(data, i), p); err != nil {
			t.Errorf("golden proof of leaf %d: %v", i, err)
		}
	}
}

// FuzzDecodeProof: a proof that decodes encodes back to the same bytes,
// and verifying it against anything never panics.
func FuzzDecodeProof(f *testing.F) {
	p, _ := Prove(pattern(size5), 2)
	b, _ := p.MarshalBinary()
	f.Add(b, 2)
	f.Add([]byte{1, 0}, 0)
	f.Add([]byte{1, 65}, 1)
	f.Add([]byte{}, 0)
	_, p2, _ := ProveAllV2(pattern(size5), []int{3})
	b2, _ := p2[0].AppendVersion(nil, Version2)
	f.Add(b2, 3)
	root := Root(pattern(size5))
	id := blake3.Sum256(pattern(size5))
	f.Fuzz(func(t *testing.T, b []byte, leaf int) {
		p, v, rest, err := DecodeProof(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		again, err := p.AppendVersion(nil, v)
		if err != nil || !bytes.Equal(again, b[:len(b)-len(rest)]) {
			t.Fatalf("round trip: %x, %v", again, err)
		}
		_ = Verify(root, size5, leaf, Leaf(pattern(size5), leaf%5), p)
		_ = VerifyV2(id, size5, leaf, Leaf(pattern(size5), leaf%5), p)
	})
}

func BenchmarkRoot1MiB(b *testing.B) {
	data := pattern(1 << 20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Root(data)
	}
}
