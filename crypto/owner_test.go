package crypto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
)

const goldenOwnerPath = "testdata/golden-owner-v1.json"

// goldenOwner pins the keys derived from the recovery key (format version
// 1): the owner's signing key and the root key. Regenerate only by adding a
// new version: go test ./crypto/ -run TestGoldenOwner -update
type goldenOwner struct {
	Comment     string `json:"comment"`
	Identity    string `json:"identity"`
	OwnerSeed   string `json:"owner_seed"`
	OwnerPublic string `json:"owner_public"`
	SigMessage  string `json:"sig_message"`
	Sig         string `json:"sig"`
	RootKey     string `json:"root_key"`
	RootAD      string `json:"root_ad"`
	RootPlain   string `json:"root_plain"`
	SealedRoot  string `json:"sealed_root"`
}

const (
	goldenSigMessage = "hello, owner"
	goldenRootPlain  = "hello, root"
)

func TestGoldenOwner(t *testing.T) {
	id := mustIdentity(t, testIdentity1)
	priv := OwnerKey(id)
	pub := priv.Public().(ed25519.PublicKey)
	rootKey := deriveFromRecovery(id, infoRoot)
	rs := RootKey(id)

	if *update && missing(goldenOwnerPath) {
		g := goldenOwner{
			Comment:     "PeerDrive keys derived from the recovery key, format v1. Identity is crypto's testIdentity1; the root envelope's ad is the owner public key. Hex. Do not edit: a mismatch means the format changed.",
			Identity:    testIdentity1,
			OwnerSeed:   hex.EncodeToString(priv.Seed()),
			OwnerPublic: hex.EncodeToString(pub),
			SigMessage:  goldenSigMessage,
			Sig:         hex.EncodeToString(ed25519.Sign(priv, []byte(goldenSigMessage))),
			RootKey:     hex.EncodeToString(rootKey[:]),
			RootAD:      hex.EncodeToString(pub),
			RootPlain:   goldenRootPlain,
			SealedRoot:  hex.EncodeToString(rs.Seal(nil, pub, []byte(goldenRootPlain))),
		}
		data, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenOwnerPath, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	data, err := os.ReadFile(goldenOwnerPath)
	if err != nil {
		t.Fatalf("%v (generate with -update)", err)
	}
	var g goldenOwner
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("%s: %v", goldenOwnerPath, err)
	}
	if g.Identity != testIdentity1 {
		t.Fatalf("golden identity is not testIdentity1")
	}
	for _, c := range []struct{ name, got, want string }{
		{"owner seed", hex.EncodeToString(priv.Seed()), g.OwnerSeed},
		{"owner public key", hex.EncodeToString(pub), g.OwnerPublic},
		// Ed25519 signatures are deterministic.
		{"signature", hex.EncodeToString(ed25519.Sign(priv, []byte(g.SigMessage))), g.Sig},
		{"root key", hex.EncodeToString(rootKey[:]), g.RootKey},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, golden %s", c.name, c.got, c.want)
		}
	}
	sealed := mustHex(t, g.SealedRoot)
	if len(sealed) != len(g.RootPlain)+RootOverhead || sealed[0] != 0x01 {
		t.Errorf("golden sealed root has the wrong layout")
	}
	plain, err := rs.Open(nil, mustHex(t, g.RootAD), sealed)
	if err != nil {
		t.Errorf("Open(golden): %v", err)
	} else if string(plain) != g.RootPlain {
		t.Errorf("Open(golden) = %q, want %q", plain, g.RootPlain)
	}
}

func TestOwnerKeyDeterministic(t *testing.T) {
	id1 := mustIdentity(t, testIdentity1)
	a := OwnerKey(id1)
	b := OwnerKey(mustIdentity(t, testIdentity1))
	if !a.Equal(b) {
		t.Fatal("OwnerKey differs for the same recovery key")
	}
	c := OwnerKey(mustIdentity(t, testIdentity2))
	if a.Equal(c) {
		t.Fatal("two recovery keys give the same owner key")
	}
	msg := []byte("root record")
	if !ed25519.Verify(a.Public().(ed25519.PublicKey), msg, ed25519.Sign(b, msg)) {
		t.Fatal("owner key does not sign")
	}
}

// TestRecoveryKeySeparation checks that the owner seed and the root key
// differ from each other and from every drive-key derivation of the same
// bytes.
func TestRecoveryKeySeparation(t *testing.T) {
	id := mustIdentity(t, testIdentity1)
	owner := deriveFromRecovery(id, infoOwner)
	root := deriveFromRecovery(id, infoRoot)
	if owner == root {
		t.Fatal("owner and root keys are equal")
	}
	if !bytes.Equal(OwnerKey(id).Seed(), owner[:]) {
		t.Fatal("OwnerKey's seed is not the owner derivation")
	}
	for _, info := range []string{infoChunk, infoRecord, infoDedup, infoName} {
		if k := deriveFromRecovery(id, info); k == owner || k == root {
			t.Fatalf("%s collides", info)
		}
	}
}

func TestRootSealer(t *testing.T) {
	id1 := mustIdentity(t, testIdentity1)
	rs := RootKey(id1)
	again := RootKey(mustIdentity(t, testIdentity1))
	other := RootKey(mustIdentity(t, testIdentity2))
	dk := DeriveKeys(testDriveKey())
	ad := []byte("owner")
	for _, size := range []int{0, 1, 100, 64 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			plain := bytes.Repeat([]byte{0xa5}, size)
			prefix := []byte("prefix")
			sealed := rs.Seal(bytes.Clone(prefix), ad, plain)
			if !bytes.Equal(sealed[:len(prefix)], prefix) || len(sealed) != len(prefix)+size+RootOverhead {
				t.Fatalf("Seal appended %d bytes", len(sealed)-len(prefix))
			}
			sealed = sealed[len(prefix):]
			got, err := again.Open(nil, ad, sealed)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("Open with the same recovery key = %d bytes, %v", len(got), err)
			}
			mustCorrupt := func(what string, got []byte, err error) {
				t.Helper()
				if !errors.Is(err, ErrCorrupt) || got != nil {
					t.Fatalf("%s: %q, %v; want ErrCorrupt", what, got, err)
				}
			}
			got, err = other.Open(nil, ad, sealed)
			mustCorrupt("other recovery key", got, err)
			got, err = rs.Open(nil, []byte("other"), sealed)
			mustCorrupt("other ad", got, err)
			got, err = dk.OpenRecord(nil, ad, sealed)
			mustCorrupt("record key", got, err)
			got, err = rs.Open(nil, ad, dk.SealRecord(nil, ad, plain))
			mustCorrupt("sealed as a drive record", got, err)
			got, err = rs.Open(nil, ad, flipByte(sealed, len(sealed)-1))
			mustCorrupt("flipped tag", got, err)
			got, err = rs.Open(nil, ad, sealed[:len(sealed)-1])
			mustCorrupt("truncated", got, err)
		})
	}
}
