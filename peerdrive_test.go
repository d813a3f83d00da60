package peerdrive_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/peerdrive/peerdrive"
)

func testChunkID() peerdrive.ChunkID {
	var id peerdrive.ChunkID
	for i := range id {
		id[i] = byte(i)
	}
	return id
}

func testDedup() [32]byte {
	var d [32]byte
	for i := range d {
		d[i] = byte(0xff - i)
	}
	return d
}

func TestParseChunkID(t *testing.T) {
	want := testChunkID()
	const lower = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	if got := want.String(); got != lower {
		t.Fatalf("String() = %s, want %s", got, lower)
	}
	if got := want.Short(); got != lower[:12] {
		t.Fatalf("Short() = %s, want %s", got, lower[:12])
	}
	for _, c := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"lower", lower, true},
		{"upper", strings.ToUpper(lower), true},
		{"empty", "", false},
		{"short", lower[:62], false},
		{"long", lower + "20", false},
		{"odd", lower[:63], false},
		{"not hex", "zz" + lower[2:], false},
		{"space", " " + lower[1:], false},
		{"prefixed", "0x" + lower[2:], false},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := peerdrive.ParseChunkID(c.in)
			if !c.ok {
				if !errors.Is(err, peerdrive.ErrMalformed) {
					t.Fatalf("ParseChunkID(%q) error = %v, want ErrMalformed", c.in, err)
				}
				if id != (peerdrive.ChunkID{}) {
					t.Fatalf("ParseChunkID(%q) returned %s with an error", c.in, id)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseChunkID(%q): %v", c.in, err)
			}
			if id != want {
				t.Fatalf("ParseChunkID(%q) = %s, want %s", c.in, id, want)
			}
		})
	}
}

func TestParseChunkIDRoundTrip(t *testing.T) {
	for _, id := range []peerdrive.ChunkID{{}, testChunkID(), peerdrive.ChunkID(testDedup())} {
		got, err := peerdrive.ParseChunkID(id.String())
		if err != nil || got != id {
			t.Fatalf("ParseChunkID(%s) = %s, %v", id, got, err)
		}
	}
}

// goldenRecord is one record with its format version 1 encoding. The hex is
// written out by hand from docs/format.md ("Records"): if a test here fails,
// the encoding of stored metadata changed, which is a format version bump,
// not a test update.
type goldenRecord struct {
	name string
	rec  any // pointer to a record
	hex  string
}

func goldenRecords() []goldenRecord {
	return []goldenRecord{
		{
			// Every field set. Keys ascend; omitempty fields present
			// because they are non-zero.
			name: "inode/file",
			rec: &peerdrive.Inode{Mode: 0o100644, UID: 1000, GID: 1000, Size: 1234567, Nlink: 1,
				Atime: 1700000000123456789, Mtime: 1700000000123456789, Ctime: 1700000001000000000,
				Btime: 1700000000000000000},
			hex: "a9" + // map(9)
				"01" + "1981a4" + // 1 Mode: 0o100644
				"02" + "1903e8" + // 2 UID: 1000
				"03" + "1903e8" + // 3 GID: 1000
				"04" + "1a0012d687" + // 4 Size: 1234567
				"05" + "01" + // 5 Nlink: 1
				"07" + "1b17979cfe3d85cd15" + // 7 Atime
				"08" + "1b17979cfe3d85cd15" + // 8 Mtime
				"09" + "1b17979cfe71c4ca00" + // 9 Ctime
				"0b" + "1b17979cfe362a0000", // 11 Btime
		},
		{
			name: "inode/symlink",
			rec:  &peerdrive.Inode{Mode: 0o120777, Nlink: 1, Target: "../target", Atime: 1, Mtime: 2, Ctime: 3},
			hex: "a6" +
				"01" + "19a1ff" + // Mode: 0o120777
				"05" + "01" +
				"07" + "01" +
				"08" + "02" +
				"09" + "03" +
				"0a" + "69" + hex.EncodeToString([]byte("../target")), // 10 Target
		},
		{
			name: "inode/chardev-negative-time",
			rec:  &peerdrive.Inode{Mode: 0o020644, Rdev: 0x0103, Nlink: 1, Atime: -1},
			hex: "a6" +
				"01" + "1921a4" + // Mode: 0o020644
				"05" + "01" +
				"06" + "190103" + // 6 Rdev
				"07" + "20" + // Atime: -1
				"08" + "00" +
				"09" + "00",
		},
		{
			// Mode, Nlink and the three times are never omitted.
			name: "inode/zero",
			rec:  &peerdrive.Inode{},
			hex:  "a5" + "0100" + "0500" + "0700" + "0800" + "0900",
		},
		{
			name: "dirent",
			rec:  &peerdrive.Dirent{Name: "hello.txt", Ino: 2, Mode: 0o100000},
			hex:  "a3" + "01" + "69" + hex.EncodeToString([]byte("hello.txt")) + "02" + "02" + "03" + "198000",
		},
		{
			name: "chunkref",
			rec:  &peerdrive.ChunkRef{ID: testChunkID(), Len: peerdrive.ChunkSize},
			hex:  "a2" + "01" + "5820" + testChunkID().String() + "02" + "1a00100000",
		},
		{
			name: "chunkinfo",
			rec:  &peerdrive.ChunkInfo{Refs: 2, Dedup: testDedup(), Len: 4096, Sealed: 4096 + 41},
			hex: "a4" + "01" + "02" + "02" + "5820" + hex.EncodeToString(func() []byte { d := testDedup(); return d[:] }()) +
				"03" + "191000" + "04" + "191029",
		},
		{
			name: "xattr",
			rec:  &peerdrive.Xattr{Name: "user.comment", Value: []byte("hi")},
			hex:  "a2" + "01" + "6c" + hex.EncodeToString([]byte("user.comment")) + "02" + "42" + "6869",
		},
		{
			// A nil value is written as CBOR null; an empty one as an
			// empty byte string. Both read back as a zero-length value.
			name: "xattr/nil-value",
			rec:  &peerdrive.Xattr{Name: "user.empty"},
			hex:  "a2" + "01" + "6a" + hex.EncodeToString([]byte("user.empty")) + "02" + "f6",
		},
		{
			name: "xattr/empty-value",
			rec:  &peerdrive.Xattr{Name: "user.empty", Value: []byte{}},
			hex:  "a2" + "01" + "6a" + hex.EncodeToString([]byte("user.empty")) + "02" + "40",
		},
		{
			name: "patch",
			rec: &peerdrive.Patch{Base: testChunkID(), Len: 4096, Extents: []peerdrive.PatchExtent{
				{Off: 0, Data: []byte("ab")}, {Off: 4000, Data: []byte("c")}}},
			hex: "a3" +
				"01" + "5820" + testChunkID().String() + // 1 Base
				"02" + "191000" + // 2 Len: 4096
				"03" + "82" + // 3 Extents: array(2)
				"a2" + "01" + "00" + "02" + "42" + "6162" + // {Off 0, Data "ab"}
				"a2" + "01" + "190fa0" + "02" + "41" + "63", // {Off 4000, Data "c"}
		},
		{
			// A patch of a hole: Base is 32 zero bytes, not left out.
			name: "patch/hole",
			rec:  &peerdrive.Patch{Len: 1, Extents: []peerdrive.PatchExtent{{Off: 0, Data: []byte("x")}}},
			hex: "a3" +
				"01" + "5820" + strings.Repeat("00", 32) +
				"02" + "01" +
				"03" + "81" + "a2" + "01" + "00" + "02" + "41" + "78",
		},
	}
}

// newOf returns a pointer to a new zero value of the type rec points to.
func newOf(rec any) any { return reflect.New(reflect.TypeOf(rec).Elem()).Interface() }

func TestRecordGolden(t *testing.T) {
	for _, g := range goldenRecords() {
		t.Run(g.name, func(t *testing.T) {
			want, err := hex.DecodeString(g.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := peerdrive.Marshal(g.rec)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal = %x\n          want %x (the version 1 encoding changed)", got, want)
			}
			dec := newOf(g.rec)
			if err := peerdrive.Unmarshal(want, dec); err != nil {
				t.Fatalf("Unmarshal(golden): %v", err)
			}
			if !reflect.DeepEqual(dec, g.rec) {
				t.Errorf("Unmarshal(golden) = %+v, want %+v", dec, g.rec)
			}
		})
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  any
	}{
		{"inode/dir", &peerdrive.Inode{Mode: 0o40755, Nlink: 2, Atime: 1, Mtime: 2, Ctime: 3, Btime: 4}},
		{"inode/max", &peerdrive.Inode{Mode: ^uint32(0), UID: ^uint32(0), GID: ^uint32(0), Size: ^uint64(0),
			Nlink: ^uint32(0), Rdev: ^uint32(0), Atime: -1 << 63, Mtime: 1<<63 - 1, Ctime: -1, Btime: 1<<63 - 1,
			Target: strings.Repeat("x", 4095)}},
		{"inode/unicode-target", &peerdrive.Inode{Mode: 0o120777, Nlink: 1, Target: "ünïcödé/☃"}},
		{"dirent/max-ino", &peerdrive.Dirent{Name: strings.Repeat("n", 255), Ino: ^peerdrive.Ino(0), Mode: 0o40000}},
		{"dirent/empty-name", &peerdrive.Dirent{}},
		{"chunkref/zero", &peerdrive.ChunkRef{}},
		{"chunkref/short", &peerdrive.ChunkRef{ID: testChunkID(), Len: 1}},
		{"chunkinfo/zero", &peerdrive.ChunkInfo{}},
		{"chunkinfo/max", &peerdrive.ChunkInfo{Refs: ^uint64(0), Dedup: testDedup(), Len: ^uint32(0), Sealed: ^uint32(0)}},
		{"xattr/binary", &peerdrive.Xattr{Name: "trusted.x", Value: []byte{0, 1, 2, 0xff}}},
		{"xattr/large", &peerdrive.Xattr{Name: "user.big", Value: bytes.Repeat([]byte{0xa5}, 64<<10)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := peerdrive.Marshal(c.rec)
			if err != nil {
				t.Fatal(err)
			}
			dec := newOf(c.rec)
			if err := peerdrive.Unmarshal(b, dec); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(dec, c.rec) {
				t.Fatalf("round trip = %+v, want %+v", dec, c.rec)
			}
			again, err := peerdrive.Marshal(dec)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
			}
		})
	}
}

// pairs returns the hex of n map pairs with distinct unknown keys 100, 101, ...
// and value 0.
func pairs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "18%02x00", 100+i)
	}
	return b.String()
}

// TestUnmarshalRules pins the decoding rules of docs/format.md ("Records"):
// unknown keys are skipped, duplicate keys, indefinite lengths, wrong types
// and trailing bytes are ErrMalformed.
func TestUnmarshalRules(t *testing.T) {
	for _, c := range []struct {
		name string
		hex  string
		ok   bool
		want peerdrive.Dirent
	}{
		{"valid", "a3016161020203198000", true, peerdrive.Dirent{Name: "a", Ino: 2, Mode: 0o100000}},
		{"unknown key skipped", "a4016161020203198000" + "1864" + "63666f6f", true, peerdrive.Dirent{Name: "a", Ino: 2, Mode: 0o100000}},
		{"unknown text key skipped", "a2016161" + "63666f6f" + "01", true, peerdrive.Dirent{Name: "a"}},
		{"missing keys are zero", "a0", true, peerdrive.Dirent{}},
		{"keys in any order", "a3020203198000016161", true, peerdrive.Dirent{Name: "a", Ino: 2, Mode: 0o100000}},
		{"non-minimal integer", "a3016161021b000000000000000203198000", true, peerdrive.Dirent{Name: "a", Ino: 2, Mode: 0o100000}},
		{"duplicate key", "a2016161016161", false, peerdrive.Dirent{}},
		{"duplicate unknown key", "a2" + "186400" + "186400", false, peerdrive.Dirent{}},
		{"indefinite map", "bf016161ff", false, peerdrive.Dirent{}},
		{"indefinite string", "a1017f6161ff", false, peerdrive.Dirent{}},
		{"byte string name", "a1014161", false, peerdrive.Dirent{}},
		{"negative ino", "a10220", false, peerdrive.Dirent{}},
		{"mode overflows uint32", "a1031b0000000100000000", false, peerdrive.Dirent{}},
		{"name not UTF-8 (Linux names are bytes)", "a10161ff", true, peerdrive.Dirent{Name: "\xff"}},
		{"array", "83616102198000", false, peerdrive.Dirent{}},
		{"truncated", "a3016161020203", false, peerdrive.Dirent{}},
		{"trailing byte", "a0" + "00", false, peerdrive.Dirent{}},
		{"empty", "", false, peerdrive.Dirent{}},
		{"nested 4 deep", "a1" + "1864" + "a101" + "a101" + "a101" + "00", true, peerdrive.Dirent{}},
		{"nested 5 deep", "a1" + "1864" + "a101" + "a101" + "a101" + "a101" + "00", false, peerdrive.Dirent{}},
		{"64 pairs", "b840" + pairs(64), true, peerdrive.Dirent{}},
		{"65 pairs", "b841" + pairs(65), false, peerdrive.Dirent{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := hex.DecodeString(strings.ReplaceAll(c.hex, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			var d peerdrive.Dirent
			err = peerdrive.Unmarshal(b, &d)
			if !c.ok {
				if !errors.Is(err, peerdrive.ErrMalformed) {
					t.Fatalf("Unmarshal(%x) error = %v, want ErrMalformed", b, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal(%x): %v", b, err)
			}
			if d != c.want {
				t.Fatalf("Unmarshal(%x) = %+v, want %+v", b, d, c.want)
			}
		})
	}
}
