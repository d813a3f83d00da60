package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 60 * time.Second // from start to the readiness line
	exitTimeout  = 30 * time.Second // from umount or a signal to the daemon's exit
	daemonLife   = 5 * time.Minute  // a daemon still running then is SIGKILLed, failing the test's I/O
	cmdTimeout   = 2 * time.Minute  // default bound on any external command
	loopbackAddr = "/ip4/127.0.0.1/tcp/0"
)

// pdBin is the peerdrive binary under test, built once by TestMain.
var pdBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if code, ok := runHelper(); ok { // the test binary re-executed as a helper process
		return code
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration: run as root: the tests mount FUSE and tmpfs file systems")
		return 1
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v: load the fuse module\n", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "peerdrive-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if pdBin, err = buildBinary(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	code := m.Run()
	if left := leftoverMounts(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "integration: FAIL: mounts left behind: %s\n", strings.Join(left, " "))
		for _, dir := range left {
			_, _ = tryRun(cmdOpts{Timeout: 10 * time.Second}, "umount", "-l", dir)
		}
		code = 1
	}
	return code
}

// buildBinary builds ./cmd/peerdrive of the enclosing module into dir, or returns
// $PEERDRIVE_BIN when set.
func buildBinary(dir string) (string, error) {
	if bin := os.Getenv("PEERDRIVE_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("PEERDRIVE_BIN: %w", err)
		}
		return abs, nil
	}
	out, err := tryRun(cmdOpts{Timeout: time.Minute}, "go", "env", "GOMOD")
	gomod := strings.TrimSpace(out)
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: %v %q: run from inside the module", err, out)
	}
	bin := filepath.Join(dir, "peerdrive")
	out, err = tryRun(cmdOpts{Dir: filepath.Dir(gomod), Timeout: 10 * time.Minute},
		"go", "build", "-o", bin, "./cmd/peerdrive")
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/peerdrive: %v\n%s", err, out)
	}
	return bin, nil
}

// cmdOpts says where and how long an external command runs.
type cmdOpts struct {
	Dir     string
	Env     []string // added to the test's environment
	Timeout time.Duration
	Stdin   io.Reader
}

// tryRun runs name with args under a timeout and returns its combined output.
func tryRun(o cmdOpts, name string, args ...string) (string, error) {
	if o.Timeout == 0 {
		o.Timeout = cmdTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = o.Dir
	cmd.Stdin = o.Stdin
	if o.Env != nil {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", o.Timeout, err)
	}
	return string(out), err
}

// mustRun is tryRun that fails the test, showing the command and its output, on error.
func mustRun(t testing.TB, o cmdOpts, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(o, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out, 60))
	}
	return out
}

// requireTool fails the test when a client program it drives is not installed.
func requireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("install %s: the integration tests drive it (%v)", n, err)
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines omitted]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// Daemon is a running `peerdrive mount`.
type Daemon struct {
	Home, Dir string
	cmd       *exec.Cmd
	log       *logTail
	done      chan struct{} // closed once the process has exited and been waited for
	killed    bool          // SIGKILLed by the test: a stale mount is expected
	watchdog  *time.Timer   // bounds the daemon's life, so a hung FUSE call cannot hang the test
}

// startMount runs `peerdrive --home home mount dir --listen <loopback> extra...` and returns
// once it has printed `peerdrive: mounted dir` and the mount is in /proc/self/mountinfo.
// A cleanup unmounts and kills whatever is left and fails the test on a leftover mount.
func startMount(t testing.TB, home, dir string, extra ...string) *Daemon {
	t.Helper()
	d, err := launchMount(t, home, dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// launchMount is startMount returning an error instead of failing the test.
func launchMount(t testing.TB, home, dir string, extra ...string) (*Daemon, error) {
	t.Helper()
	args := append([]string{"--home", home, "mount", dir, "--listen", loopbackAddr}, extra...)
	return launchDaemon(t, home, dir, append([]string{pdBin}, args...), nil)
}

// launchDaemon runs argv, a command that mounts dir and prints `peerdrive: mounted dir`
// (`peerdrive mount`, `peerdrive demo`, or either under a wrapper such as nsenter that execs
// it), with env added to the test's environment, and waits for it as launchMount does.
func launchDaemon(t testing.TB, home, dir string, argv, env []string) (*Daemon, error) {
	t.Helper()
	d := &Daemon{Home: home, Dir: dir, log: newLogTail("peerdrive: mounted " + dir), done: make(chan struct{})}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	if env != nil {
		d.cmd.Env = append(os.Environ(), env...)
	}
	d.cmd.Stderr = logStream{d.log, stderrStream}
	d.cmd.Stdout = logStream{d.log, stdoutStream}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.cmd.WaitDelay = 5 * time.Second
	registerMountDir(dir)
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start peerdrive: %w", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	d.watchdog = time.AfterFunc(daemonLife, func() {
		_, _ = logStream{d.log, stderrStream}.Write([]byte(fmt.Sprintf(
			"[harness] still running after %v: SIGKILL, to end the test's blocked file system calls\n", daemonLife)))
		_ = d.cmd.Process.Kill()
	})
	t.Cleanup(func() { d.cleanup(t) })

	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var mountedAt time.Time // when mountinfo first showed our mount, if before the line
	for {
		select {
		case <-d.log.ready:
			// The line promises a live mount: allow only for mountinfo to catch up.
			for end := time.Now().Add(5 * time.Second); !liveFuseMount(dir); {
				if time.Now().After(end) {
					return d, fmt.Errorf("peerdrive printed %q but no live FUSE mount is on %s; output:\n%s",
						"peerdrive: mounted "+dir, dir, d.log)
				}
				time.Sleep(20 * time.Millisecond)
			}
			return d, nil
		case <-d.done:
			return d, fmt.Errorf("peerdrive mount %s exited (%v) before it was ready; output:\n%s",
				dir, d.cmd.ProcessState, d.log)
		case <-deadline.C:
			return d, fmt.Errorf("peerdrive mount %s: not ready within %v; output:\n%s", dir, readyTimeout, d.log)
		case <-tick.C:
			if !liveFuseMount(dir) {
				continue
			}
			if mountedAt.IsZero() {
				mountedAt = time.Now()
			} else if time.Since(mountedAt) > 5*time.Second {
				t.Errorf("peerdrive mounted %s but did not print %q within 5 s of it; output:\n%s",
					dir, "peerdrive: mounted "+dir, d.log)
				return d, nil
			}
		}
	}
}

// Alive reports whether the daemon process is still running.
func (d *Daemon) Alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Stop unmounts with umount(8) and requires the daemon to exit 0 with the mount gone.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if out, err := tryRun(cmdOpts{Timeout: exitTimeout}, "umount", d.Dir); err != nil {
		t.Fatalf("umount %s: %v\n%s\npeerdrive output:\n%s", d.Dir, err, out, d.log)
	}
	d.waitExit(t, "umount")
}

// StopSignal sends sig and requires the daemon to unmount and exit 0.
func (d *Daemon) StopSignal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal peerdrive: %v", err)
	}
	d.waitExit(t, sig.String())
}

func (d *Daemon) waitExit(t testing.TB, after string) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(exitTimeout):
		t.Fatalf("peerdrive on %s still running %v after %s; output:\n%s", d.Dir, exitTimeout, after, d.log)
	}
	if st := d.cmd.ProcessState; !st.Exited() || st.ExitCode() != 0 {
		t.Fatalf("peerdrive on %s: %v after %s, want exit status 0; output:\n%s", d.Dir, st, after, d.log)
	}
	if isFuseMounted(d.Dir) {
		t.Fatalf("%s is still mounted after peerdrive exited (%s)", d.Dir, after)
	}
}

// Kill sends SIGKILL and waits for the process to die; the FUSE mount is left stale.
func (d *Daemon) Kill(t testing.TB) {
	t.Helper()
	d.killed = true
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(exitTimeout):
		t.Fatalf("peerdrive on %s survived SIGKILL for %v", d.Dir, exitTimeout)
	}
}

func (d *Daemon) cleanup(t testing.TB) {
	d.watchdog.Stop()
	if d.Alive() {
		// The test ended without stopping it (a failure path): unmount, then make sure.
		_, _ = tryRun(cmdOpts{Timeout: 10 * time.Second}, "umount", d.Dir)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	for i := 0; i < 4 && isFuseMounted(d.Dir); i++ {
		if !d.killed && !t.Failed() {
			t.Errorf("FUSE mount left behind on %s", d.Dir)
		}
		_, _ = tryRun(cmdOpts{Timeout: 10 * time.Second}, "umount", "-l", d.Dir)
	}
	if t.Failed() {
		t.Logf("peerdrive --home %s mount %s output:\n%s", d.Home, d.Dir, d.log)
	}
}

// lazyUnmount detaches a (stale) mount on dir, as an operator would after a crash.
func lazyUnmount(t testing.TB, dir string) {
	t.Helper()
	for i := 0; i < 4 && isFuseMounted(dir); i++ {
		mustRun(t, cmdOpts{Timeout: 10 * time.Second}, "umount", "-l", dir)
	}
}

// logTail keeps the last lines a daemon printed and signals the readiness line, which
// counts only on stderr. Lines from stdout are kept too, marked as such.
type logTail struct {
	mu      sync.Mutex
	want    string
	ready   chan struct{}
	isReady bool
	partial [2][]byte // an unfinished line of each stream
	lines   []string
	dropped int
}

const (
	logTailLines = 80
	stderrStream = 0
	stdoutStream = 1
)

func newLogTail(want string) *logTail { return &logTail{want: want, ready: make(chan struct{})} }

// logStream is one output stream of the daemon, feeding its logTail.
type logStream struct {
	l      *logTail
	stream int
}

func (s logStream) Write(p []byte) (int, error) {
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := append(l.partial[s.stream], p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		l.add(string(buf[:i]), s.stream)
		buf = buf[i+1:]
	}
	if len(buf) > 64<<10 {
		l.add(string(buf), s.stream)
		buf = nil
	}
	l.partial[s.stream] = buf
	return len(p), nil
}

func (l *logTail) add(line string, stream int) {
	if stream == stdoutStream {
		line = "[stdout] " + line
	} else if i := strings.Index(line, l.want); i >= 0 && !l.isReady {
		rest := line[i+len(l.want):]
		if rest == "" || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r' {
			l.isReady = true
			close(l.ready)
		}
	}
	l.lines = append(l.lines, line)
	if len(l.lines) > 2*logTailLines {
		l.dropped += len(l.lines) - logTailLines
		l.lines = slices.Clone(l.lines[len(l.lines)-logTailLines:])
	}
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	dropped := l.dropped
	if len(lines) > logTailLines {
		dropped += len(lines) - logTailLines
		lines = lines[len(lines)-logTailLines:]
	}
	var b strings.Builder
	if dropped > 0 {
		fmt.Fprintf(&b, "[... %d lines omitted]\n", dropped)
	}
	for _, s := range lines {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	for i, p := range l.partial {
		if len(p) > 0 {
			fmt.Fprintf(&b, "%s%s [no newline]\n", map[int]string{stdoutStream: "[stdout] "}[i], p)
		}
	}
	if b.Len() == 0 {
		return "(no output)"
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Mount table.

var (
	mountDirsMu sync.Mutex
	mountDirs   = map[string]bool{} // every mount point the tests used, checked at exit
)

func registerMountDir(dir string) {
	mountDirsMu.Lock()
	defer mountDirsMu.Unlock()
	mountDirs[canonPath(dir)] = true
}

func leftoverMounts() []string {
	mountDirsMu.Lock()
	defer mountDirsMu.Unlock()
	var left []string
	for dir := range mountDirs {
		if len(mountsAt(dir, "")) > 0 {
			left = append(left, dir)
		}
	}
	slices.Sort(left)
	return left
}

type mountEntry struct {
	ID     int
	Point  string
	FSType string
}

func readMountinfo() []mountEntry {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		panic(err) // Linux only
	}
	var ms []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		id, _ := strconv.Atoi(f[0])
		ms = append(ms, mountEntry{ID: id, Point: unescapeMountinfo(f[4]), FSType: f[sep+1]})
	}
	return ms
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// canonPath resolves symlinks in dir's parent without touching dir itself, which may be a
// dead FUSE mount.
func canonPath(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return filepath.Clean(dir)
	}
	if parent, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(parent, filepath.Base(abs))
	}
	return abs
}

// mountsAt lists the mounts on dir whose type starts with fsPrefix.
func mountsAt(dir, fsPrefix string) []mountEntry {
	dir = canonPath(dir)
	var ms []mountEntry
	for _, m := range readMountinfo() {
		if m.Point == dir && strings.HasPrefix(m.FSType, fsPrefix) {
			ms = append(ms, m)
		}
	}
	return ms
}

func isFuseMounted(dir string) bool { return len(mountsAt(dir, "fuse")) > 0 }

// liveFuseMount reports whether the top mount on dir is FUSE and answers a stat, which a
// stale mount left by a dead daemon does not (ENOTCONN). Mount IDs cannot tell the two apart:
// the kernel reuses the ID of a detached stale mount for the next one.
func liveFuseMount(dir string) bool {
	if !isFuseMounted(dir) {
		return false
	}
	res := make(chan error, 1)
	go func() {
		var st syscall.Stat_t
		res <- syscall.Stat(dir, &st)
	}()
	select {
	case err := <-res:
		return err == nil
	case <-time.After(2 * time.Second): // a daemon that does not answer is not ready
		return false
	}
}

// Homes.

// initHome runs `peerdrive --home home init` and returns home.
func initHome(t testing.TB, home string) string {
	t.Helper()
	mustRun(t, cmdOpts{Timeout: time.Minute}, pdBin, "--home", home, "init")
	return home
}

// Trees.

// manifestOpts leaves out what a particular copy is not expected to preserve.
type manifestOpts struct {
	NoMtime     bool // of anything
	NoDirMtime  bool
	NoLinkMtime bool
}

// manifest lists every entry under root, one sorted line each: path, type and permission
// bits, size, mtime in nanoseconds, and the sha256 of a file's contents or a symlink's target.
func manifest(t testing.TB, root string, o manifestOpts) []string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		mtime := strconv.FormatInt(fi.ModTime().UnixNano(), 10)
		var what string
		switch m := fi.Mode(); {
		case m.IsRegular():
			sum, err := hashFile(path)
			if err != nil {
				return err
			}
			what = sum
		case m&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			what = "-> " + target
			if o.NoLinkMtime {
				mtime = "-"
			}
		case m.IsDir():
			if o.NoDirMtime {
				mtime = "-"
			}
		}
		if o.NoMtime {
			mtime = "-"
		}
		size := fi.Size()
		if !fi.Mode().IsRegular() {
			size = 0 // directory and symlink sizes are the file system's business
		}
		lines = append(lines, fmt.Sprintf("%q %v %d %s %s", rel, fi.Mode(), size, mtime, what))
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return lines
}

// requireSameTree reports the differing lines unless the manifests are equal.
func requireSameTree(t testing.TB, what string, want, got []string) {
	t.Helper()
	if d := diffLines(want, got); d != "" {
		t.Errorf("%s: trees differ (- want, + got):\n%s", what, d)
	}
}

func diffLines(want, got []string) string {
	inWant := map[string]bool{}
	for _, l := range want {
		inWant[l] = true
	}
	inGot := map[string]bool{}
	for _, l := range got {
		inGot[l] = true
	}
	var out []string
	for _, l := range want {
		if !inGot[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range got {
		if !inWant[l] {
			out = append(out, "+ "+l)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Compare(a[2:], b[2:]) })
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("[... %d more]", len(out)-40))
	}
	return strings.Join(out, "\n")
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Data.

// randBytes returns n random bytes from a fast seeded generator.
func randBytes(n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// writeSynced creates path exclusively, writes data, fsyncs and closes it, returning the
// first error.
func writeSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir fsyncs a directory, which is how POSIX makes a new name in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) {
		return nil // not supported for directories by this file system; nothing to do
	}
	return err
}

// newDir makes the directory parent/name with mode 0755, failing the test on error.
func newDir(t testing.TB, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
