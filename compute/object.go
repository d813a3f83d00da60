package compute

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// Objects: code, inputs, checkpoints and results travel and rest as record
// envelopes (crypto.Keys.SealRecord) under keys derived from the job's own
// random key, with additional data "peerdrive/compute/" + kind. An object is
// named by the BLAKE3 hash of its sealed bytes (crypto.ContentID), so the
// requester's store checks what it is given without any key.
const (
	objModule = "module"
	objInput  = "input"
	objCkpt   = "checkpoint"
	objResult = "result"
)

func randRead(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
}

func jobKeys(key []byte) (*crypto.Keys, error) {
	if len(key) != crypto.KeySize {
		return nil, fmt.Errorf("%w: job key of %d bytes", errMalformed, len(key))
	}
	return crypto.DeriveKeys(crypto.DriveKey(key)), nil
}

func seal(k *crypto.Keys, kind string, plain []byte) []byte {
	return k.SealRecord(nil, []byte("peerdrive/compute/"+kind), plain)
}

func open(k *crypto.Keys, kind string, sealed []byte) ([]byte, error) {
	return k.OpenRecord(nil, []byte("peerdrive/compute/"+kind), sealed)
}

func objectID(sealed []byte) string {
	id := crypto.ContentID(sealed)
	return hex.EncodeToString(id[:])
}

// Store keys, tag 'J' (docs/format.md): 'J' 'j' jobID → job record (JSON);
// 'J' 'o' objectID → sealed object.
func jobKey(id string) []byte { return append([]byte("Jj"), id...) }
func objKey(id string) []byte { return append([]byte("Jo"), id...) }

func putObject(t *store.Txn, sealed []byte) (string, error) {
	id := objectID(sealed)
	return id, t.Set(objKey(id), sealed)
}

func getObject(db *store.DB, id string) ([]byte, error) {
	var b []byte
	err := db.View(func(t *store.Txn) error {
		var err error
		b, err = t.Get(objKey(id))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("compute: object %s: %w", id, err)
	}
	if objectID(b) != id {
		return nil, fmt.Errorf("compute: object %s: %w", id, crypto.ErrCorrupt)
	}
	return b, nil
}

// resultBody is a run's result as sealed in a result object.
type resultBody struct {
	Exit   uint32            `cbor:"1,keyasint"`
	Stdout []byte            `cbor:"2,keyasint,omitempty"`
	Out    map[string][]byte `cbor:"3,keyasint,omitempty"`
	Stderr []byte            `cbor:"4,keyasint,omitempty"`
}

// vote is what replicas are compared on: the hash of the exit code, stdout
// and /out files, canonically encoded (stderr is not compared).
func (r *resultBody) vote() string {
	v := resultBody{Exit: r.Exit, Stdout: r.Stdout, Out: r.Out}
	b, err := wireEnc.Marshal(&v)
	if err != nil {
		panic(err)
	}
	id := crypto.ContentID(b)
	return hex.EncodeToString(id[:])
}

func decodeResult(b []byte) (*resultBody, error) {
	var r resultBody
	if err := wireDec.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: result: %v", errMalformed, err)
	}
	return &r, nil
}

// files is a checkpoint's plaintext: path → content.
type files struct {
	Files map[string][]byte `cbor:"1,keyasint,omitempty"`
}

func decodeFiles(b []byte) (map[string][]byte, error) {
	var f files
	if err := wireDec.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: checkpoint: %v", errMalformed, err)
	}
	return f.Files, nil
}

func encode(v any) []byte {
	b, err := wireEnc.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
