package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// Guest ABI names (docs/compute.md, "Sandbox").
const (
	hostModule     = "peerdrive"
	hostCheckpoint = "checkpoint"
	commitFile     = ".commit" // file convention: closing /ckpt/.commit commits
	argv0          = "unit"
	pageSize       = 65536
)

// exitCheckpointRejected is the exit code the host forces when onCheckpoint
// fails; Run reports the callback's error instead.
const exitCheckpointRejected = 0xfffffffe

var (
	cacheMu  sync.Mutex
	memCache wazero.CompilationCache
	dirCache = map[string]wazero.CompilationCache{}
)

// compilationCache returns the process-wide cache for dir ("" = in memory).
func compilationCache(dir string) (wazero.CompilationCache, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if dir == "" {
		if memCache == nil {
			memCache = wazero.NewCompilationCache()
		}
		return memCache, nil
	}
	if c, ok := dirCache[dir]; ok {
		return c, nil
	}
	c, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wasm: compilation cache %s: %w", dir, err)
	}
	dirCache[dir] = c
	return c, nil
}

// withDefaults fills in zero limits.
func (u Unit) withDefaults() Unit {
	if u.MemoryLimit <= 0 {
		u.MemoryLimit = DefaultMemoryLimit
	}
	if u.OutLimit <= 0 {
		u.OutLimit = DefaultOutLimit
	}
	return u
}

// session is the state of one run shared with the host functions.
type session struct {
	ckpt         *memFS
	onCheckpoint func(Checkpoint) error
	seq          int
	cbErr        error // onCheckpoint failed: the run stops with this error
}

// commit snapshots /ckpt and hands it to onCheckpoint. On failure it ends
// the guest the way proc_exit does.
func (s *session) commit(ctx context.Context, mod api.Module, progress float64) {
	files := s.ckpt.files()
	delete(files, commitFile)
	s.seq++
	if s.onCheckpoint == nil {
		return
	}
	if err := s.onCheckpoint(Checkpoint{Seq: s.seq, Progress: progress, Files: files}); err != nil {
		s.cbErr = err
		if mod != nil {
			_ = mod.CloseWithExitCode(ctx, exitCheckpointRejected)
		}
		panic(sys.NewExitError(exitCheckpointRejected))
	}
}

// run runs u. interruptible makes the guest stop when ctx ends
// (WithCloseOnContextDone), at the price of a check on every loop
// back-edge, measured at 2-3x on a SHA-256 loop; a worker process, which
// is killed instead, runs without it.
func run(ctx context.Context, u Unit, onCheckpoint func(Checkpoint) error, interruptible bool) (res Result, err error) {
	u = u.withDefaults()
	if u.MemoryLimit > 1<<32 {
		u.MemoryLimit = 1 << 32 // wasm32 ceiling
	}
	cache, err := compilationCache(u.CacheDir)
	if err != nil {
		return Result{}, err
	}
	parent := ctx
	if u.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.Timeout)
		defer cancel()
	}

	// The memory cap: wazero lets a module grow up to the wasm32 ceiling and
	// our allocator refuses (and records) growth past u.MemoryLimit, so that
	// hitting the cap is told apart from other failures.
	cfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(cache).
		WithCloseOnContextDone(interruptible).
		WithMemoryLimitPages(1 << 16)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	defer r.Close(context.WithoutCancel(ctx))

	compiled, err := r.CompileModule(ctx, u.Module)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctxError(parent, ctx)
		}
		return Result{}, fmt.Errorf("%w: %v", ErrInvalidModule, err)
	}
	if err := checkModule(compiled, u.MemoryLimit); err != nil {
		return Result{}, err
	}

	ckpt, err := newMemFS(u.Checkpoint, false, u.OutLimit)
	if err != nil {
		return Result{}, fmt.Errorf("wasm: checkpoint files: %w", err)
	}
	in, err := newMemFS(u.Inputs, true, 0)
	if err != nil {
		return Result{}, fmt.Errorf("wasm: input files: %w", err)
	}
	out, _ := newMemFS(nil, false, u.OutLimit)
	root, _ := newMemFS(map[string][]byte{}, false, 0)
	for _, d := range []string{"in", "out", "ckpt"} {
		root.Mkdir(d, 0o755)
	}
	root.readOnly = true

	s := &session{ckpt: ckpt, onCheckpoint: onCheckpoint}
	ckpt.onClose = func(p string) {
		if p != commitFile {
			return
		}
		ckpt.mu.Lock()
		var b []byte
		if n := ckpt.root.children[commitFile]; n != nil && !n.dir {
			b = n.data
		}
		progress, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		ckpt.mu.Unlock()
		ckpt.Unlink(commitFile)
		s.commit(ctx, nil, progress)
	}

	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		return Result{}, fmt.Errorf("wasm: wasi: %w", err)
	}
	_, err = r.NewHostModuleBuilder(hostModule).
		NewFunctionBuilder().
		WithFunc(func(ctx context.Context, mod api.Module, progress float64) { s.commit(ctx, mod, progress) }).
		Export(hostCheckpoint).
		Instantiate(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("wasm: host module: %w", err)
	}

	stdout := &capWriter{limit: u.OutLimit}
	stderr := &capWriter{limit: u.OutLimit}
	fsc := wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(root, "/")
	fsc = fsc.(sysfs.FSConfig).WithSysFSMount(in, "/in")
	fsc = fsc.(sysfs.FSConfig).WithSysFSMount(out, "/out")
	fsc = fsc.(sysfs.FSConfig).WithSysFSMount(ckpt, "/ckpt")
	// No WithSysWalltime/WithSysNanotime/WithRandSource: wazero's defaults
	// are a fixed clock and a seeded random source, so runs are
	// deterministic.
	mc := wazero.NewModuleConfig().
		WithName("").
		WithArgs(append([]string{argv0}, u.Args...)...).
		WithStdin(bytes.NewReader(nil)).
		WithStdout(stdout).
		WithStderr(stderr).
		WithFSConfig(fsc)
	for _, k := range sortedKeys(u.Env) {
		mc = mc.WithEnv(k, u.Env[k])
	}

	alloc := &allocator{limit: u.MemoryLimit}
	runCtx := experimental.WithMemoryAllocator(ctx, alloc)

	var cpu time.Duration
	runErr := func() (err error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := threadCPU()
		defer func() {
			cpu = threadCPU() - start
			if p := recover(); p != nil {
				err = fmt.Errorf("%w: host panic: %v", ErrCrashed, p)
			}
		}()
		mod, err := r.InstantiateModule(runCtx, compiled, mc)
		if mod != nil {
			mod.Close(context.WithoutCancel(ctx))
		}
		return err
	}()

	res = Result{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes(), Out: out.files(), CPU: cpu}
	var exit *sys.ExitError
	if errors.As(runErr, &exit) && exit.ExitCode() != sys.ExitCodeDeadlineExceeded && exit.ExitCode() != sys.ExitCodeContextCanceled {
		res.ExitCode = exit.ExitCode()
	}
	switch {
	case s.cbErr != nil:
		return res, fmt.Errorf("wasm: checkpoint %d: %w", s.seq, s.cbErr)
	case alloc.hit.Load():
		return res, fmt.Errorf("%w: guest memory above %d bytes", ErrMemoryLimit, u.MemoryLimit)
	case out.quotaHit():
		return res, fmt.Errorf("%w: /out above %d bytes", ErrOutputLimit, u.OutLimit)
	case ckpt.quotaHit():
		return res, fmt.Errorf("%w: /ckpt above %d bytes", ErrOutputLimit, u.OutLimit)
	case stdout.hit || stderr.hit:
		return res, fmt.Errorf("%w: stdout or stderr above %d bytes", ErrOutputLimit, u.OutLimit)
	case runErr == nil:
		return res, nil
	case errors.As(runErr, &exit):
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			return res, ctxError(parent, ctx)
		}
		return res, nil
	case ctx.Err() != nil:
		return res, ctxError(parent, ctx)
	case errors.Is(runErr, ErrCrashed):
		return res, runErr
	default:
		return res, fmt.Errorf("%w: %v", ErrCrashed, runErr)
	}
}

// ctxError explains why ctx (derived from parent with the unit's timeout)
// is done: a cancelled parent is reported as such, any deadline as
// ErrTimeout.
func ctxError(parent, ctx context.Context) error {
	if errors.Is(parent.Err(), context.Canceled) {
		return fmt.Errorf("wasm: run cancelled: %w", parent.Err())
	}
	return fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)
}

// checkModule rejects, before running anything, a module that imports what
// we do not provide, has no _start, or whose initial memory exceeds limit.
func checkModule(m wazero.CompiledModule, limit int64) error {
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch {
		case mod == wasi_snapshot_preview1.ModuleName:
		case mod == hostModule && name == hostCheckpoint:
		default:
			return fmt.Errorf("%w: imports unknown function %s.%s", ErrInvalidModule, mod, name)
		}
	}
	if len(m.ImportedMemories()) > 0 {
		return fmt.Errorf("%w: imports a memory", ErrInvalidModule)
	}
	if _, ok := m.ExportedFunctions()["_start"]; !ok {
		return fmt.Errorf("%w: no _start function (not a WASI command)", ErrInvalidModule)
	}
	for _, mem := range m.ExportedMemories() {
		if int64(mem.Min())*pageSize > limit {
			return fmt.Errorf("%w: initial memory %d bytes above %d", ErrMemoryLimit, int64(mem.Min())*pageSize, limit)
		}
	}
	return nil
}

// threadCPU is the CPU time of the calling OS thread.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// capWriter keeps up to limit bytes and records an attempt to write more.
type capWriter struct {
	buf   bytes.Buffer
	limit int64
	hit   bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	room := w.limit - int64(w.buf.Len())
	if int64(len(p)) > room {
		w.hit = true
		w.buf.Write(p[:max(room, 0)])
		return int(max(room, 0)), errNoSpace
	}
	return w.buf.Write(p)
}
