package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// WorkerNice is the niceness of worker processes.
const WorkerNice = 10

// workerHeadroom is the memory a worker may use beyond its unit's guest
// memory and four times its output limit (outputs, checkpoint copies,
// frames): the Go runtime, wazero and the compiled code.
const workerHeadroom = 1 << 30

// Process is a unit running in its own worker process.
type Process struct {
	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{}

	mu     sync.Mutex
	killed bool  // by Kill
	late   bool  // outlived its timeout: killed by the watchdog
	cbErr  error // onCheckpoint failed
	ctxErr error // ctx ended
	proto  error // malformed frames
	final  *wireResult

	res Result
	err error
}

// Start runs u in a new worker process: exe re-executed with args (which
// must lead to WorkerMain, e.g. "compute-worker"), niced to WorkerNice, in
// its own process group, killed if this process dies. onCheckpoint (may be
// nil) is called from another goroutine for each checkpoint, in order; if
// it returns an error the worker is killed and Wait returns that error.
// When ctx ends the worker is killed.
func Start(ctx context.Context, exe string, args []string, u Unit, onCheckpoint func(Checkpoint) error) (*Process, error) {
	cmd := exec.Command(exe, args...)
	// The node's own settings (PEERDRIVE_HOME, PEERDRIVE_CPUPROFILE…) are
	// not the worker's: a worker writing the node's profile would clobber it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEERDRIVE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("wasm: worker stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("wasm: worker stdout: %w", err)
	}
	p := &Process{cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("wasm: start worker %s: %w", exe, err)
	}
	// The worker renices all its threads itself; this covers the window
	// before it does.
	_ = unix.Setpriority(unix.PRIO_PROCESS, cmd.Process.Pid, WorkerNice)

	go func() {
		err := writeFrame(stdin, &frame{Kind: frameUnit, Unit: toWireUnit(u)})
		stdin.Close()
		if err != nil {
			slog.Debug("wasm worker: unit not sent", "pid", cmd.Process.Pid, "err", err)
		}
	}()
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.ctxErr = ctx.Err()
			p.mu.Unlock()
			p.kill()
		case <-stop:
		}
	}()
	// The worker ends itself at its timeout, but a guest looping in
	// compiled code cannot be preempted, so a garbage collection asked for
	// meanwhile stops every other goroutine of the worker, its timer too.
	// The watchdog here is the backstop.
	watchdog := func() bool { return false }
	if u.Timeout > 0 {
		t := time.AfterFunc(u.Timeout+2*time.Second+u.Timeout/20, func() {
			p.fail(func() { p.late = true })
		})
		watchdog = t.Stop
	}
	go func() {
		p.read(stdout, onCheckpoint)
		io.Copy(io.Discard, stdout)
		waitErr := cmd.Wait()
		watchdog()
		close(stop)
		p.finish(waitErr)
		close(p.done)
	}()
	return p, nil
}

// read handles the worker's frames until the end of its stdout.
func (p *Process) read(r io.Reader, onCheckpoint func(Checkpoint) error) {
	for {
		f, err := readFrame(r)
		if err == io.EOF {
			return
		}
		if err != nil {
			p.fail(func() { p.proto = err })
			return
		}
		switch f.Kind {
		case frameCheckpoint:
			if onCheckpoint == nil {
				continue
			}
			c := f.Checkpoint
			if err := onCheckpoint(Checkpoint{Seq: c.Seq, Progress: c.Progress, Files: c.Files}); err != nil {
				p.fail(func() { p.cbErr = fmt.Errorf("wasm: checkpoint %d: %w", c.Seq, err) })
				return
			}
		case frameResult:
			p.mu.Lock()
			p.final = f.Result
			p.mu.Unlock()
		default:
			p.fail(func() { p.proto = fmt.Errorf("%w: kind %d from worker", ErrFrame, f.Kind) })
			return
		}
	}
}

// fail records why the worker is being killed, then kills it.
func (p *Process) fail(record func()) {
	p.mu.Lock()
	record()
	p.mu.Unlock()
	p.kill()
}

func (p *Process) kill() {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		slog.Warn("wasm worker: kill failed", "pid", p.cmd.Process.Pid, "err", err)
	}
}

// finish decides the outcome once the worker has exited.
func (p *Process) finish(waitErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var cpu time.Duration
	if st := p.cmd.ProcessState; st != nil {
		cpu = st.UserTime() + st.SystemTime()
	}
	switch {
	case p.cbErr != nil:
		p.err = p.cbErr
	case p.ctxErr != nil:
		if errors.Is(p.ctxErr, context.DeadlineExceeded) {
			p.err = fmt.Errorf("%w: %w", ErrTimeout, p.ctxErr)
		} else {
			p.err = fmt.Errorf("wasm: run cancelled: %w", p.ctxErr)
		}
	case p.late && p.final == nil:
		p.err = fmt.Errorf("%w: the worker outlived its timeout and was killed", ErrTimeout)
	case p.killed:
		p.err = fmt.Errorf("%w: worker killed", ErrCrashed)
	case p.proto != nil:
		p.err = fmt.Errorf("%w: %w", ErrCrashed, p.proto)
	case p.final != nil && waitErr == nil:
		p.res, p.err = p.final.result()
		p.res.CPU = cpu
		return
	default:
		p.err = fmt.Errorf("%w: worker %v: %s", ErrCrashed, waitErr, p.stderr.String())
	}
	if p.final != nil {
		p.res, _ = p.final.result()
	}
	p.res.CPU = cpu
}

// Pid is the worker's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Suspend stops the worker (SIGSTOP); its wall-clock timeout keeps running.
func (p *Process) Suspend() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a suspended worker (SIGCONT).
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT) }

// Kill kills the worker (SIGKILL); Wait then returns ErrCrashed.
func (p *Process) Kill() error {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	return p.signal(syscall.SIGKILL)
}

func (p *Process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("wasm: worker %d: %w", p.cmd.Process.Pid, os.ErrProcessDone)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("wasm: signal worker %d: %w", p.cmd.Process.Pid, err)
	}
	return nil
}

// Wait waits for the unit to finish and returns its result. Result.CPU is
// the CPU time of the whole worker process (compiling included). Wait may
// be called more than once.
func (p *Process) Wait() (Result, error) {
	<-p.done
	return p.res, p.err
}

// Done is closed when the worker has exited and Wait no longer blocks.
func (p *Process) Done() <-chan struct{} { return p.done }

// WorkerMain is the body of the hidden `peerdrive compute-worker` command:
// it renices itself, reads the unit from in, runs it, and writes
// checkpoints and the result to out. It returns the process exit code: 0
// when a result frame was written (whatever the unit's outcome). When the
// unit's timeout expires it writes a result frame with ErrTimeout and
// exits the process itself (os.Exit), as the guest cannot be interrupted.
func WorkerMain(in io.Reader, out io.Writer) int {
	if err := reniceSelf(WorkerNice); err != nil {
		slog.Warn("wasm worker: renice failed", "err", err)
	}
	f, err := readFrame(in)
	if err == nil && f.Kind != frameUnit {
		err = fmt.Errorf("%w: kind %d, want a unit", ErrFrame, f.Kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "compute-worker: %v\n", err)
		return 2
	}
	u := f.Unit.unit().withDefaults()
	f = nil
	limit := uint64(u.MemoryLimit) + 4*uint64(u.OutLimit) + workerHeadroom
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		slog.Warn("wasm worker: memory rlimit not set", "err", err)
	}
	// The guest runs without wazero's per-loop context checks (see run):
	// the timeout ends this process instead, after a result frame saying
	// so. mu keeps frames whole.
	var mu sync.Mutex
	timeout := u.Timeout
	u.Timeout = 0
	if timeout > 0 {
		time.AfterFunc(timeout, func() {
			mu.Lock()
			err := fmt.Errorf("%w: %w after %v", ErrTimeout, context.DeadlineExceeded, timeout)
			code := 0
			if werr := writeFrame(out, &frame{Kind: frameResult, Result: toWireResult(Result{}, err)}); werr != nil {
				fmt.Fprintf(os.Stderr, "compute-worker: %v\n", werr)
				code = 1
			}
			os.Exit(code)
		})
	}
	var writeErr error
	res, err := run(context.Background(), u, func(c Checkpoint) error {
		mu.Lock()
		defer mu.Unlock()
		writeErr = writeFrame(out, &frame{Kind: frameCheckpoint, Checkpoint: &wireCheckpoint{Seq: c.Seq, Progress: c.Progress, Files: c.Files}})
		return writeErr
	}, false)
	mu.Lock()
	if writeErr != nil {
		fmt.Fprintf(os.Stderr, "compute-worker: %v\n", writeErr)
		return 1
	}
	if err := writeFrame(out, &frame{Kind: frameResult, Result: toWireResult(res, err)}); err != nil {
		fmt.Fprintf(os.Stderr, "compute-worker: %v\n", err)
		return 1
	}
	return 0
}

// reniceSelf sets the niceness of every thread of this process to at least
// nice (on Linux a niceness is per thread; threads created later inherit
// it from their creator). It repeats until a pass finds no new thread.
func reniceSelf(nice int) error {
	done := map[int]bool{}
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("wasm: list threads: %w", err)
		}
		fresh := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			done[tid], fresh = true, true
			// Getpriority returns 20-nice (the raw Linux value).
			if cur, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && 20-cur >= nice {
				continue
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("wasm: renice thread %d: %w", tid, err)
			}
		}
		if !fresh {
			return nil
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
