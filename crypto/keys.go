package crypto

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Envelope layout constants (docs/format.md §3). Both versions have the
// same layout and differ in the AEAD.
const (
	envelopeV1 = 0x01                        // XChaCha20-Poly1305
	envelopeV2 = 0x02                        // XAES-256-GCM, chunks only
	nonceSize  = chacha20poly1305.NonceSizeX // 24, as xaesNonceSize
	tagSize    = chacha20poly1305.Overhead   // 16, as GCM's
	headerSize = 1 + nonceSize
)

// Compile-time checks that XAES-256-GCM fits the same layout.
var _ = [1]struct{}{}[nonceSize-xaesNonceSize]

// ChunkOverhead is the number of bytes [Keys.SealChunk] adds to a plaintext:
// a version byte, a 24-byte nonce and a 16-byte tag, in either version.
const ChunkOverhead = 41

// RecordOverhead is the number of bytes [Keys.SealRecord] adds to a
// plaintext: a version byte, a 24-byte nonce and a 16-byte tag.
const RecordOverhead = 41

// Compile-time checks that the overheads match the layout.
var (
	_ = [1]struct{}{}[ChunkOverhead-(headerSize+tagSize)]
	_ = [1]struct{}{}[RecordOverhead-(headerSize+tagSize)]
)

// HKDF info strings; each derived key has exactly one purpose.
const (
	infoChunk  = "peerdrive/v1/chunk"
	infoChunk2 = "peerdrive/v2/chunk"
	infoRecord = "peerdrive/v1/record"
	infoDedup  = "peerdrive/v1/dedup"
	infoName   = "peerdrive/v1/name"
)

// The additional data of every chunk of each version. Read-only.
var (
	chunkAD  = []byte{envelopeV1}
	chunkAD2 = []byte{envelopeV2}
)

// Keys holds the working keys derived from a [DriveKey]: the AEADs of both
// chunk envelope versions, an AEAD for records, and keyed hashers for
// deduplication and names.
//
// A Keys is safe for concurrent use by multiple goroutines. Create one with
// [DeriveKeys] and share it; do not copy it.
type Keys struct {
	chunk      cipher.AEAD // envelope version 1
	chunk2     *xaes       // envelope version 2
	chunkWrite byte        // the envelope version SealChunk writes
	record     cipher.AEAD
	dedup      hasherPool
	name       hasherPool
}

// hardwareAESGCM reports whether this CPU has instructions for both AES and
// GCM's carry-less multiplication. Without them Go's AES-GCM is slower than
// XChaCha20-Poly1305 and not constant-time.
func hardwareAESGCM() bool {
	return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ ||
		cpu.ARM64.HasAES && cpu.ARM64.HasPMULL ||
		cpu.S390X.HasAES && cpu.S390X.HasAESGCM
}

// DeriveKeys derives the working keys from dk. Each key is
// HKDF-SHA256(dk, salt = nil, info = "peerdrive/v1/" + purpose) for the
// purposes "chunk", "record", "dedup" and "name", and "peerdrive/v2/chunk"
// for version 2 chunks. New chunks are sealed in version 2 (XAES-256-GCM)
// on CPUs with AES-GCM instructions and in version 1 (XChaCha20-Poly1305)
// elsewhere; both versions open everywhere.
func DeriveKeys(dk DriveKey) *Keys {
	chunkKey := deriveKey(dk, infoChunk)
	chunkKey2 := deriveKey(dk, infoChunk2)
	recordKey := deriveKey(dk, infoRecord)
	dedupKey := deriveKey(dk, infoDedup)
	nameKey := deriveKey(dk, infoName)
	k := &Keys{
		chunk:      newAEAD(chunkKey),
		chunk2:     newXAES(chunkKey2),
		chunkWrite: envelopeV1,
		record:     newAEAD(recordKey),
	}
	if hardwareAESGCM() {
		k.chunkWrite = envelopeV2
	}
	k.dedup.init(dedupKey)
	k.name.init(nameKey)
	clear(chunkKey[:])
	clear(chunkKey2[:])
	clear(recordKey[:])
	return k
}

// deriveKey returns HKDF-SHA256(dk, nil salt, info), KeySize bytes long.
func deriveKey(dk DriveKey, info string) [KeySize]byte {
	out, err := hkdf.Key(sha256.New, dk[:], nil, info, KeySize)
	if err != nil {
		// Only possible for an over-long output, which KeySize is not.
		panic("crypto: hkdf: " + err.Error())
	}
	var k [KeySize]byte
	copy(k[:], out)
	clear(out)
	return k
}

// newAEAD returns XChaCha20-Poly1305 keyed with key.
func newAEAD(key [KeySize]byte) cipher.AEAD {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		// Only possible for a wrong key length, which KeySize is not.
		panic("crypto: chacha20poly1305: " + err.Error())
	}
	return a
}

// SealChunk encrypts and authenticates plain as a chunk envelope (version 2
// where the CPU has AES-GCM instructions, else version 1) and appends it to
// dst, returning the extended slice (dst may be nil). The
// result is len(plain)+[ChunkOverhead] bytes longer than dst. Each call uses
// a fresh random nonce, so sealing the same plaintext twice gives different
// envelopes. plain must not overlap the appended bytes.
func (k *Keys) SealChunk(dst, plain []byte) []byte {
	if k.chunkWrite == envelopeV2 {
		return seal(k.chunk2, envelopeV2, dst, plain, chunkAD2)
	}
	return seal(k.chunk, envelopeV1, dst, plain, chunkAD)
}

// OpenChunk authenticates and decrypts a chunk envelope of either version
// made by [Keys.SealChunk] and appends the plaintext to dst, returning the extended
// slice. Any failure (wrong key, altered or truncated envelope, unknown
// version) returns an error wrapping [ErrCorrupt]. dst must not overlap
// sealed; on failure the spare capacity of dst may have been overwritten.
func (k *Keys) OpenChunk(dst, sealed []byte) ([]byte, error) {
	var out []byte
	var err error
	if len(sealed) > 0 && sealed[0] == envelopeV2 {
		out, err = open(k.chunk2, envelopeV2, dst, sealed, chunkAD2)
	} else {
		out, err = open(k.chunk, envelopeV1, dst, sealed, chunkAD)
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: open chunk: %w", err)
	}
	return out, nil
}

// ChunkHeaderSize is the length of a chunk envelope's header, its version
// byte and nonce: the ciphertext follows, as long as the plaintext, then
// the tag.
const ChunkHeaderSize = headerSize

// ErrNoRange: the envelope's version has no partial decryption.
var ErrNoRange = errors.New("crypto: envelope version has no partial decryption")

// maxRangeEnd bounds the plaintext offsets DecryptChunkRange decrypts, far
// above any chunk: where GCM's 32-bit block counter would wrap.
const maxRangeEnd = (1<<32 - 3) * 16

// PartialOpen reports whether DecryptChunkRange decrypts parts of the
// envelope whose header is header (version 2, XAES-256-GCM).
func PartialOpen(header []byte) bool {
	return len(header) >= headerSize && header[0] == envelopeV2
}

// DecryptChunkRange appends to dst the plaintext of ct: ciphertext bytes of
// the chunk envelope whose header (its first ChunkHeaderSize bytes) is
// header, from plaintext offset off on (envelope offset ChunkHeaderSize+off).
//
// It does not authenticate them. Call it only for an envelope opened whole
// with OpenChunk before, whose bytes the caller knows to be the same (its
// header and length compared): partial reads of a verified chunk, without
// the cost of the whole chunk each time. Version 2 envelopes only
// (PartialOpen): AES-CTR under the envelope's key, as GCM encrypted it;
// ErrNoRange for others. dst must not overlap ct.
func (k *Keys) DecryptChunkRange(dst, header, ct []byte, off int64) ([]byte, error) {
	if len(header) != headerSize || off < 0 || off+int64(len(ct)) > maxRangeEnd {
		return nil, fmt.Errorf("crypto: chunk range of %d bytes at %d, %d-byte header: %w", len(ct), off, len(header), ErrCorrupt)
	}
	if !PartialOpen(header) {
		return nil, ErrNoRange
	}
	return k.chunk2.ctrRange(dst, header[1:], ct, off), nil
}

// SealRecord encrypts and authenticates plain as a version 1 record envelope
// bound to ad, and appends it to dst, returning the extended slice (dst may
// be nil). Callers pass the storage key of the record as ad, so that a record
// moved to another key fails to open. The result is len(plain)+
// [RecordOverhead] bytes longer than dst. plain must not overlap the appended
// bytes.
func (k *Keys) SealRecord(dst, ad, plain []byte) []byte {
	return seal(k.record, envelopeV1, dst, plain, recordAD(ad))
}

// OpenRecord authenticates and decrypts a record envelope made by
// [Keys.SealRecord] with the same ad, and appends the plaintext to dst,
// returning the extended slice. Any failure (wrong key or ad, altered or
// truncated envelope, unknown version) returns an error wrapping
// [ErrCorrupt]. dst must not overlap sealed; on failure the spare capacity of
// dst may have been overwritten.
func (k *Keys) OpenRecord(dst, ad, sealed []byte) ([]byte, error) {
	out, err := open(k.record, envelopeV1, dst, sealed, recordAD(ad))
	if err != nil {
		return nil, fmt.Errorf("crypto: open record: %w", err)
	}
	return out, nil
}

// recordAD returns the additional data of a version 1 record: 0x01 || ad.
func recordAD(ad []byte) []byte {
	full := make([]byte, 1+len(ad))
	full[0] = envelopeV1
	copy(full[1:], ad)
	return full
}

// seal appends an envelope of plain to dst: the version byte, then aead's.
func seal(aead cipher.AEAD, version byte, dst, plain, ad []byte) []byte {
	n := headerSize + len(plain) + tagSize
	out := slices.Grow(dst, n)[:len(dst)+n]
	env := out[len(dst):]
	env[0] = version
	nonce := env[1:headerSize]
	rand.Read(nonce) // never returns an error (Go 1.24+); it crashes instead
	aead.Seal(env[headerSize:headerSize], nonce, plain, ad)
	return out
}

// open authenticates and decrypts an envelope of the given version with
// aead, appending the plaintext to dst. Errors wrap ErrCorrupt.
func open(aead cipher.AEAD, version byte, dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < headerSize+tagSize {
		return nil, fmt.Errorf("%w: envelope is %d bytes, shorter than the minimum %d", ErrCorrupt, len(sealed), headerSize+tagSize)
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("%w: unknown envelope version %d", ErrCorrupt, sealed[0])
	}
	out, err := aead.Open(dst, sealed[1:headerSize], sealed[headerSize:], ad)
	if err != nil {
		// The AEAD's own error says nothing more than ErrCorrupt does.
		return nil, ErrCorrupt
	}
	return out, nil
}

// DedupHash returns the keyed BLAKE3-256 hash of plain under the dedup key.
// Equal plaintexts in one drive have equal hashes, which lets a drive find
// duplicates without revealing content hashes to anyone lacking the key.
func (k *Keys) DedupHash(plain []byte) [32]byte {
	h := k.dedup.get()
	h.Write(plain)
	var sum [32]byte
	h.Sum(sum[:0])
	k.dedup.put(h)
	return sum
}

// NameHash returns the first 16 bytes of the keyed BLAKE3 hash, under the
// name key, of the 8-byte big-endian parent followed by name. It identifies a
// directory entry without revealing its name.
func (k *Keys) NameHash(parent uint64, name string) [16]byte {
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], parent)
	h := k.name.get()
	h.Write(p[:])
	h.WriteString(name)
	var sum [32]byte
	h.Sum(sum[:0])
	k.name.put(h)
	var out [16]byte
	copy(out[:], sum[:16])
	return out
}

// ContentID returns the unkeyed BLAKE3-256 hash of b.
func ContentID(b []byte) [32]byte {
	return blake3.Sum256(b)
}

// hasherPool hands out keyed BLAKE3 hashers that are ready to use. A
// blake3.Hasher carries an 8 KiB buffer; creating or cloning one per call
// costs far more than hashing a short name, so hashers are reused through a
// sync.Pool. Reset keeps a hasher's key.
type hasherPool struct {
	pool sync.Pool
}

// init prepares p to make hashers keyed with key.
func (p *hasherPool) init(key [KeySize]byte) {
	p.pool.New = func() any {
		h, err := blake3.NewKeyed(key[:])
		if err != nil {
			// Only possible for a wrong key length, which KeySize is not.
			panic("crypto: blake3: " + err.Error())
		}
		return h
	}
}

// get returns a freshly reset keyed hasher.
func (p *hasherPool) get() *blake3.Hasher {
	return p.pool.Get().(*blake3.Hasher)
}

// put resets h and returns it to the pool.
func (p *hasherPool) put(h *blake3.Hasher) {
	h.Reset()
	p.pool.Put(h)
}
