package tree

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

// update rewrites the fuzz seed corpora in testdata/fuzz:
//
//	go test ./tree/ -run TestFuzzSeeds -update
var update = flag.Bool("update", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// testKeys derives the working keys of the drive key 0x00, 0x01, ..., 0x1f,
// the key crypto/testdata/golden-v1.json pins.
func testKeys() *crypto.Keys {
	var dk crypto.DriveKey
	for i := range dk {
		dk[i] = byte(i)
	}
	return crypto.DeriveKeys(dk)
}

// recordKinds are the sealed record types of the store, by the first byte of
// a fuzz input. Each returns a pointer to a new zero record.
var recordKinds = map[byte]func() any{
	tagInode:  func() any { return new(peerdrive.Inode) },
	tagDirent: func() any { return new(peerdrive.Dirent) },
	tagMap:    func() any { return new(peerdrive.ChunkRef) },
	tagInfo:   func() any { return new(peerdrive.ChunkInfo) },
	tagXattr:  func() any { return new(peerdrive.Xattr) },
	tagStats:  func() any { return new(Stats) },
	tagPatch:  func() any { return new(peerdrive.Patch) },
}

// FuzzOpenRecordInto feeds arbitrary storage keys and values to the opening
// of a sealed record. It must never panic; it fails with ErrCorrupt unless
// the value is a record sealed under the drive's record key for exactly that
// storage key; a record it opens re-seals and re-opens to the same value.
func FuzzOpenRecordInto(f *testing.F) {
	t := &Tree{keys: testKeys()}
	f.Fuzz(func(tt *testing.T, kind byte, key, sealed []byte) {
		mk, ok := recordKinds[kind]
		if !ok {
			mk = recordKinds[tagInode]
		}
		r := mk()
		err := t.openRecordInto(key, sealed, r)
		if _, aerr := t.keys.OpenRecord(nil, key, sealed); aerr != nil {
			// Not authentic: must be ErrCorrupt, whatever the bytes.
			if !errors.Is(err, ErrCorrupt) {
				tt.Fatalf("unauthentic record: error %v, want ErrCorrupt", err)
			}
			return
		}
		if err != nil {
			// Authentic but not a valid record of this kind.
			if !errors.Is(err, ErrCorrupt) {
				tt.Fatalf("authentic record that does not decode: error %v, want ErrCorrupt", err)
			}
			return
		}
		resealed, err := t.sealRecord(key, r)
		if err != nil {
			tt.Fatalf("opened %+v but cannot seal it: %v", r, err)
		}
		again := mk()
		if err := t.openRecordInto(key, resealed, again); err != nil {
			tt.Fatalf("resealed record does not open: %v", err)
		}
		if !reflect.DeepEqual(r, again) {
			tt.Fatalf("reseal changed the record:\n%+v\n%+v", r, again)
		}
		// The same bytes under any other key are corrupt.
		other := append(bytes.Clone(key), 0)
		if err := t.openRecordInto(other, sealed, mk()); !errors.Is(err, ErrCorrupt) {
			tt.Fatalf("record opened under another key: %v", err)
		}
	})
}

func TestOpenRecordInto(t *testing.T) {
	tr := &Tree{keys: testKeys()}
	key := inoKey(tagInode, 2)
	in := peerdrive.Inode{Mode: 0o100644, Nlink: 1, Size: 5, Mtime: 1}
	sealed, err := tr.sealRecord(key, &in)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != crypto.RecordOverhead+len(mustMarshal(t, &in)) || sealed[0] != 0x01 {
		t.Fatalf("sealed record has the wrong layout: %x", sealed)
	}
	var got peerdrive.Inode
	if err := tr.openRecordInto(key, sealed, &got); err != nil || got != in {
		t.Fatalf("openRecordInto = %+v, %v", got, err)
	}
	otherKeys := func() *crypto.Keys {
		var dk crypto.DriveKey
		dk[0] = 1
		return crypto.DeriveKeys(dk)
	}()
	notCBOR := tr.keys.SealRecord(nil, key, []byte{0xff})
	for _, c := range []struct {
		name   string
		tree   *Tree
		key    []byte
		sealed []byte
	}{
		{"moved to another inode", tr, inoKey(tagInode, 3), sealed},
		{"moved to another tag", tr, inoKey(tagMap, 2), sealed},
		{"empty key", tr, nil, sealed},
		{"other drive", &Tree{keys: otherKeys}, key, sealed},
		{"flipped version", tr, key, flip(sealed, 0)},
		{"flipped nonce", tr, key, flip(sealed, 1)},
		{"flipped ciphertext", tr, key, flip(sealed, 25)},
		{"flipped tag", tr, key, flip(sealed, len(sealed)-1)},
		{"truncated", tr, key, sealed[:len(sealed)-1]},
		{"header only", tr, key, sealed[:25]},
		{"empty", tr, key, nil},
		{"extended", tr, key, append(bytes.Clone(sealed), 0)},
		{"authentic, not CBOR", tr, key, notCBOR},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r peerdrive.Inode
			err := c.tree.openRecordInto(c.key, c.sealed, &r)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error = %v, want ErrCorrupt", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func mustMarshal(t testing.TB, r any) []byte {
	t.Helper()
	b, err := peerdrive.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeyLayout pins the storage keys of docs/format.md ("Store keys"). The
// name hashes are those of the drive key 0x00..0x1f.
func TestKeyLayout(t *testing.T) {
	tr := &Tree{keys: testKeys()}
	var id [32]byte
	for i := range id {
		id[i] = byte(0xa0 + i)
	}
	idHex := hex.EncodeToString(id[:])
	for _, c := range []struct {
		name string
		key  []byte
		hex  string
	}{
		{"format", []byte{tagFormat}, "56"},
		{"check", []byte{tagCheck}, "4b"},
		{"next inode", []byte{tagNextIno}, "4e"},
		{"stats", []byte{tagStats}, "53"},
		{"inode", inoKey(tagInode, 0x0102030405060708), "49" + "0102030405060708"},
		{"orphan", inoKey(tagOrphan, 2), "4f" + "0000000000000002"},
		{"dirent", tr.direntKey(1, "hello"), "44" + "0000000000000001" + "0d010e5dba067cd6ea09730db787763e"},
		{"xattr", tr.xattrKey(1, "user.test"), "58" + "0000000000000001" + hexNameHash(tr, 1, "xattr\x00user.test")},
		{"chunk map", mapKey(7, 3), "4d" + "0000000000000007" + "0000000000000003"},
		{"chunk info", idKey(tagInfo, id), "52" + idHex},
		{"dedup", idKey(tagDedup, id), "48" + idHex},
	} {
		if got := hex.EncodeToString(c.key); got != c.hex {
			t.Errorf("%s key = %s, want %s", c.name, got, c.hex)
		}
	}
}

func hexNameHash(tr *Tree, parent uint64, name string) string {
	h := tr.keys.NameHash(parent, name)
	return hex.EncodeToString(h[:])
}

// TestPlainRecordGolden pins the CBOR of the records the tree package
// defines: the plaintext format record and the (sealed) drive statistics.
func TestPlainRecordGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  any
		hex  string
	}{
		{"format", &formatRecord{Version: peerdrive.FormatVersion, ChunkSize: peerdrive.ChunkSize}, "a2" + "0103" + "02" + "1a00100000"},
		{"format/v2", &formatRecord{Version: 2, ChunkSize: peerdrive.ChunkSize}, "a2" + "0102" + "02" + "1a00100000"},
		{"format/v1", &formatRecord{Version: 1, ChunkSize: peerdrive.ChunkSize}, "a2" + "0101" + "02" + "1a00100000"},
		{"stats", &Stats{Used: 1 << 20, Stored: 1<<20 + 41, Chunks: 1, Inodes: 3}, "a4" + "01" + "1a00100000" + "02" + "1a00100029" + "0301" + "0403"},
		{"stats/zero", &Stats{}, "a4" + "0100" + "0200" + "0300" + "0400"},
	} {
		got := hex.EncodeToString(mustMarshal(t, c.rec))
		if got != c.hex {
			t.Errorf("%s = %s, want %s (the encoding changed)", c.name, got, c.hex)
		}
	}
}

// seed is one fuzz input: kind, storage key, stored value.
type seed struct {
	kind        byte
	key, sealed []byte
}

// fuzzSeeds returns the seed corpus of FuzzOpenRecordInto by file name. The
// valid-* seeds are records sealed under testKeys; sealing draws a random
// nonce, so -update writes different (equally valid) bytes each time.
func fuzzSeeds(t testing.TB) map[string]seed {
	tr := &Tree{keys: testKeys()}
	var id peerdrive.ChunkID
	for i := range id {
		id[i] = byte(i)
	}
	seal := func(key []byte, r any) []byte {
		b, err := tr.sealRecord(key, r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ik := inoKey(tagInode, 2)
	inode := seal(ik, &peerdrive.Inode{Mode: 0o100644, Nlink: 1, Size: 3, Atime: 1, Mtime: 2, Ctime: 3})
	dk := tr.direntKey(1, "hello")
	mk := mapKey(2, 0)
	rk := idKey(tagInfo, id)
	xk := tr.xattrKey(2, "user.test")
	pk := patchKey(2, 0, 0)
	return map[string]seed{
		"valid-inode":      {tagInode, ik, inode},
		"valid-root":       {tagInode, inoKey(tagInode, 1), seal(inoKey(tagInode, 1), &peerdrive.Inode{Mode: 0o40755, Nlink: 2})},
		"valid-dirent":     {tagDirent, dk, seal(dk, &peerdrive.Dirent{Name: "hello", Ino: 2, Mode: 0o100000})},
		"valid-chunkref":   {tagMap, mk, seal(mk, &peerdrive.ChunkRef{ID: id, Len: 3})},
		"valid-chunkinfo":  {tagInfo, rk, seal(rk, &peerdrive.ChunkInfo{Refs: 1, Len: 3, Sealed: 44})},
		"valid-xattr":      {tagXattr, xk, seal(xk, &peerdrive.Xattr{Name: "user.test", Value: []byte("v")})},
		"valid-stats":      {tagStats, []byte{tagStats}, seal([]byte{tagStats}, &Stats{Used: 3, Stored: 44, Chunks: 1, Inodes: 2})},
		"valid-patch":      {tagPatch, pk, seal(pk, &peerdrive.Patch{Base: id, Len: 3, Extents: []peerdrive.PatchExtent{{Off: 1, Data: []byte("x")}}})},
		"valid-not-cbor":   {tagInode, ik, tr.keys.SealRecord(nil, ik, []byte{0xff})},
		"valid-wrong-kind": {tagDirent, ik, inode},
		"moved":            {tagInode, inoKey(tagInode, 3), inode},
		"truncated":        {tagInode, ik, inode[:len(inode)-1]},
		"flipped":          {tagInode, ik, flip(inode, len(inode)/2)},
		"empty":            {tagInode, nil, nil},
		"plain-cbor":       {tagInode, ik, mustMarshal(t, &peerdrive.Inode{Mode: 0o100644})},
	}
}

func encodeSeed(s seed) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\nbyte(%q)\n[]byte(%q)\n[]byte(%q)\n", s.kind, s.key, s.sealed)
}

// decodeSeed parses what encodeSeed writes.
func decodeSeed(b []byte) (seed, error) {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 4 || lines[0] != "go test fuzz v1" {
		return seed{}, fmt.Errorf("not a 3-value go fuzz v1 file")
	}
	arg := func(line, pre string) (string, error) {
		if !strings.HasPrefix(line, pre+"(") || !strings.HasSuffix(line, ")") {
			return "", fmt.Errorf("bad line %q", line)
		}
		return strconv.Unquote(line[len(pre)+1 : len(line)-1])
	}
	k, err := arg(lines[1], "byte")
	if err != nil || len(k) != 1 {
		return seed{}, fmt.Errorf("bad kind %q: %v", lines[1], err)
	}
	key, err := arg(lines[2], "[]byte")
	if err != nil {
		return seed{}, err
	}
	sealed, err := arg(lines[3], "[]byte")
	if err != nil {
		return seed{}, err
	}
	return seed{k[0], []byte(key), []byte(sealed)}, nil
}

// TestFuzzSeeds checks the committed seed corpus of FuzzOpenRecordInto: every
// seed exists, and the valid-* ones are authentic under testKeys (so the
// fuzzer starts from records that open). With -update it rewrites them.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpenRecordInto")
	seeds := fuzzSeeds(t)
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, s := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), encodeSeed(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	tr := &Tree{keys: testKeys()}
	names := make([]string, 0, len(seeds))
	for name := range seeds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("seed %s: %v (generate with -update)", name, err)
			continue
		}
		s, err := decodeSeed(b)
		if err != nil {
			t.Errorf("seed %s: %v", name, err)
			continue
		}
		_, aerr := tr.keys.OpenRecord(nil, s.key, s.sealed)
		if valid := strings.HasPrefix(name, "valid-"); valid != (aerr == nil) {
			t.Errorf("seed %s: authentic = %v (%v)", name, aerr == nil, aerr)
		}
	}
}
