package crypto

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"

	"filippo.io/age"
)

// HKDF info strings of the keys derived from the recovery key itself (not
// from the drive key): what a machine that has nothing but the recovery key
// needs to find and open the drive's root record.
const (
	infoOwner = "peerdrive/v1/owner"
	infoRoot  = "peerdrive/v1/root"
)

// RootOverhead is the number of bytes [RootSealer.Seal] adds to a
// plaintext: the record envelope's version byte, nonce and tag.
const RootOverhead = RecordOverhead

// deriveFromRecovery returns HKDF-SHA256(secret = the recovery key's
// "AGE-SECRET-KEY-1..." string, salt = nil, info), KeySize bytes.
func deriveFromRecovery(id *age.X25519Identity, info string) [KeySize]byte {
	if id == nil {
		panic("crypto: nil recovery key")
	}
	out, err := hkdf.Key(sha256.New, []byte(id.String()), nil, info, KeySize)
	if err != nil {
		// Only possible for an over-long output, which KeySize is not.
		panic("crypto: hkdf: " + err.Error())
	}
	var k [KeySize]byte
	copy(k[:], out)
	clear(out)
	return k
}

// OwnerKey returns the drive owner's Ed25519 signing key, derived from the
// recovery key: its seed is HKDF-SHA256(secret = id.String(), salt = nil,
// info = "peerdrive/v1/owner"). The same recovery key always gives the same
// key, so a new machine can sign the drive's root records and find them
// under the public half (peerdrive.RootKeyFor). It panics if id is nil.
func OwnerKey(id *age.X25519Identity) ed25519.PrivateKey {
	seed := deriveFromRecovery(id, infoOwner)
	defer clear(seed[:])
	return ed25519.NewKeyFromSeed(seed[:])
}

// RootSealer seals and opens the Body of a drive's root records with the
// root key, HKDF-SHA256(secret = the recovery key's string, salt = nil,
// info = "peerdrive/v1/root"). Its envelope is the record envelope (format
// version 1, docs/format.md §3) under that key. A RootSealer is safe for
// concurrent use.
type RootSealer struct {
	aead cipher.AEAD
}

// RootKey returns the root-record sealer of the drive whose recovery key is
// id. It panics if id is nil.
func RootKey(id *age.X25519Identity) *RootSealer {
	k := deriveFromRecovery(id, infoRoot)
	defer clear(k[:])
	return &RootSealer{aead: newAEAD(k)}
}

// Seal encrypts and authenticates plain bound to ad, appends the envelope to
// dst and returns the extended slice: len(plain)+[RootOverhead] bytes
// longer. Callers pass what identifies the body (the owner key, say) as ad.
// Each call uses a fresh random nonce.
func (s *RootSealer) Seal(dst, ad, plain []byte) []byte {
	return seal(s.aead, envelopeV1, dst, plain, recordAD(ad))
}

// Open authenticates and decrypts an envelope made by Seal with the same ad
// and appends the plaintext to dst. Any failure (another recovery key, ad,
// altered or truncated envelope, unknown version) is an error wrapping
// [ErrCorrupt].
func (s *RootSealer) Open(dst, ad, sealed []byte) ([]byte, error) {
	out, err := open(s.aead, envelopeV1, dst, sealed, recordAD(ad))
	if err != nil {
		return nil, fmt.Errorf("crypto: open root: %w", err)
	}
	return out, nil
}
