package wasm

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startWorker starts u in a worker process with the tests' compilation
// cache.
func startWorker(t *testing.T, ctx context.Context, u Unit, onCheckpoint func(Checkpoint) error) *Process {
	t.Helper()
	u.CacheDir = cacheDir()
	p, err := Start(ctx, workerExe(t), nil, u, onCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	return p
}

// checkpoints collects checkpoints from a worker and lets a test wait for
// one.
type checkpoints struct {
	mu   sync.Mutex
	all  []Checkpoint
	more chan struct{}
}

func newCheckpoints() *checkpoints { return &checkpoints{more: make(chan struct{}, 1)} }

func (c *checkpoints) add(ck Checkpoint) error {
	c.mu.Lock()
	c.all = append(c.all, ck)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
	return nil
}

func (c *checkpoints) last() (Checkpoint, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.all) == 0 {
		return Checkpoint{}, 0
	}
	return c.all[len(c.all)-1], len(c.all)
}

// waitSeq waits until checkpoint seq has arrived.
func (c *checkpoints) waitSeq(t *testing.T, p *Process, seq int) Checkpoint {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if ck, n := c.last(); n >= seq {
			return ck
		}
		select {
		case <-c.more:
		case <-p.Done():
			_, err := p.Wait()
			t.Fatalf("worker ended before checkpoint %d: %v", seq, err)
		case <-deadline:
			t.Fatalf("no checkpoint %d after 30 s", seq)
		}
	}
}

// TestWorkerKillResume kills a worker mid-run, as when a supplier dies,
// and resumes the unit in a new worker from its last checkpoint: it
// continues from that step and ends with the native program's result.
func TestWorkerKillResume(t *testing.T) {
	u := stepperUnit(t, "9", 200, 3000)
	cks := newCheckpoints()
	p := startWorker(t, context.Background(), u, cks.add)
	cks.waitSeq(t, p, 3)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("killed worker: %v, want ErrCrashed", err)
	}
	last, _ := cks.last()
	step, _ := strconv.Atoi(strings.Fields(string(last.Files["state"]))[0])
	if step < 3 || step >= 200 {
		t.Fatalf("last checkpoint at step %d", step)
	}

	u.Checkpoint = last.Files
	p2 := startWorker(t, context.Background(), u, nil)
	res, err := p2.Wait()
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("resumed worker: exit %d, %v\n%s", res.ExitCode, err, res.Stderr)
	}
	want := strings.Replace(nativeStepper(t, u), "start=0", "start="+strconv.Itoa(step), 1)
	if string(res.Stdout) != want || string(res.Out["result"]) != want {
		t.Fatalf("resumed: %q, want %q", res.Stdout, want)
	}
	if res.CPU <= 0 {
		t.Fatalf("CPU %v", res.CPU)
	}
}

func TestWorkerFaults(t *testing.T) {
	probe := module(t, "probe")
	for _, tc := range []struct {
		name string
		u    Unit
		want error
	}{
		{"invalid module", Unit{Module: []byte("\x00asm garbage")}, ErrInvalidModule},
		{"memory hog", Unit{Module: probe, Args: []string{"hog"}, MemoryLimit: 32 << 20}, ErrMemoryLimit},
		{"infinite loop", Unit{Module: probe, Args: []string{"loop"}, Timeout: 500 * time.Millisecond}, ErrTimeout},
		{"out over cap", Unit{Module: probe, Args: []string{"outfill"}, OutLimit: 1 << 20}, ErrOutputLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := startWorker(t, context.Background(), tc.u, nil).Wait()
			if !errors.Is(err, tc.want) {
				t.Fatalf("Wait: %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("passwd", func(t *testing.T) {
		res, err := startWorker(t, context.Background(), Unit{Module: probe, Args: []string{"passwd"}}, nil).Wait()
		if err != nil || !strings.Contains(string(res.Stdout), "open /etc/passwd: No such file or directory") {
			t.Fatalf("Wait: %v, stdout %q", err, res.Stdout)
		}
	})
	t.Run("not a worker", func(t *testing.T) {
		p, err := Start(context.Background(), "/bin/false", nil, Unit{Module: probe}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(); !errors.Is(err, ErrCrashed) {
			t.Fatalf("Wait: %v, want ErrCrashed", err)
		}
	})
	t.Run("killed from outside", func(t *testing.T) {
		p := startWorker(t, context.Background(), Unit{Module: probe, Args: []string{"loop"}}, nil)
		if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(); !errors.Is(err, ErrCrashed) {
			t.Fatalf("Wait: %v, want ErrCrashed", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p := startWorker(t, ctx, Unit{Module: probe, Args: []string{"loop"}}, nil)
		cancel()
		if _, err := p.Wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v, want context.Canceled", err)
		}
	})
}

// procStat returns the state letter, CPU ticks and niceness of a task
// from /proc/PID[/task/TID]/stat.
func procStat(t *testing.T, path string) (state string, ticks int, nice int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	// After the command: state(3) ... utime(14) stime(15) ... nice(19).
	utime, _ := strconv.Atoi(f[14-3])
	stime, _ := strconv.Atoi(f[15-3])
	nice, _ = strconv.Atoi(f[19-3])
	return f[0], utime + stime, nice
}

// TestWorkerSuspendResume stops a running worker, sees that it neither
// runs nor checkpoints while stopped, resumes it and sees it finish. It
// also checks that every thread of the worker is niced and that its data
// size is capped.
func TestWorkerSuspendResume(t *testing.T) {
	u := stepperUnit(t, "4", 60, 3000)
	cks := newCheckpoints()
	p := startWorker(t, context.Background(), u, cks.add)
	cks.waitSeq(t, p, 2)

	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid()) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if _, _, nice := procStat(t, "/proc/"+strconv.Itoa(p.Pid())+"/task/"+task.Name()+"/stat"); nice < WorkerNice {
			t.Fatalf("worker thread %s has nice %d, want >= %d", task.Name(), nice, WorkerNice)
		}
	}

	limits, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatInt(DefaultMemoryLimit+4*DefaultOutLimit+workerHeadroom, 10)
	if !strings.Contains(string(limits), "Max data size             "+want+" ") {
		t.Fatalf("worker data size limit not %s:\n%s", want, limits)
	}

	if err := p.Suspend(); err != nil {
		t.Fatal(err)
	}
	stat := "/proc/" + strconv.Itoa(p.Pid()) + "/stat"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if state, _, _ := procStat(t, stat); state == "T" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker not stopped after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, before := cks.last()
	_, ticks0, _ := procStat(t, stat)
	// Measure what a stopped worker does over an interval: nothing.
	time.Sleep(300 * time.Millisecond)
	_, ticks1, _ := procStat(t, stat)
	if _, after := cks.last(); after != before || ticks1 != ticks0 {
		t.Fatalf("stopped worker went on: checkpoints %d→%d, CPU ticks %d→%d", before, after, ticks0, ticks1)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	res, err := p.Wait()
	if err != nil || string(res.Stdout) != nativeStepper(t, u) {
		t.Fatalf("resumed worker: %v, stdout %q", err, res.Stdout)
	}
	if _, n := cks.last(); n != 60 {
		t.Fatalf("%d checkpoints, want 60", n)
	}
}
