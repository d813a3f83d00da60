package compute

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzJobRecord: a stored job record that does not decode is refused, never
// a panic, and one that decodes has a sane shape.
func FuzzJobRecord(f *testing.F) {
	j := &job{ID: "00112233445566778899aabbccddeeff", Key: make([]byte, 32), Spec: Spec{Units: 2, Replicas: 2, Deadline: time.Minute, Memory: 1 << 20, Urgency: 1},
		Units: []*unit{{Index: 0, State: StateQueued}, {Index: 1, State: StateRunning, Runs: []*run{{Lease: "aa", Supplier: "p", State: runActive}}}}}
	b, _ := json.Marshal(j)
	f.Add(b)
	f.Add([]byte(`{"id":"x","units":[null]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := decodeJob(b)
		if err != nil {
			return
		}
		if len(j.Units) != j.Spec.Units {
			t.Fatal("unit count")
		}
		j.state()
		for _, u := range j.Units {
			u.wanted(j.Spec.Replicas)
			u.excluded()
			u.resumeFrom()
			u.decide(j.Spec.Replicas)
		}
	})
}

// FuzzPayloads: the plaintexts inside sealed results and checkpoints.
func FuzzPayloads(f *testing.F) {
	f.Add(encode(&resultBody{Exit: 1, Stdout: []byte("x"), Out: map[string][]byte{"a": {1}}}))
	f.Add(encode(&files{Files: map[string][]byte{"state": []byte("1 ab")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeResult(b); err == nil {
			r.vote()
		}
		decodeFiles(b)
	})
}
