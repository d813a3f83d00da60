// Package crypto holds PeerDrive's keys and envelopes: the age recovery key
// that a user keeps, the random drive key wrapped to it, the symmetric keys
// derived from the drive key, the authenticated envelopes that protect chunks
// and metadata records, and the keyed and unkeyed hashes used for
// deduplication, directory-entry names and content addressing.
//
// # Key hierarchy
//
// A user's recovery key is an age X25519 identity ([NewRecoveryKey],
// [ParseRecoveryKey], [WriteRecoveryKeyFile]). A random 32-byte [DriveKey] is
// wrapped to it once with age ([WrapDriveKey], [UnwrapDriveKey]). Everything
// else uses fast symmetric keys derived from the drive key with HKDF-SHA256
// ([DeriveKeys]); running age per object would cost an X25519 operation for
// every chunk.
//
// # Envelope format, version 1
//
// Chunks and records share one layout:
//
//	0x01 | nonce (24 random bytes) | XChaCha20-Poly1305 ciphertext | tag (16 bytes)
//
// Chunks are sealed with the "chunk" key and additional data 0x01. Records are
// sealed with the "record" key and additional data 0x01 || ad, where the caller
// passes the storage key as ad so a record cannot be moved to another key
// without detection. Every failure to open an envelope (wrong key, wrong ad,
// altered or truncated data, unknown version) is reported as an error wrapping
// [ErrCorrupt].
//
// The package imports nothing from the rest of PeerDrive.
package crypto

import "errors"

var (
	// ErrCorrupt reports that sealed data failed authentication: it was
	// altered or truncated, was sealed under a different key or additional
	// data, or has an unknown format. Errors returned by this package wrap it
	// with context; test with errors.Is.
	ErrCorrupt = errors.New("crypto: authentication failed")

	// ErrWrongKey reports that the recovery key given to [UnwrapDriveKey]
	// is not one the drive key was wrapped to.
	ErrWrongKey = errors.New("crypto: recovery key does not open this drive key")
)
