package wasm

import (
	"context"
	"errors"
	"time"
)

// Defaults applied when a Unit leaves a limit at zero.
const (
	DefaultMemoryLimit int64 = 256 << 20 // guest linear memory
	DefaultOutLimit    int64 = 64 << 20  // bytes across /out, and across /ckpt
)

// Sentinel errors callers branch on. Run, Start and Process.Wait wrap them
// with the reason.
var (
	ErrInvalidModule = errors.New("invalid wasm module")
	ErrMemoryLimit   = errors.New("memory limit exceeded")
	ErrTimeout       = errors.New("unit timed out")
	ErrCrashed       = errors.New("unit crashed")
	ErrOutputLimit   = errors.New("output limit exceeded")
)

// Unit is one run of a WebAssembly (WASI preview 1) module.
type Unit struct {
	Module      []byte            // Wasm (WASI preview 1) bytes
	Args        []string          // argv[1:]; argv[0] is "unit"
	Env         map[string]string // e.g. PEERDRIVE_UNIT=3
	Inputs      map[string][]byte // read-only files under /in, by slash path relative to /in
	Checkpoint  map[string][]byte // files restored under /ckpt (nil: fresh start)
	MemoryLimit int64             // bytes of guest memory (0: DefaultMemoryLimit)
	Timeout     time.Duration     // wall-clock limit for this run (0: none beyond ctx)
	OutLimit    int64             // bytes across /out (0: DefaultOutLimit); same for /ckpt, stdout, stderr
	CacheDir    string            // compilation cache directory ("": in memory, per process); neither is ever pruned
}

// Checkpoint is a state the guest committed: the whole content of /ckpt at
// the time of the commit.
type Checkpoint struct {
	Seq      int               // 1 for the first commit of this run, then 2, 3…
	Progress float64           // as reported by the guest, 0..1 by convention
	Files    map[string][]byte // slash path relative to /ckpt → content
}

// Result is what a finished unit produced.
type Result struct {
	ExitCode       uint32
	Stdout, Stderr []byte
	Out            map[string][]byte // slash path relative to /out → content
	CPU            time.Duration     // CPU time used
}

// Run runs u in this process; onCheckpoint (may be nil) is called each time
// the guest commits a checkpoint, from the goroutine running the guest. A
// non-nil error from onCheckpoint stops the unit and is returned by Run.
// A guest that exits gives its exit code and a nil error, whatever the
// code; the errors wrap the package's sentinels (or ctx's error if ctx was
// cancelled) and come with the partial Result, for diagnosis.
func Run(ctx context.Context, u Unit, onCheckpoint func(Checkpoint) error) (Result, error) {
	return run(ctx, u, onCheckpoint, true)
}
