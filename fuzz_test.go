package peerdrive_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/peerdrive/peerdrive"
)

// update rewrites the fuzz seed corpora in testdata/fuzz:
//
//	go test . -run TestFuzzSeeds -update
var update = flag.Bool("update", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// fuzzRecord is the property every decoder of stored metadata must have:
// arbitrary bytes never panic; a failure wraps ErrMalformed and leaves no
// half-decoded value behind worth trusting; whatever decodes re-encodes,
// and that encoding decodes to the same value and is stable.
func fuzzRecord[T any](t *testing.T, b []byte) {
	var r T
	if err := peerdrive.Unmarshal(b, &r); err != nil {
		if !errors.Is(err, peerdrive.ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		return
	}
	enc, err := peerdrive.Marshal(&r)
	if err != nil {
		t.Fatalf("decoded %+v but cannot encode it: %v", r, err)
	}
	var again T
	if err := peerdrive.Unmarshal(enc, &again); err != nil {
		t.Fatalf("re-encoded %x does not decode: %v", enc, err)
	}
	if !reflect.DeepEqual(r, again) {
		t.Fatalf("round trip changed the value:\n%+v\n%+v", r, again)
	}
	enc2, err := peerdrive.Marshal(&again)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable: %x vs %x (%v)", enc, enc2, err)
	}
}

func FuzzUnmarshalInode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRecord[peerdrive.Inode](t, b) })
}

func FuzzUnmarshalDirent(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRecord[peerdrive.Dirent](t, b) })
}

func FuzzUnmarshalChunkRef(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRecord[peerdrive.ChunkRef](t, b) })
}

func FuzzUnmarshalChunkInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRecord[peerdrive.ChunkInfo](t, b) })
}

func FuzzUnmarshalXattr(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRecord[peerdrive.Xattr](t, b) })
}

// FuzzUnmarshalPatch also applies what decodes, once alone and once after
// itself over a base: ApplyPatches must never panic, and what it accepts
// has the last patch's length.
func FuzzUnmarshalPatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzRecord[peerdrive.Patch](t, b)
		var p peerdrive.Patch
		if peerdrive.Unmarshal(b, &p) != nil {
			return
		}
		base := bytes.Repeat([]byte{7}, 100)
		for _, ps := range [][]peerdrive.Patch{{p}, {p, p}} {
			out, err := peerdrive.ApplyPatches(base, ps)
			if err != nil {
				if !errors.Is(err, peerdrive.ErrMalformed) {
					t.Fatalf("error does not wrap ErrMalformed: %v", err)
				}
				continue
			}
			if len(out) != int(p.Len) {
				t.Fatalf("applied patch gave %d bytes, Len %d", len(out), p.Len)
			}
		}
	})
}

// fuzzSeeds returns the seed corpus of each fuzz target, by file name: the
// golden encodings of TestRecordGolden, plus a few near misses.
func fuzzSeeds(t testing.TB) map[string]map[string][]byte {
	seeds := map[string]map[string][]byte{}
	target := map[string]string{
		"inode":     "FuzzUnmarshalInode",
		"dirent":    "FuzzUnmarshalDirent",
		"chunkref":  "FuzzUnmarshalChunkRef",
		"chunkinfo": "FuzzUnmarshalChunkInfo",
		"xattr":     "FuzzUnmarshalXattr",
		"patch":     "FuzzUnmarshalPatch",
	}
	for _, g := range goldenRecords() {
		kind, variant, _ := strings.Cut(g.name, "/")
		name := "valid"
		if variant != "" {
			name = "valid-" + variant
		}
		b, err := hex.DecodeString(g.hex)
		if err != nil {
			t.Fatal(err)
		}
		tg := target[kind]
		if seeds[tg] == nil {
			seeds[tg] = map[string][]byte{}
		}
		seeds[tg][name] = b
		if _, ok := seeds[tg]["truncated"]; !ok {
			seeds[tg]["truncated"] = b[:len(b)-1]
			// One more pair than the map header announces: an unknown
			// key 100 with value 0.
			unknown := append([]byte{b[0] + 1}, b[1:]...)
			seeds[tg]["unknown-key"] = append(unknown, 0x18, 0x64, 0x00)
		}
	}
	for _, tg := range target {
		seeds[tg]["empty"] = []byte{}
		seeds[tg]["empty-map"] = []byte{0xa0}
		seeds[tg]["indefinite-map"] = []byte{0xbf, 0x01, 0x00, 0xff}
		seeds[tg]["duplicate-key"] = []byte{0xa2, 0x01, 0x00, 0x01, 0x00}
	}
	return seeds
}

// TestFuzzSeeds checks that the committed seed corpora exist and match
// fuzzSeeds, and with -update rewrites them.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, b := range seeds {
			want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
			path := filepath.Join(dir, name)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("seed %s/%s: %v (generate with -update)", target, name, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("seed %s/%s is stale (regenerate with -update)", target, name)
			}
		}
	}
}
