package crypto

import (
	"bytes"
	"errors"
	"testing"

	"filippo.io/age"
)

// Fixed identities for tests and fuzzing. They protect nothing.
const (
	testIdentity1 = "AGE-SECRET-KEY-1T7MNVKKERDPG9CFS5X74QPWW5ASTX7ACVTDDN0SAN7QF7048A3FS9D2PH9"
	testIdentity2 = "AGE-SECRET-KEY-1UQ37XN7PYMLGN86PTQ3FM4WZKDUX7YC88NU05FNULUCRD3WZPU5SD80WPE"
)

func mustIdentity(t testing.TB, s string) *age.X25519Identity {
	t.Helper()
	id, err := age.ParseX25519Identity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ageEncrypt encrypts arbitrary plaintext to r, for building malformed
// wrapped keys.
func ageEncrypt(t testing.TB, plain []byte, r age.Recipient) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestNewDriveKey(t *testing.T) {
	a, err := NewDriveKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewDriveKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a == (DriveKey{}) {
		t.Fatal("NewDriveKey is not random")
	}
}

func TestWrapUnwrapDriveKey(t *testing.T) {
	id1, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	id2, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	dk, err := NewDriveKey()
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := WrapDriveKey(dk, id1.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(wrapped, []byte("age-encryption.org/v1\n")) {
		t.Fatalf("wrapped key is not a binary age file: %q", wrapped[:min(len(wrapped), 30)])
	}

	// age itself can decrypt it: it is a standard age file.
	r, err := age.Decrypt(bytes.NewReader(wrapped), id1)
	if err != nil {
		t.Fatal(err)
	}
	var viaAge bytes.Buffer
	if _, err := viaAge.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaAge.Bytes(), dk[:]) {
		t.Fatal("age decrypted something other than the drive key")
	}

	tests := []struct {
		name    string
		wrapped []byte
		id      age.Identity
		wantErr error
	}{
		{"right identity", wrapped, id1, nil},
		{"other identity", wrapped, id2, ErrWrongKey},
		{"scrypt identity", wrapped, mustScryptIdentity(t), ErrWrongKey},
		{"empty", nil, id1, ErrCorrupt},
		{"garbage", []byte("not an age file"), id1, ErrCorrupt},
		{"armored", []byte("-----BEGIN AGE ENCRYPTED FILE-----\n"), id1, ErrCorrupt},
		{"truncated payload", wrapped[:len(wrapped)-1], id1, ErrCorrupt},
		{"header only", wrapped[:len(wrapped)-(16+32+16)], id1, ErrCorrupt},
		{"trailing data", append(bytes.Clone(wrapped), 0), id1, ErrCorrupt},
		{"payload flipped", flipByte(wrapped, len(wrapped)-1), id1, ErrCorrupt},
		{"short key", ageEncrypt(t, make([]byte, KeySize-1), id1.Recipient()), id1, ErrCorrupt},
		{"long key", ageEncrypt(t, make([]byte, KeySize+1), id1.Recipient()), id1, ErrCorrupt},
		{"empty key", ageEncrypt(t, nil, id1.Recipient()), id1, ErrCorrupt},
		{"huge payload", ageEncrypt(t, make([]byte, 200_000), id1.Recipient()), id1, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := UnwrapDriveKey(tt.wrapped, tt.id)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("UnwrapDriveKey: %v", err)
				}
				if got != dk {
					t.Fatal("unwrapped a different key")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != (DriveKey{}) {
				t.Fatal("returned a key with an error")
			}
		})
	}
}

func mustScryptIdentity(t testing.TB) age.Identity {
	id, err := age.NewScryptIdentity("password")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func flipByte(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x01
	return b
}

// TestUnwrapDriveKeyTamper flips every byte of a wrapped key. Damage to the
// X25519 stanza looks like a wrong key; everything else is ErrCorrupt.
func TestUnwrapDriveKeyTamper(t *testing.T) {
	id := mustIdentity(t, testIdentity1)
	wrapped, err := WrapDriveKey(testDriveKey(), id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	for i := range wrapped {
		_, err := UnwrapDriveKey(flipByte(wrapped, i), id)
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
			t.Fatalf("flip byte %d: err = %v, want ErrCorrupt or ErrWrongKey", i, err)
		}
	}
	for n := range wrapped {
		_, err := UnwrapDriveKey(wrapped[:n], id)
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
			t.Fatalf("truncate to %d: err = %v, want ErrCorrupt or ErrWrongKey", n, err)
		}
	}
}

func TestWrapUnwrapNil(t *testing.T) {
	if _, err := WrapDriveKey(testDriveKey(), nil); err == nil {
		t.Error("WrapDriveKey(nil recipient) succeeded")
	}
	if _, err := UnwrapDriveKey([]byte("x"), nil); err == nil {
		t.Error("UnwrapDriveKey(nil identity) succeeded")
	}
}
