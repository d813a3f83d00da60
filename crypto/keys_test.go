package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// testDriveKey returns the fixed drive key 0x00, 0x01, ..., 0x1f.
func testDriveKey() DriveKey {
	var dk DriveKey
	for i := range dk {
		dk[i] = byte(i)
	}
	return dk
}

// otherDriveKey returns a fixed drive key different from testDriveKey.
func otherDriveKey() DriveKey {
	dk := testDriveKey()
	dk[0] ^= 0x80
	return dk
}

// envelope abstracts over chunk and record envelopes so tests cover both
// chunk versions and records.
type envelope struct {
	name     string
	version  byte
	overhead int
	seal     func(k *Keys, dst, plain []byte) []byte
	open     func(k *Keys, dst, sealed []byte) ([]byte, error)
}

// sealingChunks returns keys like k that seal chunks in envelope version v,
// whatever this CPU has. Only its AEADs are set.
func sealingChunks(k *Keys, v byte) *Keys {
	return &Keys{chunk: k.chunk, chunk2: k.chunk2, chunkWrite: v, record: k.record}
}

var testAD = []byte("records/0000000000000001")

var envelopes = []envelope{
	{
		name:     "chunk-v1",
		version:  envelopeV1,
		overhead: ChunkOverhead,
		seal:     func(k *Keys, dst, plain []byte) []byte { return sealingChunks(k, envelopeV1).SealChunk(dst, plain) },
		open:     func(k *Keys, dst, sealed []byte) ([]byte, error) { return k.OpenChunk(dst, sealed) },
	},
	{
		name:     "chunk-v2",
		version:  envelopeV2,
		overhead: ChunkOverhead,
		seal:     func(k *Keys, dst, plain []byte) []byte { return sealingChunks(k, envelopeV2).SealChunk(dst, plain) },
		open:     func(k *Keys, dst, sealed []byte) ([]byte, error) { return k.OpenChunk(dst, sealed) },
	},
	{
		name:     "record",
		version:  envelopeV1,
		overhead: RecordOverhead,
		seal:     func(k *Keys, dst, plain []byte) []byte { return k.SealRecord(dst, testAD, plain) },
		open:     func(k *Keys, dst, sealed []byte) ([]byte, error) { return k.OpenRecord(dst, testAD, sealed) },
	},
}

func TestOverheadConstants(t *testing.T) {
	if ChunkOverhead != 41 || RecordOverhead != 41 {
		t.Fatalf("ChunkOverhead = %d, RecordOverhead = %d, want 41", ChunkOverhead, RecordOverhead)
	}
	if KeySize != 32 {
		t.Fatalf("KeySize = %d, want 32", KeySize)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	sizes := []int{0, 1, 15, 16, 17, 63, 64, 65, 4096, 1<<16 + 3}
	for _, env := range envelopes {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", env.name, size), func(t *testing.T) {
				plain := make([]byte, size)
				for i := range plain {
					plain[i] = byte(i * 7)
				}
				sealed := env.seal(k, nil, plain)
				if len(sealed) != size+env.overhead {
					t.Fatalf("sealed length %d, want %d", len(sealed), size+env.overhead)
				}
				if sealed[0] != env.version {
					t.Fatalf("version byte %#x, want %#x", sealed[0], env.version)
				}
				got, err := env.open(k, nil, sealed)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatal("round trip changed the plaintext")
				}
			})
		}
	}
}

func TestEnvelopeAppends(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	plain := []byte("hello, appended world")
	prefix := []byte("prefix:")
	for _, env := range envelopes {
		for _, spare := range []int{0, 1000} {
			t.Run(fmt.Sprintf("%s/spare%d", env.name, spare), func(t *testing.T) {
				dst := append(make([]byte, 0, len(prefix)+spare), prefix...)
				sealed := env.seal(k, dst, plain)
				if !bytes.Equal(sealed[:len(prefix)], prefix) {
					t.Fatal("seal clobbered dst")
				}
				if len(sealed) != len(prefix)+len(plain)+env.overhead {
					t.Fatalf("sealed length %d", len(sealed))
				}
				odst := append(make([]byte, 0, len(prefix)+spare), prefix...)
				got, err := env.open(k, odst, sealed[len(prefix):])
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if want := append(append([]byte{}, prefix...), plain...); !bytes.Equal(got, want) {
					t.Fatalf("open appended %q, want %q", got, want)
				}
			})
		}
	}
}

func TestEnvelopeNoncesDiffer(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	for _, env := range envelopes {
		a := env.seal(k, nil, []byte("same"))
		b := env.seal(k, nil, []byte("same"))
		if bytes.Equal(a, b) {
			t.Errorf("%s: sealing twice gave identical envelopes", env.name)
		}
		if bytes.Equal(a[1:25], b[1:25]) {
			t.Errorf("%s: sealing twice reused a nonce", env.name)
		}
	}
}

// TestEnvelopeTamper flips every bit, tries every truncation and an
// extension of a small envelope; all must fail with ErrCorrupt.
func TestEnvelopeTamper(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	plain := []byte("small secret")
	for _, env := range envelopes {
		t.Run(env.name, func(t *testing.T) {
			sealed := env.seal(k, nil, plain)
			mustCorrupt := func(what string, b []byte) {
				t.Helper()
				got, err := env.open(k, nil, b)
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: err = %v, want ErrCorrupt", what, err)
				}
				if got != nil {
					t.Fatalf("%s: returned plaintext %q with error", what, got)
				}
			}
			for i := range len(sealed) * 8 {
				b := bytes.Clone(sealed)
				b[i/8] ^= 1 << (i % 8)
				mustCorrupt(fmt.Sprintf("flip bit %d", i), b)
			}
			for n := range len(sealed) {
				mustCorrupt(fmt.Sprintf("truncate to %d", n), bytes.Clone(sealed[:n]))
			}
			mustCorrupt("extend", append(bytes.Clone(sealed), 0))
			mustCorrupt("nil", nil)
			for _, v := range []byte{0x00, 0x01, 0x02, 0x03, 0xff} {
				if v == env.version {
					continue
				}
				b := bytes.Clone(sealed)
				b[0] = v
				mustCorrupt(fmt.Sprintf("version %#x", v), b)
			}
		})
	}
}

func TestEnvelopeWrongKey(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	other := DeriveKeys(otherDriveKey())
	for _, env := range envelopes {
		sealed := env.seal(k, nil, []byte("secret"))
		if _, err := env.open(other, nil, sealed); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: open with other drive key: err = %v, want ErrCorrupt", env.name, err)
		}
	}
}

// TestEnvelopeKeySeparation checks that chunks and records cannot be
// confused: each uses its own derived key.
func TestEnvelopeKeySeparation(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	for _, v := range []byte{envelopeV1, envelopeV2} {
		chunk := sealingChunks(k, v).SealChunk(nil, []byte("x"))
		if _, err := k.OpenRecord(nil, nil, chunk); !errors.Is(err, ErrCorrupt) {
			t.Errorf("chunk v%d opened as record with empty ad: err = %v", v, err)
		}
	}
	record := k.SealRecord(nil, nil, []byte("x"))
	if _, err := k.OpenChunk(nil, record); !errors.Is(err, ErrCorrupt) {
		t.Errorf("record with empty ad opened as chunk: err = %v", err)
	}
}

func TestRecordAD(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	tests := []struct {
		name       string
		sealAD     []byte
		openAD     []byte
		wantOpened bool
	}{
		{"same", []byte("a/b"), []byte("a/b"), true},
		{"nil and empty", nil, []byte{}, true},
		{"empty", nil, nil, true},
		{"different", []byte("a/b"), []byte("a/c"), false},
		{"prefix", []byte("a/b"), []byte("a/"), false},
		{"longer", []byte("a/b"), []byte("a/bc"), false},
		{"missing", []byte("a/b"), nil, false},
		{"added", nil, []byte{0}, false},
		{"version byte as ad", nil, []byte{0x01}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed := k.SealRecord(nil, tt.sealAD, []byte("record body"))
			got, err := k.OpenRecord(nil, tt.openAD, sealed)
			if tt.wantOpened {
				if err != nil || string(got) != "record body" {
					t.Fatalf("OpenRecord = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestHashes(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	k2 := DeriveKeys(testDriveKey())
	other := DeriveKeys(otherDriveKey())

	tests := []struct {
		name string
		fn   func(*Keys) []byte
	}{
		{"dedup/empty", func(k *Keys) []byte { h := k.DedupHash(nil); return h[:] }},
		{"dedup/hello", func(k *Keys) []byte { h := k.DedupHash([]byte("hello")); return h[:] }},
		{"dedup/large", func(k *Keys) []byte { h := k.DedupHash(make([]byte, 100_000)); return h[:] }},
		{"name/0/empty", func(k *Keys) []byte { h := k.NameHash(0, ""); return h[:] }},
		{"name/1/hello", func(k *Keys) []byte { h := k.NameHash(1, "hello"); return h[:] }},
		{"name/max/long", func(k *Keys) []byte { h := k.NameHash(^uint64(0), string(make([]byte, 10_000))); return h[:] }},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, c := tt.fn(k), tt.fn(k), tt.fn(k2)
			if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
				t.Fatalf("hash not deterministic: %x %x %x", a, b, c)
			}
			if d := tt.fn(other); bytes.Equal(a, d) {
				t.Fatalf("different drive keys gave the same hash %x", a)
			}
			if prev, ok := seen[string(a)]; ok {
				t.Fatalf("same hash as %s", prev)
			}
			seen[string(a)] = tt.name
		})
	}
}

func TestHashesDistinguishInputs(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	if k.NameHash(1, "hello") == k.NameHash(2, "hello") {
		t.Error("NameHash ignores parent")
	}
	if k.NameHash(1, "hello") == k.NameHash(1, "hellp") {
		t.Error("NameHash ignores name")
	}
	if k.DedupHash([]byte("a")) == k.DedupHash([]byte("b")) {
		t.Error("DedupHash ignores input")
	}
	// The dedup and name keys differ, so equal inputs hash differently.
	name := k.NameHash(0x68656c6c6f000000, "")
	dedup := k.DedupHash([]byte("hello\x00\x00\x00"))
	if bytes.Equal(name[:], dedup[:16]) {
		t.Error("NameHash and DedupHash share a key")
	}
	// The keyed hashes are not the unkeyed content hash.
	if k.DedupHash([]byte("hello")) == ContentID([]byte("hello")) {
		t.Error("DedupHash equals ContentID")
	}
	if ContentID([]byte("hello")) != ContentID([]byte("hello")) {
		t.Error("ContentID not deterministic")
	}
	if ContentID([]byte("hello")) == ContentID([]byte("hellp")) {
		t.Error("ContentID ignores input")
	}
}

// TestConcurrentUse exercises one Keys from many goroutines; run with -race.
func TestConcurrentUse(t *testing.T) {
	k := DeriveKeys(testDriveKey())
	wantDedup := k.DedupHash([]byte("payload"))
	wantName := k.NameHash(42, "file.txt")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				plain := []byte(fmt.Sprintf("goroutine %d message %d", g, i))
				got, err := k.OpenChunk(nil, k.SealChunk(nil, plain))
				if err != nil || !bytes.Equal(got, plain) {
					errs <- fmt.Errorf("chunk round trip: %q, %v", got, err)
					return
				}
				ad := []byte(fmt.Sprintf("key/%d", i))
				got, err = k.OpenRecord(nil, ad, k.SealRecord(nil, ad, plain))
				if err != nil || !bytes.Equal(got, plain) {
					errs <- fmt.Errorf("record round trip: %q, %v", got, err)
					return
				}
				if k.DedupHash([]byte("payload")) != wantDedup {
					errs <- errors.New("DedupHash changed under concurrency")
					return
				}
				if k.NameHash(42, "file.txt") != wantName {
					errs <- errors.New("NameHash changed under concurrency")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDeriveKeysSeparation(t *testing.T) {
	dk := testDriveKey()
	keys := map[string][KeySize]byte{}
	for _, info := range []string{infoChunk, infoRecord, infoDedup, infoName} {
		k := deriveKey(dk, info)
		for other, ok := range keys {
			if ok == k {
				t.Fatalf("%s and %s derive the same key", info, other)
			}
		}
		keys[info] = k
		if k == [KeySize]byte(dk) {
			t.Fatalf("%s key equals the drive key", info)
		}
	}
}
