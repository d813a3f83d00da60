package peerdrive

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// MaxRootSize is the largest encoded root record, in bytes.
const MaxRootSize = 1 << 20

// RootNamespace is the DHT namespace of root records: a drive's latest
// record is stored under [RootKeyFor] its owner.
const RootNamespace = "peerdrive-root"

// rootSigContext is prepended to what a root record's signature covers, so
// that a signature made for anything else never verifies as a root record.
const rootSigContext = "peerdrive root v1\x00"

// Errors of root records.
var (
	// ErrBadSignature reports a root record whose signature does not verify
	// under its Owner key, whose key or signature has the wrong size, or
	// that is not the record of the owner it was looked up for.
	ErrBadSignature = errors.New("root record signature does not verify")

	// ErrTooLarge reports a root record that encodes to more than
	// MaxRootSize bytes.
	ErrTooLarge = errors.New("root record too large")
)

// RootRecord is a drive's signed, versioned root: the latest state of its
// file tree as published by its owner. Anyone can verify it with the public
// key it carries; only the holder of the drive's recovery key can make one
// (crypto.OwnerKey) or read its Body (crypto.RootKey). docs/format.md
// ("Root records") specifies the encoding and what the signature covers.
type RootRecord struct {
	// Owner is the Ed25519 public key (32 bytes) derived from the drive's
	// recovery key; it names the drive.
	Owner ed25519.PublicKey `cbor:"1,keyasint"`
	// Seq grows by at least one with every record an owner publishes; the
	// highest valid Seq is the drive's current root.
	Seq uint64 `cbor:"2,keyasint"`
	// Time is when the record was made, in nanoseconds since the Unix epoch.
	Time int64 `cbor:"3,keyasint"`
	// Writer is the libp2p peer ID (string form) of the node that published
	// the record: the holder of the single-writer lease.
	Writer string `cbor:"4,keyasint"`
	// LeaseUntil is when Writer's lease ends (ns since the epoch) unless a
	// later record renews it.
	LeaseUntil int64 `cbor:"5,keyasint"`
	// Body is sealed with the owner's root key; opaque here.
	Body []byte `cbor:"6,keyasint"`
	// Sig is the Ed25519 signature (64 bytes) by Owner of the record
	// without Sig (see Sign).
	Sig []byte `cbor:"7,keyasint,omitempty"`
}

var rootDec cbor.DecMode

func init() {
	var err error
	rootDec, err = cbor.DecOptions{
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// signedBytes returns what r's signature covers: the context string
// "peerdrive root v1\x00" followed by the canonical CBOR of r without Sig.
func (r *RootRecord) signedBytes() []byte {
	unsigned := *r
	unsigned.Sig = nil
	b, err := encMode.Marshal(&unsigned)
	if err != nil {
		// The record's fields are plain bytes, strings and integers.
		panic("peerdrive: encode root record: " + err.Error())
	}
	return append([]byte(rootSigContext), b...)
}

// Sign sets r.Owner to priv's public key and r.Sig to priv's signature of
// the record. Every other field must be set before, and not changed after.
// Like ed25519.Sign, it panics if priv is not a 64-byte private key.
func (r *RootRecord) Sign(priv ed25519.PrivateKey) {
	r.Owner = priv.Public().(ed25519.PublicKey)
	r.Sig = ed25519.Sign(priv, r.signedBytes())
}

// Verify checks r's signature under r.Owner. A key that is not 32 bytes, a
// signature that is not 64, or a signature that does not verify is an error
// wrapping ErrBadSignature.
func (r *RootRecord) Verify() error {
	if len(r.Owner) != ed25519.PublicKeySize {
		return fmt.Errorf("root record: %d-byte owner key: %w", len(r.Owner), ErrBadSignature)
	}
	if len(r.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("root record: %d-byte signature: %w", len(r.Sig), ErrBadSignature)
	}
	if !ed25519.Verify(r.Owner, r.signedBytes(), r.Sig) {
		return fmt.Errorf("root record %x seq %d: %w", []byte(r.Owner[:6]), r.Seq, ErrBadSignature)
	}
	return nil
}

// VerifyFor is Verify plus a check that r is owner's record; a record of
// another owner is ErrBadSignature too.
func (r *RootRecord) VerifyFor(owner ed25519.PublicKey) error {
	if err := r.Verify(); err != nil {
		return err
	}
	if !bytes.Equal(r.Owner, owner) {
		return fmt.Errorf("root record of %x where %x's was expected: %w", []byte(r.Owner[:6]), shortKey(owner), ErrBadSignature)
	}
	return nil
}

func shortKey(k []byte) []byte { return k[:min(len(k), 6)] }

// MarshalRoot encodes r in canonical CBOR. It does not check the signature.
// A record that encodes to more than MaxRootSize bytes is ErrTooLarge.
func MarshalRoot(r *RootRecord) ([]byte, error) {
	b, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode root record: %w", err)
	}
	if len(b) > MaxRootSize {
		return nil, fmt.Errorf("root record of %d bytes, over %d: %w", len(b), MaxRootSize, ErrTooLarge)
	}
	return b, nil
}

// UnmarshalRoot decodes a root record strictly: b must be at most
// MaxRootSize bytes and exactly the canonical encoding MarshalRoot gives
// (so no unknown, duplicate or misordered keys, no non-minimal lengths, no
// trailing bytes). Failures wrap ErrMalformed (and ErrTooLarge for size). It
// does not check the signature: call Verify.
func UnmarshalRoot(b []byte) (*RootRecord, error) {
	if len(b) > MaxRootSize {
		return nil, fmt.Errorf("%w: %w: %d bytes, over %d", ErrMalformed, ErrTooLarge, len(b), MaxRootSize)
	}
	var r RootRecord
	if err := rootDec.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: root record: %v", ErrMalformed, err)
	}
	again, err := encMode.Marshal(&r)
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: root record is not in canonical form", ErrMalformed)
	}
	return &r, nil
}

// CompareRoots orders two records of one owner: by Seq, then Time, then
// their encodings bytewise, so that every node picks the same one of two
// records (of the same Seq, say) and a > 0 means a is the newer.
func CompareRoots(a, b *RootRecord) int {
	if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Time, b.Time); c != 0 {
		return c
	}
	ab, _ := encMode.Marshal(a)
	bb, _ := encMode.Marshal(b)
	return bytes.Compare(ab, bb)
}

// RootKeyFor returns the DHT key of owner's root record:
// "/peerdrive-root/" followed by the key in lowercase hex.
func RootKeyFor(owner ed25519.PublicKey) string {
	return "/" + RootNamespace + "/" + hex.EncodeToString(owner)
}

// ParseRootKey returns the owner named by a DHT key made by RootKeyFor. Any
// other string is ErrMalformed.
func ParseRootKey(key string) (ed25519.PublicKey, error) {
	h, ok := strings.CutPrefix(key, "/"+RootNamespace+"/")
	if !ok || len(h) != 2*ed25519.PublicKeySize || strings.ToLower(h) != h {
		return nil, fmt.Errorf("root key %q: %w", key, ErrMalformed)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("root key %q: %w", key, ErrMalformed)
	}
	return ed25519.PublicKey(b), nil
}
