package store

import (
	"errors"
	"testing"
)

// FuzzDecodeHold feeds the hold value decoder: what it accepts encodes
// back to the same bytes (the old form, size only, has expiry 0).
func FuzzDecodeHold(f *testing.F) {
	f.Add(encodeHold(1<<20, 1_800_000_000))
	f.Add([]byte{0x80, 0x01})
	f.Add([]byte{0x05, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		size, expiry, err := decodeHold(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		var again []byte
		if expiry == 0 {
			again = encodeHold(int64(size), 0)[:len(encodeHold(int64(size), 0))-1]
		} else {
			again = encodeHold(int64(size), expiry)
		}
		if string(again) != string(b) {
			// Non-minimal uvarints decode but do not round-trip; they
			// must still decode to the same values.
			s2, e2, err := decodeHold(again)
			if err != nil || s2 != size || e2 != expiry {
				t.Fatalf("%x -> (%d, %d) -> %x -> (%d, %d, %v)", b, size, expiry, again, s2, e2, err)
			}
		}
	})
}
