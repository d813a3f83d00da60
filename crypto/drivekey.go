package crypto

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
)

// KeySize is the size in bytes of a [DriveKey] and of every key derived from
// it.
const KeySize = 32

// DriveKey is the random root key of a drive. It is stored only wrapped to
// the recovery key ([WrapDriveKey]); all working keys are derived from it
// with [DeriveKeys]. Treat it as secret: do not log or print it.
type DriveKey [KeySize]byte

// NewDriveKey returns a fresh random drive key from crypto/rand.
func NewDriveKey() (DriveKey, error) {
	var k DriveKey
	if _, err := rand.Read(k[:]); err != nil {
		return DriveKey{}, fmt.Errorf("crypto: generate drive key: %w", err)
	}
	return k, nil
}

// WrapDriveKey encrypts k to r as a standard binary (not armored) age file,
// which the age command-line tool can also decrypt.
func WrapDriveKey(k DriveKey, r age.Recipient) ([]byte, error) {
	if r == nil {
		return nil, errors.New("crypto: wrap drive key: nil recipient")
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, fmt.Errorf("crypto: wrap drive key: %w", err)
	}
	if _, err := w.Write(k[:]); err != nil {
		return nil, fmt.Errorf("crypto: wrap drive key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("crypto: wrap drive key: %w", err)
	}
	return buf.Bytes(), nil
}

// UnwrapDriveKey decrypts a drive key wrapped by [WrapDriveKey].
//
// If id is not a recipient of wrapped, the error wraps [ErrWrongKey]. If
// wrapped is malformed, truncated, fails authentication, or does not hold
// exactly [KeySize] bytes, the error wraps [ErrCorrupt]. Damage to the
// recipient stanza that id would open is indistinguishable from a wrong key
// and is reported as [ErrWrongKey].
func UnwrapDriveKey(wrapped []byte, id age.Identity) (DriveKey, error) {
	if id == nil {
		return DriveKey{}, errors.New("crypto: unwrap drive key: nil identity")
	}
	r, err := age.Decrypt(bytes.NewReader(wrapped), id)
	if err != nil {
		if _, ok := errors.AsType[*age.NoIdentityMatchError](err); ok {
			return DriveKey{}, fmt.Errorf("crypto: unwrap drive key: %w: %v", ErrWrongKey, err)
		}
		return DriveKey{}, fmt.Errorf("crypto: unwrap drive key: %w: %v", ErrCorrupt, err)
	}
	// Read one byte more than a key so an over-long payload is detected.
	// ReadAll reports only a clean, authenticated end of payload as success.
	plain, err := io.ReadAll(io.LimitReader(r, KeySize+1))
	defer clear(plain)
	if err != nil {
		return DriveKey{}, fmt.Errorf("crypto: unwrap drive key: %w: %v", ErrCorrupt, err)
	}
	if len(plain) != KeySize {
		return DriveKey{}, fmt.Errorf("crypto: unwrap drive key: %w: payload is not %d bytes", ErrCorrupt, KeySize)
	}
	var k DriveKey
	copy(k[:], plain)
	return k, nil
}
