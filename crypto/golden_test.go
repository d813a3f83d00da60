package crypto

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// update writes the golden files that are missing and rewrites the fuzz
// seed corpora:
//
//	go test -run 'TestGolden|TestFuzzSeeds' -update ./crypto/
//
// A golden file, once committed, is never rewritten: it pins a released
// format.
var update = flag.Bool("update", false, "write missing testdata/golden-*.json and rewrite the fuzz seed corpora")

const (
	goldenPath        = "testdata/golden-v1.json"
	goldenChunkV2Path = "testdata/golden-chunk-v2.json"
)

// missing reports whether path does not exist.
func missing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// golden pins format version 1: the key derivation, the envelopes and the
// hashes. If this test fails, the on-disk format changed; bump the version
// instead of updating the file.
type golden struct {
	Comment        string `json:"comment"`
	DriveKey       string `json:"drive_key"`
	DedupHashHello string `json:"dedup_hash_hello"`
	NameHash1Hello string `json:"name_hash_1_hello"`
	ContentIDHello string `json:"content_id_hello"`
	ChunkPlain     string `json:"chunk_plain"`
	SealedChunk    string `json:"sealed_chunk"`
	RecordAD       string `json:"record_ad"`
	RecordPlain    string `json:"record_plain"`
	SealedRecord   string `json:"sealed_record"`
}

const (
	goldenChunkPlain  = "hello, chunk"
	goldenRecordAD    = "inode/0000000000000001"
	goldenRecordPlain = "hello, record"
)

func TestGolden(t *testing.T) {
	dk := testDriveKey()
	k := DeriveKeys(dk)
	dedup := k.DedupHash([]byte("hello"))
	name := k.NameHash(1, "hello")
	cid := ContentID([]byte("hello"))

	if *update && missing(goldenPath) {
		g := golden{
			Comment:        "PeerDrive crypto format v1. Drive key is bytes 0..31; hashes are of \"hello\" (NameHash with parent 1). Sealed values are hex. Do not edit: a mismatch means the format changed.",
			DriveKey:       hex.EncodeToString(dk[:]),
			DedupHashHello: hex.EncodeToString(dedup[:]),
			NameHash1Hello: hex.EncodeToString(name[:]),
			ContentIDHello: hex.EncodeToString(cid[:]),
			ChunkPlain:     goldenChunkPlain,
			SealedChunk:    hex.EncodeToString(sealingChunks(k, envelopeV1).SealChunk(nil, []byte(goldenChunkPlain))),
			RecordAD:       goldenRecordAD,
			RecordPlain:    goldenRecordPlain,
			SealedRecord:   hex.EncodeToString(k.SealRecord(nil, []byte(goldenRecordAD), []byte(goldenRecordPlain))),
		}
		data, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	g := readGolden(t)
	if g.DriveKey != hex.EncodeToString(dk[:]) {
		t.Fatalf("golden drive key %s is not bytes 0..31", g.DriveKey)
	}
	for _, c := range []struct{ name, got, want string }{
		{"DedupHash(hello)", hex.EncodeToString(dedup[:]), g.DedupHashHello},
		{"NameHash(1, hello)", hex.EncodeToString(name[:]), g.NameHash1Hello},
		{"ContentID(hello)", hex.EncodeToString(cid[:]), g.ContentIDHello},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, golden %s", c.name, c.got, c.want)
		}
	}

	chunk := mustHex(t, g.SealedChunk)
	if len(chunk) != len(g.ChunkPlain)+ChunkOverhead || chunk[0] != 0x01 {
		t.Errorf("golden chunk has the wrong layout")
	}
	plain, err := k.OpenChunk(nil, chunk)
	if err != nil {
		t.Errorf("OpenChunk(golden): %v", err)
	} else if string(plain) != g.ChunkPlain {
		t.Errorf("OpenChunk(golden) = %q, want %q", plain, g.ChunkPlain)
	}

	record := mustHex(t, g.SealedRecord)
	if len(record) != len(g.RecordPlain)+RecordOverhead || record[0] != 0x01 {
		t.Errorf("golden record has the wrong layout")
	}
	plain, err = k.OpenRecord(nil, []byte(g.RecordAD), record)
	if err != nil {
		t.Errorf("OpenRecord(golden): %v", err)
	} else if string(plain) != g.RecordPlain {
		t.Errorf("OpenRecord(golden) = %q, want %q", plain, g.RecordPlain)
	}
}

// goldenChunkV2 pins the version 2 chunk envelope (XAES-256-GCM) under the
// keys of the test drive key.
type goldenChunkV2 struct {
	Comment     string `json:"comment"`
	DriveKey    string `json:"drive_key"`
	ChunkPlain  string `json:"chunk_plain"`
	SealedChunk string `json:"sealed_chunk"`
}

func TestGoldenChunkV2(t *testing.T) {
	dk := testDriveKey()
	k := DeriveKeys(dk)
	if *update && missing(goldenChunkV2Path) {
		g := goldenChunkV2{
			Comment:     "PeerDrive chunk envelope v2 (XAES-256-GCM, key HKDF info peerdrive/v2/chunk). Drive key is bytes 0..31. Do not edit: a mismatch means the format changed.",
			DriveKey:    hex.EncodeToString(dk[:]),
			ChunkPlain:  goldenChunkPlain,
			SealedChunk: hex.EncodeToString(sealingChunks(k, envelopeV2).SealChunk(nil, []byte(goldenChunkPlain))),
		}
		data, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenChunkV2Path, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := readGoldenChunkV2(t)
	if g.DriveKey != hex.EncodeToString(dk[:]) {
		t.Fatalf("golden drive key %s is not bytes 0..31", g.DriveKey)
	}
	chunk := mustHex(t, g.SealedChunk)
	if len(chunk) != len(g.ChunkPlain)+ChunkOverhead || chunk[0] != 0x02 {
		t.Errorf("golden chunk has the wrong layout")
	}
	// Whatever this CPU seals with, it opens both versions.
	for _, v := range []byte{envelopeV1, envelopeV2} {
		plain, err := sealingChunks(k, v).OpenChunk(nil, chunk)
		if err != nil {
			t.Errorf("OpenChunk(golden v2) with keys sealing v%d: %v", v, err)
		} else if string(plain) != g.ChunkPlain {
			t.Errorf("OpenChunk(golden v2) = %q, want %q", plain, g.ChunkPlain)
		}
	}
}

func readGoldenChunkV2(t testing.TB) goldenChunkV2 {
	t.Helper()
	data, err := os.ReadFile(goldenChunkV2Path)
	if err != nil {
		t.Fatalf("%v (generate with -update)", err)
	}
	var g goldenChunkV2
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("%s: %v", goldenChunkV2Path, err)
	}
	return g
}

func readGolden(t testing.TB) golden {
	t.Helper()
	data, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (generate with -update)", err)
	}
	var g golden
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("%s: %v", goldenPath, err)
	}
	return g
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fuzzSeeds returns the seed corpus of each fuzz target, by file name. Valid
// seeds come from the golden file so they open under the fixed test keys.
func fuzzSeeds(t testing.TB) map[string]map[string][][]byte {
	g := readGolden(t)
	chunk := mustHex(t, g.SealedChunk)
	chunk2 := mustHex(t, readGoldenChunkV2(t).SealedChunk)
	record := mustHex(t, g.SealedRecord)
	id1 := mustIdentity(t, testIdentity1)
	id2 := mustIdentity(t, testIdentity2)
	wrapped, err := WrapDriveKey(testDriveKey(), id1.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	wrappedOther, err := WrapDriveKey(testDriveKey(), id2.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	one := func(b []byte) [][]byte { return [][]byte{b} }
	return map[string]map[string][][]byte{
		"FuzzOpenChunk": {
			"valid":       one(chunk),
			"empty":       one([]byte{}),
			"header-only": one(chunk[:25]),
			"min-length":  one(chunk[:ChunkOverhead]),
			"version-2":   one(append([]byte{0x02}, chunk[1:]...)),
			"flipped-tag": one(flipByte(chunk, len(chunk)-1)),
			"valid-v2":    one(chunk2),
			"v2-as-v1":    one(append([]byte{0x01}, chunk2[1:]...)),
			"v2-flipped":  one(flipByte(chunk2, len(chunk2)-1)),
		},
		"FuzzOpenRecord": {
			"valid":     {[]byte(g.RecordAD), record},
			"wrong-ad":  {[]byte("inode/0000000000000002"), record},
			"empty":     {[]byte{}, []byte{}},
			"chunk":     {[]byte{}, chunk},
			"truncated": {[]byte(g.RecordAD), record[:len(record)-1]},
		},
		"FuzzParseRecoveryKey": {
			"written":      one(formatRecoveryKeyFile(id1, mustTime(t, "2025-01-01T00:00:00Z"))),
			"bare":         one([]byte(testIdentity1)),
			"crlf":         one([]byte("# c\r\n" + testIdentity1 + "\r\n")),
			"two-keys":     one([]byte(testIdentity1 + "\n" + testIdentity2 + "\n")),
			"comments":     one([]byte("# only\n\n")),
			"bad-checksum": one([]byte(testIdentity1[:len(testIdentity1)-1] + "Q")),
			"pq":           one([]byte("AGE-SECRET-KEY-PQ-1QQQQ")),
		},
		"FuzzUnwrapDriveKey": {
			"valid":        one(wrapped),
			"other":        one(wrappedOther),
			"empty":        one([]byte{}),
			"header-only":  one(wrapped[:len(wrapped)-(16+KeySize+16)]),
			"version-only": one([]byte("age-encryption.org/v1\n")),
			"trailing":     one(append(bytes.Clone(wrapped), 0)),
		},
	}
}

// TestFuzzSeeds checks that the committed seed corpora exist, and with
// -update rewrites them.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, args := range seeds {
				var b bytes.Buffer
				b.WriteString("go test fuzz v1\n")
				for _, a := range args {
					fmt.Fprintf(&b, "[]byte(%q)\n", a)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		for name := range seeds {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("seed %s/%s: %v (generate with -update)", target, name, err)
			}
		}
	}
}
