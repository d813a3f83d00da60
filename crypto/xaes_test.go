package crypto

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestXAESVectors checks the test vectors of the C2SP specification.
func TestXAESVectors(t *testing.T) {
	for _, tc := range []struct {
		key        byte
		ad, sealed string
	}{
		{0x01, "", "ce546ef63c9cc60765923609" + "b33a9a1974e96e52daf2fcf7075e2271"},
		{0x03, "c2sp.org/XAES-256-GCM", "986ec1832593df5443a17943" + "7fd083bf3fdb41abd740a21f71eb769d"},
	} {
		var key [KeySize]byte
		for i := range key {
			key[i] = tc.key
		}
		x := newXAES(key)
		nonce := []byte("ABCDEFGHIJKLMNOPQRSTUVWX")
		got := x.Seal(nil, nonce, []byte("XAES-256-GCM"), []byte(tc.ad))
		if hex.EncodeToString(got) != tc.sealed {
			t.Errorf("key %#x: sealed %x, want %s", tc.key, got, tc.sealed)
		}
		plain, err := x.Open(nil, nonce, got, []byte(tc.ad))
		if err != nil || !bytes.Equal(plain, []byte("XAES-256-GCM")) {
			t.Errorf("key %#x: open = %q, %v", tc.key, plain, err)
		}
	}
}
