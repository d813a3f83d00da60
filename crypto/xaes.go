package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"slices"
)

// xaesNonceSize is the nonce size of XAES-256-GCM.
const xaesNonceSize = 24

// xaes is XAES-256-GCM (https://c2sp.org/XAES-256-GCM): AES-256-GCM under a
// key derived from the first 12 bytes of a 24-byte nonce with the NIST SP
// 800-108r1 counter-mode KDF over AES-256-CMAC, so that random nonces are
// safe for any number of messages, as with XChaCha20-Poly1305. It is a
// cipher.AEAD.
type xaes struct {
	block cipher.Block
	k1    [aes.BlockSize]byte // the CMAC subkey K1
}

// newXAES returns XAES-256-GCM keyed with key.
func newXAES(key [KeySize]byte) *xaes {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		// Only possible for a wrong key length, which KeySize is not.
		panic("crypto: aes: " + err.Error())
	}
	x := &xaes{block: b}
	b.Encrypt(x.k1[:], x.k1[:]) // L = AES(K, 0^128)
	var msb byte
	for i := len(x.k1) - 1; i >= 0; i-- {
		x.k1[i], msb = x.k1[i]<<1|msb, x.k1[i]>>7
	}
	x.k1[len(x.k1)-1] ^= byte(subtle.ConstantTimeSelect(int(msb), 0x87, 0))
	return x
}

func (x *xaes) NonceSize() int { return xaesNonceSize }
func (x *xaes) Overhead() int  { return 16 }

// derive returns AES-256 under the key derived from nonce[:12].
func (x *xaes) derive(nonce []byte) cipher.Block {
	var m, k [2 * aes.BlockSize]byte
	m[1], m[2] = 1, 'X'
	copy(m[4:16], nonce[:12])
	m[17], m[18] = 2, 'X'
	copy(m[20:32], nonce[:12])
	subtle.XORBytes(m[:16], m[:16], x.k1[:])
	subtle.XORBytes(m[16:], m[16:], x.k1[:])
	x.block.Encrypt(k[:16], m[:16])
	x.block.Encrypt(k[16:], m[16:])
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic("crypto: aes: " + err.Error())
	}
	return b
}

// gcm returns AES-256-GCM under the key derived from nonce[:12].
func (x *xaes) gcm(nonce []byte) cipher.AEAD {
	g, err := cipher.NewGCM(x.derive(nonce))
	if err != nil {
		panic("crypto: gcm: " + err.Error())
	}
	return g
}

// ctrRange appends to dst ct XORed with the keystream GCM encrypted it
// with, from plaintext offset off on: AES-CTR under the derived key from
// the counter block nonce[12:] || 2+off/16 (GCM's first payload block is
// counter 2), skipping off%16 bytes. It authenticates nothing. GCM
// increments only the counter's last 32 bits, CTR all 128: they agree
// while 2+(off+len(ct))/16 < 2^32, which the caller checks.
func (x *xaes) ctrRange(dst, nonce, ct []byte, off int64) []byte {
	var iv [aes.BlockSize]byte
	copy(iv[:12], nonce[12:])
	binary.BigEndian.PutUint32(iv[12:], uint32(2+off/aes.BlockSize))
	s := cipher.NewCTR(x.derive(nonce), iv[:])
	if skip := off % aes.BlockSize; skip > 0 {
		var pad [aes.BlockSize]byte
		s.XORKeyStream(pad[:skip], pad[:skip])
	}
	out := slices.Grow(dst, len(ct))[:len(dst)+len(ct)]
	s.XORKeyStream(out[len(dst):], ct)
	return out
}

var errXAESNonce = errors.New("crypto: XAES-256-GCM nonce is not 24 bytes")

func (x *xaes) Seal(dst, nonce, plain, ad []byte) []byte {
	if len(nonce) != xaesNonceSize {
		panic(errXAESNonce)
	}
	return x.gcm(nonce).Seal(dst, nonce[12:], plain, ad)
}

func (x *xaes) Open(dst, nonce, sealed, ad []byte) ([]byte, error) {
	if len(nonce) != xaesNonceSize {
		return nil, errXAESNonce
	}
	return x.gcm(nonce).Open(dst, nonce[12:], sealed, ad)
}
