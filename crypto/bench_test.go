package crypto

import (
	"bytes"
	"fmt"
	"testing"

	"filippo.io/age"
)

var benchSizes = []int{4 << 10, 1 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// chunkVersions are the chunk envelopes the benchmarks compare: v1
// (XChaCha20-Poly1305) and v2 (XAES-256-GCM), whatever this CPU seals with.
var chunkVersions = []byte{envelopeV1, envelopeV2}

func BenchmarkSealChunk(b *testing.B) {
	for _, v := range chunkVersions {
		k := sealingChunks(DeriveKeys(testDriveKey()), v)
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("v%d/%s", v, sizeName(size)), func(b *testing.B) {
				plain := make([]byte, size)
				dst := make([]byte, 0, size+ChunkOverhead)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					dst = k.SealChunk(dst[:0], plain)
				}
			})
		}
	}
}

func BenchmarkOpenChunk(b *testing.B) {
	for _, v := range chunkVersions {
		k := sealingChunks(DeriveKeys(testDriveKey()), v)
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("v%d/%s", v, sizeName(size)), func(b *testing.B) {
				sealed := k.SealChunk(nil, make([]byte, size))
				dst := make([]byte, 0, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					var err error
					dst, err = k.OpenChunk(dst[:0], sealed)
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkAgePerChunk measures the rejected design: an age file, with its
// own X25519 header, per chunk.
func BenchmarkAgePerChunk(b *testing.B) {
	r := mustIdentity(b, testIdentity1).Recipient()
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			plain := make([]byte, size)
			var buf bytes.Buffer
			buf.Grow(size + 1024)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				w, err := age.Encrypt(&buf, r)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Write(plain); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSealRecord(b *testing.B) {
	k := DeriveKeys(testDriveKey())
	plain := make([]byte, 256)
	ad := []byte("inode/0000000000000001")
	dst := make([]byte, 0, len(plain)+RecordOverhead)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		dst = k.SealRecord(dst[:0], ad, plain)
	}
}

func BenchmarkDedupHash(b *testing.B) {
	k := DeriveKeys(testDriveKey())
	plain := make([]byte, 1<<20)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		k.DedupHash(plain)
	}
}

func BenchmarkContentID(b *testing.B) {
	plain := make([]byte, 1<<20)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		ContentID(plain)
	}
}

func BenchmarkNameHash(b *testing.B) {
	k := DeriveKeys(testDriveKey())
	b.ReportAllocs()
	for b.Loop() {
		k.NameHash(12345, "some-file-name.txt")
	}
}

func BenchmarkNameHashParallel(b *testing.B) {
	k := DeriveKeys(testDriveKey())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k.NameHash(12345, "some-file-name.txt")
		}
	})
}

func BenchmarkUnwrapDriveKey(b *testing.B) {
	id := mustIdentity(b, testIdentity1)
	wrapped, err := WrapDriveKey(testDriveKey(), id.Recipient())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnwrapDriveKey(wrapped, id); err != nil {
			b.Fatal(err)
		}
	}
}
