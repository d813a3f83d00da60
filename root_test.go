package peerdrive_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peerdrive/peerdrive"
)

// testOwner is the Ed25519 key whose seed is bytes 0..31 (it protects
// nothing); otherOwner is another.
func testOwner() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func otherOwner() ed25519.PrivateKey {
	seed := bytes.Repeat([]byte{0x42}, ed25519.SeedSize)
	return ed25519.NewKeyFromSeed(seed)
}

// goldenRoot is the record pinned by goldenRootHex.
func goldenRoot() *peerdrive.RootRecord {
	r := &peerdrive.RootRecord{
		Seq:        7,
		Time:       1700000000123456789,
		Writer:     "12D3KooWGolden",
		LeaseUntil: 1700000300123456789,
		Body:       []byte("sealed body"),
	}
	r.Sign(testOwner())
	return r
}

// goldenRootHex is goldenRoot in format version 1, written out from
// docs/format.md ("Root records"). A failure here is a format change.
const (
	goldenOwnerHex = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
	goldenSigHex   = "418d38a14f68bb51af6d7ee30ff94a70793debd28cce0cea04ff8d60c9cd5d37" +
		"c4350fd02af22ca536e97f1399ec4943f8c1ea25b364c4cf4ab3407b209a6706"
	goldenRootHex = "a7" + // map(7)
		"01" + "5820" + goldenOwnerHex + // 1 Owner: 32 bytes
		"02" + "07" + // 2 Seq: 7
		"03" + "1b17979cfe3d85cd15" + // 3 Time
		"04" + "6e" + "313244334b6f6f57476f6c64656e" + // 4 Writer: "12D3KooWGolden"
		"05" + "1b17979d4416ea8515" + // 5 LeaseUntil
		"06" + "4b" + "7365616c656420626f6479" + // 6 Body: "sealed body"
		"07" + "5840" + goldenSigHex // 7 Sig: 64 bytes
)

func TestRootGolden(t *testing.T) {
	want, err := hex.DecodeString(goldenRootHex)
	if err != nil {
		t.Fatal(err)
	}
	r := goldenRoot()
	if got := hex.EncodeToString(r.Owner); got != goldenOwnerHex {
		t.Fatalf("Owner = %s, want %s", got, goldenOwnerHex)
	}
	got, err := peerdrive.MarshalRoot(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalRoot = %x\n          want %x (the version 1 encoding or signature changed)", got, want)
	}
	dec, err := peerdrive.UnmarshalRoot(want)
	if err != nil {
		t.Fatalf("UnmarshalRoot(golden): %v", err)
	}
	if err := dec.Verify(); err != nil {
		t.Fatalf("Verify(golden): %v", err)
	}
	if err := dec.VerifyFor(testOwner().Public().(ed25519.PublicKey)); err != nil {
		t.Fatalf("VerifyFor(golden): %v", err)
	}
	if peerdrive.CompareRoots(dec, r) != 0 || dec.Writer != r.Writer || !bytes.Equal(dec.Body, r.Body) {
		t.Fatalf("UnmarshalRoot(golden) = %+v, want %+v", dec, r)
	}
}

func TestRootKeyFor(t *testing.T) {
	owner := testOwner().Public().(ed25519.PublicKey)
	key := peerdrive.RootKeyFor(owner)
	if key != "/peerdrive-root/"+goldenOwnerHex {
		t.Fatalf("RootKeyFor = %q", key)
	}
	got, err := peerdrive.ParseRootKey(key)
	if err != nil || !bytes.Equal(got, owner) {
		t.Fatalf("ParseRootKey(%q) = %x, %v", key, got, err)
	}
	for _, bad := range []string{
		"", "/peerdrive-root/", "/peerdrive-root/" + goldenOwnerHex[:62],
		"/peerdrive-root/" + goldenOwnerHex + "00", "/peerdrive-root/" + strings.ToUpper(goldenOwnerHex),
		"/pk/" + goldenOwnerHex, "peerdrive-root/" + goldenOwnerHex, "/peerdrive-root/" + goldenOwnerHex[:62] + "zz",
	} {
		if _, err := peerdrive.ParseRootKey(bad); !errors.Is(err, peerdrive.ErrMalformed) {
			t.Errorf("ParseRootKey(%q) err = %v, want ErrMalformed", bad, err)
		}
	}
}

// TestRootTamper changes each field of a signed record: none verifies.
func TestRootTamper(t *testing.T) {
	other := otherOwner()
	for _, c := range []struct {
		name   string
		change func(r *peerdrive.RootRecord)
	}{
		{"seq", func(r *peerdrive.RootRecord) { r.Seq++ }},
		{"seq down", func(r *peerdrive.RootRecord) { r.Seq-- }},
		{"time", func(r *peerdrive.RootRecord) { r.Time++ }},
		{"writer", func(r *peerdrive.RootRecord) { r.Writer = "12D3KooWEvil" }},
		{"lease", func(r *peerdrive.RootRecord) { r.LeaseUntil += 1e9 }},
		{"body", func(r *peerdrive.RootRecord) { r.Body[0] ^= 1 }},
		{"body longer", func(r *peerdrive.RootRecord) { r.Body = append(r.Body, 0) }},
		{"body nil", func(r *peerdrive.RootRecord) { r.Body = nil }},
		{"owner", func(r *peerdrive.RootRecord) { r.Owner = other.Public().(ed25519.PublicKey) }},
		{"owner bit", func(r *peerdrive.RootRecord) { r.Owner[31] ^= 0x80 }},
		{"owner short", func(r *peerdrive.RootRecord) { r.Owner = r.Owner[:31] }},
		{"owner nil", func(r *peerdrive.RootRecord) { r.Owner = nil }},
		{"sig bit", func(r *peerdrive.RootRecord) { r.Sig[10] ^= 4 }},
		{"sig short", func(r *peerdrive.RootRecord) { r.Sig = r.Sig[:63] }},
		{"sig long", func(r *peerdrive.RootRecord) { r.Sig = append(r.Sig, 0) }},
		{"sig nil", func(r *peerdrive.RootRecord) { r.Sig = nil }},
		{"signed by another", func(r *peerdrive.RootRecord) {
			owner := r.Owner
			r.Sign(other)
			r.Owner = owner
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := goldenRoot()
			r.Owner = bytes.Clone(r.Owner)
			r.Sig = bytes.Clone(r.Sig)
			c.change(r)
			if err := r.Verify(); !errors.Is(err, peerdrive.ErrBadSignature) {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
			// Through the encoding as well, where it still encodes.
			b, err := peerdrive.MarshalRoot(r)
			if err != nil {
				t.Fatal(err)
			}
			if dec, err := peerdrive.UnmarshalRoot(b); err == nil {
				if err := dec.Verify(); !errors.Is(err, peerdrive.ErrBadSignature) {
					t.Fatalf("Verify after round trip = %v, want ErrBadSignature", err)
				}
			}
		})
	}
	// A record validly signed by another key is not testOwner's.
	r := goldenRoot()
	r.Sign(other)
	if err := r.Verify(); err != nil {
		t.Fatalf("Verify own record: %v", err)
	}
	if err := r.VerifyFor(testOwner().Public().(ed25519.PublicKey)); !errors.Is(err, peerdrive.ErrBadSignature) {
		t.Fatalf("VerifyFor another owner = %v, want ErrBadSignature", err)
	}
}

// TestRootSignatureContext checks that the signature covers the context
// string: a signature of the bare encoding does not verify.
func TestRootSignatureContext(t *testing.T) {
	priv := testOwner()
	r := goldenRoot()
	r.Sig = nil
	bare, err := peerdrive.MarshalRoot(r)
	if err != nil {
		t.Fatal(err)
	}
	r.Sig = ed25519.Sign(priv, bare)
	if err := r.Verify(); !errors.Is(err, peerdrive.ErrBadSignature) {
		t.Fatalf("signature without context: Verify = %v", err)
	}
	r.Sig = ed25519.Sign(priv, append([]byte("peerdrive root v1\x00"), bare...))
	if err := r.Verify(); err != nil {
		t.Fatalf("signature with context: Verify = %v", err)
	}
}

func TestRootSize(t *testing.T) {
	priv := testOwner()
	// The fixed fields of goldenRoot take 173 bytes with a body of up to
	// 255 bytes; a body length of 65536 or more takes 5 header bytes.
	base := goldenRoot()
	base.Body = nil
	b, err := peerdrive.MarshalRoot(base)
	if err != nil {
		t.Fatal(err)
	}
	fixed := len(b) - 1 + 5 // null body → 5-byte byte string header
	fits := &peerdrive.RootRecord{Seq: 1, Writer: base.Writer, Time: base.Time, LeaseUntil: base.LeaseUntil,
		Body: make([]byte, peerdrive.MaxRootSize-fixed)}
	fits.Sign(priv)
	b, err = peerdrive.MarshalRoot(fits)
	if err != nil || len(b) != peerdrive.MaxRootSize {
		t.Fatalf("record of exactly MaxRootSize: %d bytes, %v", len(b), err)
	}
	if _, err := peerdrive.UnmarshalRoot(b); err != nil {
		t.Fatalf("UnmarshalRoot(MaxRootSize bytes): %v", err)
	}
	over := *fits
	over.Body = append(bytes.Clone(fits.Body), 0)
	over.Sign(priv)
	if _, err := peerdrive.MarshalRoot(&over); !errors.Is(err, peerdrive.ErrTooLarge) {
		t.Fatalf("MarshalRoot over the limit = %v, want ErrTooLarge", err)
	}
	if _, err := peerdrive.UnmarshalRoot(make([]byte, peerdrive.MaxRootSize+1)); !errors.Is(err, peerdrive.ErrTooLarge) ||
		!errors.Is(err, peerdrive.ErrMalformed) {
		t.Fatalf("UnmarshalRoot over the limit = %v, want ErrTooLarge and ErrMalformed", err)
	}
}

// TestUnmarshalRootStrict pins that only the canonical encoding decodes.
func TestUnmarshalRootStrict(t *testing.T) {
	golden, err := hex.DecodeString(goldenRootHex)
	if err != nil {
		t.Fatal(err)
	}
	mapped := func(n byte, rest string) []byte {
		b, err := hex.DecodeString(rest)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{0xa0 + n}, b...)
	}
	body := golden[1:]
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated", golden[:len(golden)-1]},
		{"trailing byte", append(bytes.Clone(golden), 0)},
		{"unknown key", append(append([]byte{0xa8}, body...), 0x08, 0x00)},
		{"duplicate key", append(append([]byte{0xa8}, body...), 0x02, 0x07)},
		{"non-minimal seq", bytes.Replace(golden, []byte{0x02, 0x07, 0x03}, []byte{0x02, 0x18, 0x07, 0x03}, 1)},
		{"keys out of order", mapped(2, "0207"+"01"+"5820"+goldenOwnerHex)},
		{"empty sig present", append(append([]byte{0xa7}, golden[1:bytes.Index(golden, []byte{0x07, 0x58, 0x40})]...), 0x07, 0x40)},
		{"indefinite map", append(append([]byte{0xbf}, body...), 0xff)},
		{"array", []byte{0x82, 0x01, 0x02}},
		{"text owner", mapped(1, "0161"+"41")},
		{"negative seq", mapped(1, "0220")},
		{"tag", mapped(1, "02c100")},
		{"invalid utf-8 writer", mapped(1, "0461ff")},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := peerdrive.UnmarshalRoot(c.b)
			if !errors.Is(err, peerdrive.ErrMalformed) || r != nil {
				t.Fatalf("UnmarshalRoot(%x) = %+v, %v; want ErrMalformed", c.b, r, err)
			}
		})
	}
	// The empty map is not canonical: every field but Sig is always
	// written.
	if _, err := peerdrive.UnmarshalRoot(mapped(0, "")); !errors.Is(err, peerdrive.ErrMalformed) {
		t.Fatalf("UnmarshalRoot(empty map) = %v, want ErrMalformed", err)
	}
	// An unsigned record decodes (it is well formed) but does not verify.
	var zero peerdrive.RootRecord
	zb, err := peerdrive.MarshalRoot(&zero)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a6" + "01f6" + "0200" + "0300" + "0460" + "0500" + "06f6"; hex.EncodeToString(zb) != want {
		t.Fatalf("zero record encodes as %x, want %s", zb, want)
	}
	r, err := peerdrive.UnmarshalRoot(zb)
	if err != nil {
		t.Fatalf("UnmarshalRoot(zero record): %v", err)
	}
	if err := r.Verify(); !errors.Is(err, peerdrive.ErrBadSignature) {
		t.Fatalf("Verify(zero record) = %v", err)
	}
}

func TestCompareRoots(t *testing.T) {
	priv := testOwner()
	mk := func(seq uint64, tm int64, body string) *peerdrive.RootRecord {
		r := &peerdrive.RootRecord{Seq: seq, Time: tm, Body: []byte(body)}
		r.Sign(priv)
		return r
	}
	for _, c := range []struct {
		a, b *peerdrive.RootRecord
		want int
	}{
		{mk(2, 0, "a"), mk(1, 9, "z"), 1},
		{mk(1, 9, "z"), mk(2, 0, "a"), -1},
		{mk(1, 2, "a"), mk(1, 1, "z"), 1},
		{mk(1, 1, "a"), mk(1, 1, "a"), 0},
	} {
		if got := peerdrive.CompareRoots(c.a, c.b); got != c.want {
			t.Errorf("CompareRoots(seq %d time %d, seq %d time %d) = %d, want %d", c.a.Seq, c.a.Time, c.b.Seq, c.b.Time, got, c.want)
		}
	}
	// Same Seq and Time, different bodies: antisymmetric and non-zero.
	a, b := mk(1, 1, "a"), mk(1, 1, "b")
	if x, y := peerdrive.CompareRoots(a, b), peerdrive.CompareRoots(b, a); x == 0 || x != -y {
		t.Errorf("tie break: %d, %d", x, y)
	}
}

// FuzzUnmarshalRoot: arbitrary bytes never panic; what decodes is exactly
// its own canonical encoding; a record that verifies stops verifying when
// any byte of it changes.
func FuzzUnmarshalRoot(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := peerdrive.UnmarshalRoot(b)
		if err != nil {
			if !errors.Is(err, peerdrive.ErrMalformed) || r != nil {
				t.Fatalf("UnmarshalRoot = %+v, %v; want nil, ErrMalformed", r, err)
			}
			return
		}
		again, err := peerdrive.MarshalRoot(r)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
		}
		if err := r.Verify(); err != nil {
			if !errors.Is(err, peerdrive.ErrBadSignature) {
				t.Fatalf("Verify error does not wrap ErrBadSignature: %v", err)
			}
			return
		}
		for i := range b {
			c := bytes.Clone(b)
			c[i] ^= 0x01
			if r2, err := peerdrive.UnmarshalRoot(c); err == nil && r2.Verify() == nil {
				t.Fatalf("flipping byte %d of a valid record still verifies", i)
			}
		}
	})
}

// rootFuzzSeeds is the seed corpus of FuzzUnmarshalRoot.
func rootFuzzSeeds(t testing.TB) map[string][]byte {
	golden, err := hex.DecodeString(goldenRootHex)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := goldenRoot()
	unsigned.Sig = nil
	ub, err := peerdrive.MarshalRoot(unsigned)
	if err != nil {
		t.Fatal(err)
	}
	other := goldenRoot()
	owner := other.Owner
	other.Sign(otherOwner())
	other.Owner = owner
	ob, err := peerdrive.MarshalRoot(other)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(golden)
	flipped[len(flipped)-1] ^= 1
	return map[string][]byte{
		"valid":             golden,
		"unsigned":          ub,
		"signed-by-another": ob,
		"flipped-sig":       flipped,
		"truncated":         golden[:len(golden)-1],
		"unknown-key":       append(append([]byte{0xa8}, golden[1:]...), 0x08, 0x00),
		"empty":             {},
		"empty-map":         {0xa0},
	}
}

// TestRootFuzzSeeds checks the committed corpus of FuzzUnmarshalRoot (and
// rewrites it with -update, the flag of TestFuzzSeeds).
func TestRootFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshalRoot")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range rootFuzzSeeds(t) {
		want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
		path := filepath.Join(dir, name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (generate with -update)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("seed %s is stale (regenerate with -update)", name)
		}
	}
}
