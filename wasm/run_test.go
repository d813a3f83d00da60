package wasm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nativeStepper runs the stepper built for this machine with the same
// arguments, environment and inputs as u, and returns its stdout.
func nativeStepper(t *testing.T, u Unit) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"in", "out", "ckpt"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range u.Inputs {
		if err := os.WriteFile(filepath.Join(root, "in", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(build(t, "stepper", true), u.Args...)
	cmd.Env = []string{"STEPPER_ROOT=" + root}
	for k, v := range u.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("native stepper: %v", err)
	}
	return string(out)
}

func stepperUnit(t testing.TB, unit string, steps, iters int) Unit {
	return Unit{
		Module: module(t, "stepper"),
		Args:   []string{"-steps", itoa(steps), "-iters", itoa(iters)},
		Env:    map[string]string{"PEERDRIVE_UNIT": unit},
		Inputs: map[string][]byte{"seed": []byte("seed-" + unit)},
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestRunMatchesNative(t *testing.T) {
	for _, tc := range []struct {
		unit         string
		steps, iters int
	}{
		{"0", 1, 1},
		{"3", 5, 2000},
		{"17", 20, 500},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			u := stepperUnit(t, tc.unit, tc.steps, tc.iters)
			var seqs []int
			res, err := testRun(context.Background(), u, func(c Checkpoint) error {
				seqs = append(seqs, c.Seq)
				if !strings.HasPrefix(string(c.Files["state"]), itoa(c.Seq)+" ") {
					t.Errorf("checkpoint %d state %q", c.Seq, c.Files["state"])
				}
				return nil
			})
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("Run: exit %d, %v\n%s", res.ExitCode, err, res.Stderr)
			}
			want := nativeStepper(t, u)
			if string(res.Stdout) != want || string(res.Out["result"]) != want {
				t.Fatalf("sandbox stdout %q, /out/result %q; native %q", res.Stdout, res.Out["result"], want)
			}
			if len(seqs) != tc.steps || seqs[len(seqs)-1] != tc.steps {
				t.Fatalf("checkpoints %v, want 1..%d", seqs, tc.steps)
			}
			if res.CPU <= 0 {
				t.Fatalf("CPU %v", res.CPU)
			}
		})
	}
}

// TestRunResume stops a run at its third checkpoint, as a killed supplier
// would, and resumes it from that checkpoint: it continues from step 3 and
// ends with the same result as an uninterrupted run.
func TestRunResume(t *testing.T) {
	u := stepperUnit(t, "5", 8, 1000)
	errStop := errors.New("stop here")
	var last Checkpoint
	_, err := testRun(context.Background(), u, func(c Checkpoint) error {
		last = c
		if c.Seq == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Run: %v, want the callback's error", err)
	}
	u.Checkpoint = last.Files
	res, err := testRun(context.Background(), u, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := nativeStepper(t, u)
	want := strings.Replace(full, "start=0", "start=3", 1)
	if string(res.Stdout) != want {
		t.Fatalf("resumed: %q, want %q", res.Stdout, want)
	}
}

func TestRunFaults(t *testing.T) {
	probe := module(t, "probe")
	stepper := module(t, "stepper")
	for _, tc := range []struct {
		name     string
		u        Unit
		want     error
		exit     uint32
		contains string // in stdout
	}{
		{name: "garbage", u: Unit{Module: []byte("not wasm at all")}, want: ErrInvalidModule},
		{name: "empty", u: Unit{}, want: ErrInvalidModule},
		{name: "truncated", u: Unit{Module: stepper[:len(stepper)/2]}, want: ErrInvalidModule},
		{name: "foreign import", u: Unit{Module: foreignImport}, want: ErrInvalidModule},
		{name: "no _start", u: Unit{Module: emptyModule}, want: ErrInvalidModule},
		{name: "memory hog", u: Unit{Module: probe, Args: []string{"hog"}, MemoryLimit: 32 << 20}, want: ErrMemoryLimit},
		{name: "infinite loop", u: Unit{Module: probe, Args: []string{"loop"}, Timeout: 300 * time.Millisecond}, want: ErrTimeout},
		{name: "out over cap", u: Unit{Module: probe, Args: []string{"outfill"}, OutLimit: 1 << 20}, want: ErrOutputLimit},
		{name: "ckpt over cap", u: Unit{Module: stepper, Args: []string{"-steps", "2", "-iters", "1", "-pad", "2000000"}, OutLimit: 1 << 20}, want: ErrOutputLimit},
		{name: "passwd", u: Unit{Module: probe, Args: []string{"passwd"}}, contains: "passwd: open /etc/passwd: No such file or directory\nescape: open /in/../../etc/passwd: No such file or directory"},
		{name: "read-only", u: Unit{Module: probe, Args: []string{"write-in"}}, contains: "write-in: open /in/x: Read-only file system\nwrite-root: open /etc-new: Read-only file system"},
		{name: "listing", u: Unit{Module: probe, Args: []string{"ls"}, Inputs: map[string][]byte{"dir/a": []byte("A"), "seed": nil}}, contains: "/ [ckpt in out] <nil>\n/in [dir seed] <nil>\n/ckpt [] <nil>\nA <nil>"},
		{name: "panic", u: Unit{Module: probe, Args: []string{"panic"}}, exit: 2},
		{name: "nil dereference", u: Unit{Module: probe, Args: []string{"trap"}}, exit: 2},
		{name: "exit 7", u: Unit{Module: probe, Args: []string{"exit", "7"}}, exit: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := testRun(context.Background(), tc.u, nil)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Run: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil || res.ExitCode != tc.exit {
				t.Fatalf("Run: exit %d, %v; want exit %d\n%s", res.ExitCode, err, tc.exit, res.Stderr)
			}
			if !strings.Contains(string(res.Stdout), tc.contains) {
				t.Fatalf("stdout %q, want %q", res.Stdout, tc.contains)
			}
		})
	}
}

// Two hand-assembled modules: one importing env.f, one with no _start.
var (
	foreignImport = []byte{
		0, 'a', 's', 'm', 1, 0, 0, 0,
		1, 4, 1, 0x60, 0, 0, // type section: () -> ()
		2, 9, 1, 3, 'e', 'n', 'v', 1, 'f', 0, 0, // import env.f
		3, 2, 1, 0, // function section
		7, 10, 1, 6, '_', 's', 't', 'a', 'r', 't', 0, 1, // export _start
		10, 4, 1, 2, 0, 0x0b, // code
	}
	emptyModule = []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
)

func TestRunDeterministic(t *testing.T) {
	u := Unit{Module: module(t, "probe"), Args: []string{"clock"}}
	var outs []string
	for i := 0; i < 2; i++ {
		res, err := testRun(context.Background(), u, nil)
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("Run: exit %d, %v\n%s", res.ExitCode, err, res.Stderr)
		}
		outs = append(outs, string(res.Stdout))
	}
	// A worker (as replicas run) gives the same bytes too.
	res, err := startWorker(t, context.Background(), u, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(res.Stdout))
	if outs[0] != outs[1] || outs[0] != outs[2] || len(outs[0]) < 20 {
		t.Fatalf("runs differ:\n%s\n%s\n%s", outs[0], outs[1], outs[2])
	}
}

func TestRunCommitFile(t *testing.T) {
	var got []Checkpoint
	res, err := testRun(context.Background(), Unit{Module: module(t, "probe"), Args: []string{"commitfile"}}, func(c Checkpoint) error {
		got = append(got, c)
		return nil
	})
	if err != nil || string(res.Out["done"]) != "yes" {
		t.Fatalf("Run: %v, out %q\n%s", err, res.Out, res.Stderr)
	}
	if len(got) != 3 {
		t.Fatalf("%d checkpoints, want 3", len(got))
	}
	for i, c := range got {
		if c.Seq != i+1 || c.Progress != float64(i+1)/4 || len(c.Files) != 1 || string(c.Files["n"]) != itoa(i+1) {
			t.Fatalf("checkpoint %d: %+v", i, c)
		}
	}
}

// TestRunCommitRefused: a commit the host cannot take stops the unit, by
// either commit path.
func TestRunCommitRefused(t *testing.T) {
	errFull := errors.New("store full")
	for _, u := range []Unit{
		{Module: module(t, "probe"), Args: []string{"commitfile"}},
		stepperUnit(t, "1", 3, 1),
	} {
		res, err := testRun(context.Background(), u, func(c Checkpoint) error { return errFull })
		if !errors.Is(err, errFull) || len(res.Out) != 0 {
			t.Fatalf("Run %v: %v, out %q; want the callback's error and no output", u.Args, err, res.Out)
		}
	}
}

func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Whenever the cancel lands (compiling or running), Run reports it.
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := testRun(ctx, Unit{Module: module(t, "probe"), Args: []string{"loop"}}, nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
}
