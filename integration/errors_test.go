package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// errorTimeout bounds how long a refused command may take to say so.
const errorTimeout = 30 * time.Second

// TestMountErrors runs commands that must be refused. Each must exit non-zero within 30 s
// with exactly one non-empty line on stderr, mount nothing, and leave both the mount that is
// running and the data of the home it was pointed at as they were.
func TestMountErrors(t *testing.T) {
	scratch := t.TempDir()
	homeA := initHome(t, filepath.Join(scratch, "home-a"))
	mntA := newDir(t, scratch, "mnt-a")
	homeB := initHome(t, filepath.Join(scratch, "home-b"))
	homeC := initHome(t, filepath.Join(scratch, "home-c"))

	// homeB gets data, then rests unmounted; the dir cases point at it.
	mntB := newDir(t, scratch, "mnt-b")
	d := startMount(t, homeB, mntB)
	writeSample(t, mntB)
	wantB := manifest(t, mntB, manifestOpts{})
	d.Stop(t)

	a := startMount(t, homeA, mntA)
	writeSample(t, mntA)
	wantA := manifest(t, mntA, manifestOpts{})
	keyA := readFile(t, filepath.Join(homeA, "recovery-key.txt"))

	aFile := filepath.Join(scratch, "a-file")
	if err := os.WriteFile(aFile, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nonEmpty := newDir(t, scratch, "non-empty")
	if err := os.WriteFile(filepath.Join(nonEmpty, "resident"), []byte("here first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	second := newDir(t, scratch, "second")
	wrongKey := newDir(t, scratch, "wrong-key")

	cases := []struct {
		name    string
		args    []string
		dir     string        // a mount point that must stay unmounted, if any
		prepare func() func() // changes the home for the case and returns the undo
		want    string        // a phrase the contract puts in the message, if any
	}{
		{name: "missing dir", args: mountArgs(homeB, filepath.Join(scratch, "missing"))},
		{name: "dir is a file", args: mountArgs(homeB, aFile)},
		{name: "dir not empty", args: mountArgs(homeB, nonEmpty), dir: nonEmpty},
		{name: "home already mounted", args: mountArgs(homeA, second), dir: second},
		{name: "wrong recovery key", args: mountArgs(homeB, wrongKey), dir: wrongKey, want: "does not open",
			prepare: func() func() {
				path := filepath.Join(homeB, "recovery-key.txt")
				orig := readFile(t, path)
				if err := os.WriteFile(path, readFile(t, filepath.Join(homeC, "recovery-key.txt")), 0o600); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := os.WriteFile(path, orig, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}},
		{name: "init over a home", args: []string{"--home", homeA, "init"}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			if tc.prepare != nil {
				t.Cleanup(tc.prepare())
			}
			if tc.dir != "" {
				registerMountDir(tc.dir)
			}
			res := runSplit(t, errorTimeout, pdBin, tc.args...)
			if tc.dir != "" && isFuseMounted(tc.dir) {
				lazyUnmount(t, tc.dir)
				t.Errorf("peerdrive %s mounted %s", strings.Join(tc.args, " "), tc.dir)
			}
			requireOneLineError(t, res, tc.args)
			if tc.want != "" && !strings.Contains(res.stderr, tc.want) {
				t.Errorf("peerdrive %s: stderr %q does not say %q", strings.Join(tc.args, " "), res.stderr, tc.want)
			}
			if !a.Alive() {
				t.Fatalf("the running mount of %s died; output:\n%s", homeA, a.log)
			}
			requireSameTree(t, "the running mount", wantA, manifest(t, mntA, manifestOpts{}))
		})
	}
	if got := readFile(t, filepath.Join(homeA, "recovery-key.txt")); !bytes.Equal(got, keyA) {
		t.Errorf("the recovery key of a mounted home changed")
	}
	if b := readFile(t, filepath.Join(nonEmpty, "resident")); string(b) != "here first\n" {
		t.Errorf("the non-empty mount point's file changed: %q", b)
	}

	a.Stop(t)
	a = startMount(t, homeA, mntA)
	requireSameTree(t, "home A remounted", wantA, manifest(t, mntA, manifestOpts{}))
	a.Stop(t)
	d = startMount(t, homeB, mntB)
	requireSameTree(t, "home B remounted", wantB, manifest(t, mntB, manifestOpts{}))
	d.Stop(t)
}

// TestInit checks what init leaves in a new home: an age identity in recovery-key.txt, mode
// 0600. Refusing a second init is one of the TestMountErrors cases.
func TestInit(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	res := runSplit(t, errorTimeout, pdBin, "--home", home, "init")
	if res.timedOut || !res.state.Success() {
		t.Fatalf("peerdrive --home %s init: %v (timed out: %v); stderr:\n%s", home, res.state, res.timedOut, res.stderr)
	}
	key := filepath.Join(home, "recovery-key.txt")
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", key, fi.Mode().Perm())
	}
	if b := readFile(t, key); !bytes.Contains(b, []byte("AGE-SECRET-KEY-1")) {
		t.Errorf("%s holds no age identity (AGE-SECRET-KEY-1...)", key)
	}
	if !strings.Contains(res.stdout+res.stderr, "recovery-key.txt") {
		t.Errorf("init does not say where the recovery key is; stdout:\n%s\nstderr:\n%s", res.stdout, res.stderr)
	}
}

// TestStaleMount SIGKILLs a daemon, leaving its dead FUSE mount on the directory, and
// requires the next mount of that directory to clean it up and show the fsync'd data.
func TestStaleMount(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	mnt := t.TempDir()
	d := startMount(t, home, mnt)
	writeSample(t, mnt)
	want := manifest(t, mnt, manifestOpts{NoDirMtime: true})
	d.Kill(t)
	if !isFuseMounted(mnt) {
		t.Fatalf("no stale mount on %s after SIGKILL: the test needs one", mnt)
	}
	if _, err := os.Stat(mnt); !errors.Is(err, syscall.ENOTCONN) {
		t.Logf("stat of the stale mount point: %v (expected ENOTCONN)", err)
	}
	d = startMount(t, home, mnt)
	requireSameTree(t, "after the stale mount", want, manifest(t, mnt, manifestOpts{NoDirMtime: true}))
	d.Stop(t) // fails if the stale mount is still under the new one
}

// TestSignals stops the daemon with SIGINT and with SIGTERM: each must unmount, flush what
// was written without fsync, and exit 0.
func TestSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			mnt := t.TempDir()
			d := startMount(t, home, mnt)
			data := randBytes(3<<20 + 17)
			// Written and closed, never fsync'd: the flush on exit must keep it.
			if err := os.WriteFile(filepath.Join(mnt, "unsynced"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(mnt, "dir"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mnt, "dir", "small"), []byte("small\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			want := manifest(t, mnt, manifestOpts{})
			d.StopSignal(t, sig)
			d = startMount(t, home, mnt)
			requireSameTree(t, "after "+sig.String(), want, manifest(t, mnt, manifestOpts{}))
			d.Stop(t)
		})
	}
}

// writeSample writes and fsyncs a few files, a directory and a symlink.
func writeSample(t *testing.T, root string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "sub", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		size int
	}{{"empty", 0}, {"one", 1}, {"sub/page", 4096}, {"sub/deeper/two-mib", 2 << 20}} {
		if err := writeSynced(filepath.Join(root, f.path), randBytes(f.size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("sub/page", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"sub/deeper", "sub", "."} {
		if err := syncDir(filepath.Join(root, dir)); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mountArgs are the arguments of `peerdrive --home home mount dir` on loopback.
func mountArgs(home, dir string) []string {
	return []string{"--home", home, "mount", dir, "--listen", loopbackAddr}
}

// cmdResult is how a command ended, with its output kept apart.
type cmdResult struct {
	stdout, stderr string
	state          *os.ProcessState
	timedOut       bool
	elapsed        time.Duration
}

// runSplit runs a command under a timeout, keeping stdout and stderr apart.
func runSplit(t testing.TB, timeout time.Duration, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String(), state: cmd.ProcessState,
		timedOut: ctx.Err() != nil, elapsed: time.Since(start)}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !res.timedOut {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return res
}

// requireOneLineError checks the contract for a refused command: a non-zero exit, in time,
// and one non-empty line on stderr.
func requireOneLineError(t *testing.T, res cmdResult, args []string) {
	t.Helper()
	cmd := "peerdrive " + strings.Join(args, " ")
	switch {
	case res.timedOut:
		t.Fatalf("%s: still running after %v, want a refusal; stderr:\n%s", cmd, errorTimeout, tail(res.stderr, 20))
	case res.state.Success():
		t.Fatalf("%s: exit 0, want a refusal; stderr:\n%s", cmd, tail(res.stderr, 20))
	}
	lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
	if len(lines) != 1 || strings.TrimSpace(lines[0]) == "" {
		t.Errorf("%s: %v with %d lines on stderr, want one line with the reason:\n%s",
			cmd, res.state, len(lines), tail(res.stderr, 20))
	}
	t.Logf("%s: %v in %v: %s", cmd, res.state, res.elapsed.Round(time.Millisecond), strings.TrimSpace(res.stderr))
}
