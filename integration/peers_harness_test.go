package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// Helpers for the tests of the peer network: storage nodes (`peerdrive serve`) as separate
// processes, the mount's status and sync, mixed trees of random files, and read-back that
// tells EIO from wrong bytes.

const (
	serveReadyLine = "peerdrive: listening on" // printed by serve and mount once listening
	nodeLife       = 8 * time.Minute           // a storage node still running then is SIGKILLed
	statusTimeout  = 15 * time.Second          // bound on one `peerdrive status --json`
)

// Proc is a background process of a test other than a mount: a storage node or a helper.
// A cleanup stops it (SIGTERM, then SIGKILL) and shows its output if the test failed.
type Proc struct {
	Name     string
	cmd      *exec.Cmd
	log      *logTail
	done     chan struct{}
	killed   bool // SIGKILLed by the test
	watchdog *time.Timer
}

// launchProc starts argv with env added to the test's environment and waits until it prints
// a line containing ready on stderr.
func launchProc(t testing.TB, name, ready string, argv, env []string) (*Proc, error) {
	t.Helper()
	p := &Proc{Name: name, log: newLogTail(ready), done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stderr = logStream{p.log, stderrStream}
	p.cmd.Stdout = logStream{p.log, stdoutStream}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	p.watchdog = time.AfterFunc(nodeLife, func() {
		_, _ = logStream{p.log, stderrStream}.Write([]byte(fmt.Sprintf("[harness] still running after %v: SIGKILL\n", nodeLife)))
		_ = p.cmd.Process.Kill()
	})
	t.Cleanup(func() { p.cleanup(t) })
	select {
	case <-p.log.ready:
		return p, nil
	case <-p.done:
		return p, fmt.Errorf("%s exited (%v) before it printed %q; output:\n%s", name, p.cmd.ProcessState, ready, p.log)
	case <-time.After(readyTimeout):
		return p, fmt.Errorf("%s did not print %q within %v; output:\n%s", name, ready, readyTimeout, p.log)
	}
}

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to die.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	p.killed = true
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		t.Fatalf("%s survived SIGKILL for %v", p.Name, exitTimeout)
	}
}

// StopSignal sends sig and requires the process to exit 0 within exitTimeout.
func (p *Proc) StopSignal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.Name, err)
	}
	p.WaitExit0(t, sig.String())
}

// WaitExit0 requires the process to exit 0 within exitTimeout after what the test did.
func (p *Proc) WaitExit0(t testing.TB, after string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		t.Fatalf("%s still running %v after %s; output:\n%s", p.Name, exitTimeout, after, p.log)
	}
	if st := p.cmd.ProcessState; !st.Exited() || st.ExitCode() != 0 {
		t.Fatalf("%s: %v after %s, want exit status 0; output:\n%s", p.Name, st, after, p.log)
	}
}

func (p *Proc) cleanup(t testing.TB) {
	p.watchdog.Stop()
	if p.Alive() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if t.Failed() {
		t.Logf("%s output:\n%s", p.Name, p.log)
	}
}

// Storage nodes.

// ServeNode is a running `peerdrive serve`.
type ServeNode struct {
	*Proc
	Home  string
	ID    string   // from `peerdrive id`
	Addrs []string // as printed, full multiaddrs with /p2p/ID
	Addr  string   // the address on the listen IP, to bootstrap from
}

// serveOpts says how a storage node runs.
type serveOpts struct {
	Listen     string   // multiaddr; default loopbackAddr
	Bootstrap  []string // full multiaddrs
	Contribute string   // default 512MiB
	Wrap       []string // a command that execs the rest, e.g. ip netns exec NS
	Extra      []string // more serve flags (gc_test.go: --shard-lease)
}

// launchServe initializes home (unless it has a node) and starts `peerdrive serve` on it,
// returning once it has printed its listen addresses; the address to bootstrap from is the
// one on the listen IP, checked against `peerdrive id` and HOME/addrs.
func launchServe(t testing.TB, name, home string, o serveOpts) (*ServeNode, error) {
	if o.Listen == "" {
		o.Listen = loopbackAddr
	}
	if o.Contribute == "" {
		o.Contribute = "512MiB"
	}
	if _, err := os.Stat(home); errors.Is(err, fs.ErrNotExist) {
		if out, err := tryRun(cmdOpts{Timeout: time.Minute}, pdBin, "--home", home, "init"); err != nil {
			return nil, fmt.Errorf("peerdrive --home %s init: %v\n%s", home, err, tail(out, 20))
		}
	}
	stdout, stderr, err := runOut(30*time.Second, pdBin, "--home", home, "id")
	if err != nil {
		return nil, fmt.Errorf("peerdrive --home %s id: %v\n%s", home, err, tail(stderr, 20))
	}
	id := strings.TrimSpace(stdout)
	if id == "" || strings.ContainsAny(id, " \n") {
		return nil, fmt.Errorf("peerdrive --home %s id printed %q, want one peer ID on one line", home, stdout)
	}
	argv := append(slices.Clone(o.Wrap), pdBin, "--home", home, "serve", "--listen", o.Listen, "--contribute", o.Contribute)
	for _, b := range o.Bootstrap {
		argv = append(argv, "--bootstrap", b)
	}
	argv = append(argv, o.Extra...)
	p, err := launchProc(t, name, serveReadyLine, argv, nil)
	if err != nil {
		return nil, err
	}
	n := &ServeNode{Proc: p, Home: home, ID: id}
	// The first address line is out; give the others a moment, then take HOME/addrs, which
	// must hold the same set.
	prefix := listenPrefix(o.Listen)
	var fromFile []string
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n.Addrs = printedAddrs(p.log)
		if b, err := os.ReadFile(filepath.Join(home, "addrs")); err == nil {
			fromFile = strings.Fields(string(b))
		}
		if (len(fromFile) > 0 && len(fromFile) >= len(n.Addrs)) || time.Now().After(end) {
			break
		}
	}
	if len(fromFile) == 0 {
		return n, fmt.Errorf("%s: %s/addrs holds no addresses (DESIGN.md §2: serve writes its listen addresses there); printed: %q",
			name, home, n.Addrs)
	}
	for _, a := range n.Addrs {
		if !slices.Contains(fromFile, a) {
			return n, fmt.Errorf("%s: printed %q but %s/addrs holds %q", name, a, home, fromFile)
		}
	}
	for _, a := range fromFile {
		if !strings.HasSuffix(a, "/p2p/"+id) {
			return n, fmt.Errorf("%s: address %q does not end in /p2p/%s (the ID `peerdrive id` printed)", name, a, id)
		}
		if strings.HasPrefix(a, prefix) && n.Addr == "" {
			n.Addr = a
		}
	}
	if n.Addr == "" {
		return n, fmt.Errorf("%s: no address starting %s among %q", name, prefix, fromFile)
	}
	return n, nil
}

// listenPrefix is the part of a listen multiaddr that its resolved addresses share:
// /ip4/127.0.0.1/tcp/0 resolves to /ip4/127.0.0.1/tcp/PORT.
func listenPrefix(listen string) string {
	if strings.HasSuffix(listen, "/tcp/0") {
		return strings.TrimSuffix(listen, "0")
	}
	return listen + "/"
}

// printedAddrs returns the addresses of the readiness lines so far.
func printedAddrs(l *logTail) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var as []string
	for _, line := range l.lines {
		if i := strings.Index(line, serveReadyLine); i >= 0 && !strings.HasPrefix(line, "[stdout]") {
			if f := strings.Fields(line[i+len(serveReadyLine):]); len(f) > 0 {
				as = append(as, f[0])
			}
		}
	}
	return as
}

// startServes starts n storage nodes with homes under dir: the first, then the others in
// parallel, each bootstrapping from the first.
func startServes(t testing.TB, dir string, n int, o serveOpts) []*ServeNode {
	t.Helper()
	first, err := launchServe(t, "serve s1", filepath.Join(dir, "s1"), o)
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*ServeNode, n)
	nodes[0] = first
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oi := o
			oi.Bootstrap = append(slices.Clone(o.Bootstrap), first.Addr)
			nodes[i], errs[i] = launchServe(t, fmt.Sprintf("serve s%d", i+1), filepath.Join(dir, fmt.Sprintf("s%d", i+1)), oi)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// bootstrapFlags are --bootstrap flags for every node.
func bootstrapFlags(nodes []*ServeNode) []string {
	var f []string
	for _, n := range nodes {
		f = append(f, "--bootstrap", n.Addr)
	}
	return f
}

// Status and sync.

// nodeStatus is the part of `peerdrive status --json` the tests read (DESIGN.md §2).
type nodeStatus struct {
	PeerID                string `json:"peer_id"`
	Peers                 int    `json:"peers"`
	ContributedBytes      int64  `json:"contributed_bytes"`
	QuotaBytes            int64  `json:"quota_bytes"`
	UsedBytes             int64  `json:"used_bytes"`
	PendingUploadBytes    int64  `json:"pending_upload_bytes"`
	Chunks                int64  `json:"chunks"`
	UnderReplicatedChunks int64  `json:"under_replicated_chunks"`
	LostChunks            int64  `json:"lost_chunks"`
	Snapshots             int    `json:"snapshots"`
	DataShards            int    `json:"data_shards"`
	ParityShards          int    `json:"parity_shards"`
	PeerLossTolerated     int    `json:"peer_loss_tolerated"`
	CachedBytes           int64  `json:"cached_bytes"`
	HeldForPeersBytes     int64  `json:"held_for_peers_bytes"`
	StoragePeers          []struct {
		Peer          string  `json:"peer"`
		LatencyMS     float64 `json:"latency_ms"`
		UsedBytes     int64   `json:"used_bytes"`
		CapacityBytes int64   `json:"capacity_bytes"`
		Healthy       bool    `json:"healthy"`
	} `json:"storage_peers"`
	raw string
}

// statusFields must all be in the object; the last four are this additions.
var statusFields = []string{"peer_id", "peers", "contributed_bytes", "quota_bytes", "used_bytes",
	"pending_upload_bytes", "chunks", "under_replicated_chunks", "lost_chunks", "snapshots",
	"data_shards", "parity_shards", "peer_loss_tolerated", "cached_bytes", "held_for_peers_bytes"}

// getStatus runs `peerdrive --home home status --json` and decodes its one object.
func getStatus(home string) (nodeStatus, error) {
	var st nodeStatus
	ctx := fmt.Sprintf("peerdrive --home %s status --json", home)
	out, stderr, err := runOut(statusTimeout, pdBin, "--home", home, "status", "--json")
	if err != nil {
		return st, fmt.Errorf("%s: %v\n%s", ctx, err, tail(stderr, 20))
	}
	obj := strings.TrimSpace(out)
	var m map[string]any
	if err := json.Unmarshal([]byte(obj), &m); err != nil {
		return st, fmt.Errorf("%s: want one JSON object on stdout: %v:\n%s", ctx, err, tail(out, 20))
	}
	var missing []string
	for _, f := range statusFields {
		if _, ok := m[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return st, fmt.Errorf("%s: fields missing: %s in:\n%s", ctx, strings.Join(missing, ", "), obj)
	}
	if err := json.Unmarshal([]byte(obj), &st); err != nil {
		return st, fmt.Errorf("%s: %v:\n%s", ctx, err, obj)
	}
	st.raw = strings.Join(strings.Fields(obj), " ")
	return st, nil
}

// runOut runs a command under a timeout and returns its stdout and stderr apart, with an
// error saying how it ended unless it exited 0.
func runOut(timeout time.Duration, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return stdout.String(), stderr.String(), err
}

// mustStatus is getStatus failing the test on error.
func mustStatus(t testing.TB, home string) nodeStatus {
	t.Helper()
	st, err := getStatus(home)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStatus polls the status of home until cond holds, failing the test after timeout.
func waitStatus(t testing.TB, home, what string, timeout time.Duration, cond func(nodeStatus) bool) nodeStatus {
	t.Helper()
	st, ok := pollStatus(t, home, what, timeout, cond)
	if !ok {
		t.FailNow()
	}
	return st
}

// pollStatus polls the status of home until cond holds and reports whether it did, marking
// the test failed (but going on) after timeout.
func pollStatus(t testing.TB, home, what string, timeout time.Duration, cond func(nodeStatus) bool) (nodeStatus, bool) {
	t.Helper()
	start := time.Now()
	for {
		st, err := getStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			t.Logf("%s after %v", what, time.Since(start).Round(100*time.Millisecond))
			return st, true
		}
		if time.Since(start) > timeout {
			t.Errorf("waited %v for %s; last status: %s", timeout, what, st.raw)
			return st, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// syncDrive runs `peerdrive --home home sync --timeout d` under a slightly longer bound and
// fails the test, with the status and the mount's output, unless it exits 0.
func syncDrive(t testing.TB, d *Daemon, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	res := runSplit(t, timeout+30*time.Second, pdBin, "--home", d.Home, "sync", "--timeout", timeout.String())
	took := time.Since(start)
	if res.timedOut || !res.state.Success() {
		st, err := getStatus(d.Home)
		t.Fatalf("peerdrive --home %s sync --timeout %v: %v after %v (killed by the harness: %v), want exit 0\nsync stderr:\n%s\nstatus: %s %v\nmount output:\n%s",
			d.Home, timeout, res.state, took.Round(time.Millisecond), res.timedOut, tail(res.stderr, 15), st.raw, err, d.log)
	}
	t.Logf("sync took %v", took.Round(time.Millisecond))
	// The status may lag behind by a health check: allow it a few seconds to agree.
	pollStatus(t, d.Home, "status agrees with sync: pending_upload_bytes, under_replicated_chunks, lost_chunks 0",
		10*time.Second, func(st nodeStatus) bool {
			return st.PendingUploadBytes == 0 && st.UnderReplicatedChunks == 0 && st.LostChunks == 0
		})
	return took
}

// dropCaches writes back and drops the kernel's page, dentry and inode caches, so that reads
// through a FUSE mount reach the daemon.
func dropCaches(t testing.TB) {
	t.Helper()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// Trees of random files.

// fileSum is what a file should hold.
type fileSum struct {
	Size int64
	Sum  string // sha256, hex
}

// mixedSizes returns the sizes of a mix of files totalling about total bytes: many small
// files (empty, 1 byte, a page, and up to a few hundred KiB), some of 1–10 MB, and one of
// 30% of the total.
func mixedSizes(total int64) []int64 {
	r := rand.New(rand.NewPCG(uint64(total), 3))
	big := total * 3 / 10
	sizes := []int64{big}
	small := []int64{0, 1, 4096, 100, 4095, 4097, 10_000, 65_536, 200_000, 1 << 10}
	nSmall := int(max(60, total*3/(1<<20))) // 600 in 200 MiB
	var sum int64 = big
	for i := range nSmall {
		s := small[i%len(small)]
		sizes = append(sizes, s)
		sum += s
	}
	for sum < total {
		s := min(1<<20+r.Int64N(9<<20), total-sum)
		sizes = append(sizes, s)
		sum += s
	}
	return sizes
}

// writeMixedTree writes files of random content with the given sizes under root, spread over
// nested directories, and returns their contents' sums by path relative to root.
func writeMixedTree(t testing.TB, root string, sizes []int64) map[string]fileSum {
	t.Helper()
	start := time.Now()
	want := map[string]fileSum{}
	var total int64
	for i, size := range sizes {
		rel := filepath.Join(fmt.Sprintf("d%02d", i%7), fmt.Sprintf("sub%d", i%3), fmt.Sprintf("f%04d-%d.bin", i, size))
		if i == 0 {
			rel = "big.bin"
		}
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := randBytes(int(size))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatalf("write %s: %v", rel, err)
		}
		want[rel] = fileSum{Size: size, Sum: hashBytes(data)}
		total += size
	}
	el := time.Since(start)
	t.Logf("wrote %d files, %.1f MB, in %v (%.1f MB/s)", len(sizes), float64(total)/1e6, el.Round(time.Millisecond),
		float64(total)/1e6/el.Seconds())
	return want
}

// readBackResult sorts the files of a read-back.
type readBackResult struct {
	OK      int
	EIO     []string // read failed with EIO
	Wrong   []string // read succeeded with other bytes: never acceptable
	Failed  []string // any other error, or a hang
	Missing []string // in want, not in the tree
	Extra   []string // in the tree, not in want
	Took    time.Duration
}

// readBack walks root and reads every regular file with a few readers in parallel, each file
// bounded by perFile, comparing it with want.
func readBack(t testing.TB, root string, want map[string]fileSum, perFile time.Duration) readBackResult {
	t.Helper()
	start := time.Now()
	var res readBackResult
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.Type().IsRegular() {
			rel, _ := filepath.Rel(root, path)
			seen[rel] = true
			if _, ok := want[rel]; !ok {
				res.Extra = append(res.Extra, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	var rels []string
	for rel := range want {
		if seen[rel] {
			rels = append(rels, rel)
		} else {
			res.Missing = append(res.Missing, rel)
		}
	}
	slices.Sort(rels)
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rel := range work {
				w := want[rel]
				sum, n, err := hashFileTimeout(filepath.Join(root, rel), perFile)
				mu.Lock()
				switch {
				case err == nil && sum == w.Sum && n == w.Size:
					res.OK++
				case err == nil:
					res.Wrong = append(res.Wrong, fmt.Sprintf("%s: read %d bytes with sha256 %s, want %d bytes with %s", rel, n, sum[:16], w.Size, w.Sum[:16]))
				case errors.Is(err, syscall.EIO):
					res.EIO = append(res.EIO, rel)
				default:
					res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", rel, err))
				}
				mu.Unlock()
			}
		}()
	}
	for _, rel := range rels {
		work <- rel
	}
	close(work)
	wg.Wait()
	slices.Sort(res.EIO)
	slices.Sort(res.Wrong)
	slices.Sort(res.Failed)
	res.Took = time.Since(start)
	return res
}

var errHung = errors.New("read still blocked")

// hashFileTimeout hashes path, giving up after d; a read blocked in the file system is left
// behind (it ends when the daemon is killed at cleanup).
func hashFileTimeout(path string, d time.Duration) (string, int64, error) {
	type result struct {
		sum string
		n   int64
		err error
	}
	c := make(chan result, 1)
	go func() {
		f, err := os.Open(path)
		if err != nil {
			c <- result{err: err}
			return
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		c <- result{hex.EncodeToString(h.Sum(nil)), n, err}
	}()
	select {
	case r := <-c:
		return r.sum, r.n, r.err
	case <-time.After(d):
		return "", 0, fmt.Errorf("%w after %v", errHung, d)
	}
}

// requireAllBack fails the test unless every file of want read back identical.
func requireAllBack(t testing.TB, what string, res readBackResult, want map[string]fileSum) {
	t.Helper()
	t.Logf("%s: read %d files back in %v: %d identical, %d EIO, %d wrong, %d other errors",
		what, len(want), res.Took.Round(time.Millisecond), res.OK, len(res.EIO), len(res.Wrong), len(res.Failed))
	if res.OK == len(want) && len(res.Extra) == 0 {
		return
	}
	t.Errorf("%s: want all %d files back identical; got %d identical\nwrong bytes: %s\nEIO: %s\nother errors: %s\nmissing: %s\nunexpected: %s",
		what, len(want), res.OK, list(res.Wrong), list(res.EIO), list(res.Failed), list(res.Missing), list(res.Extra))
}

// list shows up to 10 items of l.
func list(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	more := ""
	if len(l) > 10 {
		more = fmt.Sprintf(" [... %d more]", len(l)-10)
		l = l[:10]
	}
	return strconv.Itoa(len(l)) + ": " + strings.Join(l, "; ") + more
}

// envMB reads a size in MB from the environment variable name, or returns def.
func envMB(t testing.TB, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number of MB", name, v)
	}
	return n
}

// humanBytes shows n in MiB with one decimal.
func humanBytes(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
