package crypto

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestDecryptChunkRange: every part of a version 2 envelope decrypts to the
// same bytes as the whole, at offsets inside and across AES blocks; version
// 1 has no partial decryption.
func TestDecryptChunkRange(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	k2 := sealingChunks(k, envelopeV2)
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 15, 16, 17, 1000, 65536 + 7, 1 << 20} {
		plain := make([]byte, size)
		for i := range plain {
			plain[i] = byte(r.Uint32())
		}
		env := k2.SealChunk(nil, plain)
		if !PartialOpen(env[:ChunkHeaderSize]) {
			t.Fatal("version 2 envelope not partially openable")
		}
		ranges := [][2]int{{0, size}, {0, min(size, 1)}, {size, size}}
		for range 50 {
			a := r.IntN(size + 1)
			ranges = append(ranges, [2]int{a, a + r.IntN(size-a+1)})
		}
		for _, rg := range ranges {
			a, b := rg[0], rg[1]
			ct := env[ChunkHeaderSize+a : ChunkHeaderSize+b]
			got, err := k.DecryptChunkRange([]byte("x"), env[:ChunkHeaderSize], ct, int64(a))
			if err != nil || !bytes.Equal(got[1:], plain[a:b]) || got[0] != 'x' {
				t.Fatalf("size %d, [%d, %d): %v", size, a, b, err)
			}
		}
	}
	env1 := sealingChunks(k, envelopeV1).SealChunk(nil, []byte("version one"))
	if _, err := k.DecryptChunkRange(nil, env1[:ChunkHeaderSize], env1[ChunkHeaderSize:ChunkHeaderSize+3], 0); !errors.Is(err, ErrNoRange) || PartialOpen(env1) {
		t.Fatalf("version 1: %v, want ErrNoRange", err)
	}
	env := k2.SealChunk(nil, []byte("abc"))
	for name, c := range map[string]struct {
		header []byte
		off    int64
	}{
		"short header":     {env[:ChunkHeaderSize-1], 0},
		"negative offset":  {env[:ChunkHeaderSize], -1},
		"past the counter": {env[:ChunkHeaderSize], maxRangeEnd},
	} {
		if _, err := k.DecryptChunkRange(nil, c.header, env[ChunkHeaderSize:ChunkHeaderSize+1], c.off); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func BenchmarkDecryptChunkRange4K(b *testing.B) {
	k := DeriveKeys(testDriveKey())
	env := sealingChunks(k, envelopeV2).SealChunk(nil, make([]byte, 1<<20))
	b.SetBytes(4096)
	for b.Loop() {
		k.DecryptChunkRange(nil, env[:ChunkHeaderSize], env[ChunkHeaderSize+500000:ChunkHeaderSize+504096], 500000)
	}
}
