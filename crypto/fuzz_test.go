package crypto

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// The seed corpora live in testdata/fuzz/<FuzzName>/ (see TestFuzzSeeds).

func FuzzOpenChunk(f *testing.F) {
	k := DeriveKeys(testDriveKey())
	f.Fuzz(func(t *testing.T, sealed []byte) {
		plain, err := k.OpenChunk(nil, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(plain) != len(sealed)-ChunkOverhead {
			t.Fatalf("opened %d bytes from a %d-byte envelope", len(plain), len(sealed))
		}
		again, err := k.OpenChunk(nil, k.SealChunk(nil, plain))
		if err != nil || !bytes.Equal(again, plain) {
			t.Fatalf("reseal round trip failed: %v", err)
		}
	})
}

func FuzzOpenRecord(f *testing.F) {
	k := DeriveKeys(testDriveKey())
	f.Fuzz(func(t *testing.T, ad, sealed []byte) {
		plain, err := k.OpenRecord(nil, ad, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(plain) != len(sealed)-RecordOverhead {
			t.Fatalf("opened %d bytes from a %d-byte envelope", len(plain), len(sealed))
		}
		again, err := k.OpenRecord(nil, ad, k.SealRecord(nil, ad, plain))
		if err != nil || !bytes.Equal(again, plain) {
			t.Fatalf("reseal round trip failed: %v", err)
		}
	})
}

func FuzzParseRecoveryKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := ParseRecoveryKey(data)
		if err != nil {
			if id != nil {
				t.Fatal("returned an identity with an error")
			}
			return
		}
		// A parsed key must survive a write/parse round trip.
		again, err := ParseRecoveryKey(formatRecoveryKeyFile(id, time.Unix(0, 0)))
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		if again.String() != id.String() {
			t.Fatal("reparse gave a different key")
		}
	})
}

func FuzzUnwrapDriveKey(f *testing.F) {
	id := mustIdentity(f, testIdentity1)
	f.Fuzz(func(t *testing.T, wrapped []byte) {
		dk, err := UnwrapDriveKey(wrapped, id)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("error wraps neither ErrCorrupt nor ErrWrongKey: %v", err)
			}
			if dk != (DriveKey{}) {
				t.Fatal("returned a key with an error")
			}
		}
	})
}
