package wasm

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range []*frame{
		{Kind: frameUnit, Unit: toWireUnit(Unit{Module: []byte("\x00asm"), Args: []string{"-x"}, Env: map[string]string{"A": "1"},
			Inputs: map[string][]byte{"a/b": []byte("c")}, Checkpoint: map[string][]byte{}, MemoryLimit: 1 << 20, Timeout: time.Second, OutLimit: 5, CacheDir: "/c"})},
		{Kind: frameCheckpoint, Checkpoint: &wireCheckpoint{Seq: 2, Progress: 0.5, Files: map[string][]byte{"state": []byte("2 ab")}}},
		{Kind: frameResult, Result: toWireResult(Result{ExitCode: 3, Stdout: []byte("o"), Out: map[string][]byte{"r": nil}, CPU: time.Millisecond}, nil)},
		{Kind: frameResult, Result: toWireResult(Result{}, ErrMemoryLimit)},
	} {
		var buf bytes.Buffer
		if err := writeFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
		got, err := readFrame(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if f.Unit != nil {
			if !reflect.DeepEqual(got.Unit.unit(), f.Unit.unit()) {
				t.Fatalf("round trip: got %+v, want %+v", got.Unit.unit(), f.Unit.unit())
			}
		} else if !reflect.DeepEqual(got, f) {
			t.Fatalf("round trip: got %+v, want %+v", got, f)
		}
		if _, err := readFrame(&buf); err != io.EOF {
			t.Fatalf("after the frame: %v, want io.EOF", err)
		}
	}
	// An empty restored checkpoint stays non-nil: a resumed unit, not a fresh one.
	if u := toWireUnit(Unit{Checkpoint: map[string][]byte{}}).unit(); u.Checkpoint == nil {
		t.Fatal("empty checkpoint lost")
	}
	// Error kinds survive the pipe.
	for _, sentinel := range []error{ErrInvalidModule, ErrMemoryLimit, ErrTimeout, ErrCrashed, ErrOutputLimit} {
		if _, err := toWireResult(Result{}, sentinel).result(); !errors.Is(err, sentinel) {
			t.Fatalf("%v became %v", sentinel, err)
		}
	}
}

func TestReadFrameMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"short header": {0, 0},
		"huge length":  {0xff, 0xff, 0xff, 0xff},
		"short body":   {0, 0, 0, 9, 0xa1},
		"not cbor":     {0, 0, 0, 1, 0xff},
		"no body":      append([]byte{0, 0, 0, 3}, 0xa1, 0x01, 0x01),
		"wrong body":   append([]byte{0, 0, 0, 5}, 0xa2, 0x01, 0x02, 0x02, 0xa0),
	} {
		if _, err := readFrame(bytes.NewReader(b)); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, fr := range []*frame{
		{Kind: frameUnit, Unit: toWireUnit(Unit{Module: []byte("m"), Args: []string{"a"}, Env: map[string]string{"k": "v"}, Inputs: map[string][]byte{"i": {1}}})},
		{Kind: frameCheckpoint, Checkpoint: &wireCheckpoint{Seq: 1, Progress: 0.1, Files: map[string][]byte{"s": {2}}}},
		{Kind: frameResult, Result: toWireResult(Result{ExitCode: 1, Stdout: []byte("x")}, ErrTimeout)},
	} {
		var buf bytes.Buffer
		writeFrame(&buf, fr)
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := readFrame(bytes.NewReader(b))
		if err != nil {
			if err != io.EOF && !errors.Is(err, ErrFrame) {
				t.Fatalf("error %v is neither io.EOF nor ErrFrame", err)
			}
			return
		}
		// A frame that decodes re-encodes to bytes that decode and
		// re-encode to the same bytes.
		var buf bytes.Buffer
		if err := writeFrame(&buf, fr); err != nil {
			t.Fatal(err)
		}
		enc := append([]byte(nil), buf.Bytes()...)
		again, err := readFrame(&buf)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		var buf2 bytes.Buffer
		if err := writeFrame(&buf2, again); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, buf2.Bytes()) {
			t.Fatalf("re-encoding differs: %x vs %x", enc, buf2.Bytes())
		}
		if fr.Unit != nil {
			fr.Unit.unit()
		}
		if fr.Result != nil {
			fr.Result.result()
		}
	})
}
