package wasm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// The worker's pipe protocol (docs/compute.md, "Sandbox"): the parent
// writes one unit frame to the worker's stdin; the worker writes zero or
// more checkpoint frames then one result frame to its stdout. A frame is a
// 4-byte big-endian length followed by that many bytes of CBOR.

// Frame kinds.
const (
	frameUnit       = 1 // parent → worker: Unit
	frameCheckpoint = 2 // worker → parent: Checkpoint
	frameResult     = 3 // worker → parent: Result, and the error if the run failed
)

// maxFrame bounds one frame: a unit carries its module and inputs, a result
// its outputs (each capped by OutLimit).
const maxFrame = 1 << 30

// ErrFrame is a malformed frame on the worker pipe.
var ErrFrame = errors.New("malformed worker frame")

// Error kinds on the wire, one per sentinel.
const (
	errKindNone = iota
	errKindOther
	errKindInvalidModule
	errKindMemoryLimit
	errKindTimeout
	errKindCrashed
	errKindOutputLimit
)

var errKinds = []struct {
	kind uint8
	err  error
}{
	{errKindInvalidModule, ErrInvalidModule},
	{errKindMemoryLimit, ErrMemoryLimit},
	{errKindTimeout, ErrTimeout},
	{errKindCrashed, ErrCrashed},
	{errKindOutputLimit, ErrOutputLimit},
}

// wireUnit is Unit on the wire (Timeout in nanoseconds).
type wireUnit struct {
	Module      []byte            `cbor:"1,keyasint"`
	Args        []string          `cbor:"2,keyasint,omitempty"`
	Env         map[string]string `cbor:"3,keyasint,omitempty"`
	Inputs      map[string][]byte `cbor:"4,keyasint,omitempty"`
	Checkpoint  map[string][]byte `cbor:"5,keyasint,omitempty"`
	MemoryLimit int64             `cbor:"6,keyasint,omitempty"`
	Timeout     int64             `cbor:"7,keyasint,omitempty"`
	OutLimit    int64             `cbor:"8,keyasint,omitempty"`
	CacheDir    string            `cbor:"9,keyasint,omitempty"`
	Restored    bool              `cbor:"10,keyasint,omitempty"` // Checkpoint is non-nil, even if empty
}

type wireCheckpoint struct {
	Seq      int               `cbor:"1,keyasint"`
	Progress float64           `cbor:"2,keyasint"`
	Files    map[string][]byte `cbor:"3,keyasint,omitempty"`
}

type wireResult struct {
	ExitCode uint32            `cbor:"1,keyasint,omitempty"`
	Stdout   []byte            `cbor:"2,keyasint,omitempty"`
	Stderr   []byte            `cbor:"3,keyasint,omitempty"`
	Out      map[string][]byte `cbor:"4,keyasint,omitempty"`
	CPU      int64             `cbor:"5,keyasint,omitempty"` // nanoseconds
	ErrKind  uint8             `cbor:"6,keyasint,omitempty"`
	ErrMsg   string            `cbor:"7,keyasint,omitempty"`
}

type frame struct {
	Kind       uint8           `cbor:"1,keyasint"`
	Unit       *wireUnit       `cbor:"2,keyasint,omitempty"`
	Checkpoint *wireCheckpoint `cbor:"3,keyasint,omitempty"`
	Result     *wireResult     `cbor:"4,keyasint,omitempty"`
}

var (
	encMode, _ = cbor.CoreDetEncOptions().EncMode()
	decMode, _ = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  8,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
	}.DecMode()
)

func writeFrame(w io.Writer, f *frame) error {
	b, err := encMode.Marshal(f)
	if err != nil {
		return fmt.Errorf("wasm: encode frame: %w", err)
	}
	if len(b) > maxFrame {
		return fmt.Errorf("wasm: frame of %d bytes: %w", len(b), ErrOutputLimit)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return fmt.Errorf("wasm: write frame: %w", err)
	}
	return nil
}

// readFrame reads and checks one frame. It returns io.EOF at a clean end
// of stream, and an error wrapping ErrFrame for anything malformed.
func readFrame(r io.Reader) (*frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%w: header: %v", ErrFrame, err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("%w: length %d above %d", ErrFrame, n, maxFrame)
	}
	// Read in pieces so that a lying length costs no more than the bytes
	// actually sent.
	var b []byte
	for rest := int(n); rest > 0; {
		chunk := min(rest, 1<<20)
		start := len(b)
		b = append(b, make([]byte, chunk)...)
		if _, err := io.ReadFull(r, b[start:]); err != nil {
			return nil, fmt.Errorf("%w: body: %v", ErrFrame, err)
		}
		rest -= chunk
	}
	f := new(frame)
	if err := decMode.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFrame, err)
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *frame) check() error {
	ok := false
	switch f.Kind {
	case frameUnit:
		ok = f.Unit != nil && f.Checkpoint == nil && f.Result == nil
	case frameCheckpoint:
		ok = f.Checkpoint != nil && f.Unit == nil && f.Result == nil
	case frameResult:
		ok = f.Result != nil && f.Unit == nil && f.Checkpoint == nil
	}
	if !ok {
		return fmt.Errorf("%w: kind %d with the wrong body", ErrFrame, f.Kind)
	}
	if u := f.Unit; u != nil && (u.MemoryLimit < 0 || u.Timeout < 0 || u.OutLimit < 0) {
		return fmt.Errorf("%w: negative limit", ErrFrame)
	}
	if r := f.Result; r != nil && r.CPU < 0 {
		return fmt.Errorf("%w: negative CPU time", ErrFrame)
	}
	return nil
}

func toWireUnit(u Unit) *wireUnit {
	return &wireUnit{
		Module: u.Module, Args: u.Args, Env: u.Env, Inputs: u.Inputs,
		Checkpoint: u.Checkpoint, Restored: u.Checkpoint != nil,
		MemoryLimit: u.MemoryLimit, Timeout: int64(u.Timeout), OutLimit: u.OutLimit,
		CacheDir: u.CacheDir,
	}
}

func (w *wireUnit) unit() Unit {
	u := Unit{
		Module: w.Module, Args: w.Args, Env: w.Env, Inputs: w.Inputs,
		Checkpoint: w.Checkpoint, MemoryLimit: w.MemoryLimit,
		Timeout: durationNS(w.Timeout), OutLimit: w.OutLimit, CacheDir: w.CacheDir,
	}
	if w.Restored && u.Checkpoint == nil {
		u.Checkpoint = map[string][]byte{}
	}
	return u
}

func toWireResult(r Result, err error) *wireResult {
	w := &wireResult{ExitCode: r.ExitCode, Stdout: r.Stdout, Stderr: r.Stderr, Out: r.Out, CPU: int64(r.CPU)}
	if err != nil {
		w.ErrKind, w.ErrMsg = errKindOther, err.Error()
		for _, k := range errKinds {
			if errors.Is(err, k.err) {
				w.ErrKind = k.kind
				break
			}
		}
	}
	return w
}

func (w *wireResult) result() (Result, error) {
	r := Result{ExitCode: w.ExitCode, Stdout: w.Stdout, Stderr: w.Stderr, Out: w.Out, CPU: durationNS(w.CPU)}
	if w.ErrKind == errKindNone {
		return r, nil
	}
	for _, k := range errKinds {
		if w.ErrKind == k.kind {
			return r, &workerError{kind: k.err, msg: w.ErrMsg}
		}
	}
	return r, &workerError{msg: w.ErrMsg}
}

// workerError is an error reported by a worker: its message as the worker
// wrote it, matching the sentinel of its kind.
type workerError struct {
	kind error // nil for other errors
	msg  string
}

func (e *workerError) Error() string { return "worker: " + e.msg }
func (e *workerError) Unwrap() error { return e.kind }

func durationNS(ns int64) time.Duration { return time.Duration(ns) }
