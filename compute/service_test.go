package compute

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/wasm"
)

// inProc runs units with wasm.Run in this process: the protocol and the
// scheduler are what these tests are about (integration/ runs real workers).
type inProc struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    wasm.Result
	err    error
}

func (p *inProc) Suspend() error { return nil }
func (p *inProc) Resume() error  { return nil }
func (p *inProc) Kill() error    { p.cancel(); return nil }
func (p *inProc) Wait() (wasm.Result, error) {
	<-p.done
	return p.res, p.err
}

// wasmCache is shared by every unit of the package's tests: each module is
// compiled once.
var wasmCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peerdrive-compute-test-")
	if err != nil {
		panic(err)
	}
	wasmCache = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startInProc(ctx context.Context, u wasm.Unit, onCkpt func(wasm.Checkpoint) error) (Proc, error) {
	u.CacheDir = wasmCache
	ctx, cancel := context.WithCancel(ctx)
	p := &inProc{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.res, p.err = wasm.Run(ctx, u, onCkpt)
	}()
	return p, nil
}

var (
	stepperOnce sync.Once
	stepperWasm []byte
	stepperErr  error
)

func buildStepper(t *testing.T) []byte {
	stepperOnce.Do(func() {
		dir, _ := os.MkdirTemp("", "stepper")
		out := filepath.Join(dir, "stepper.wasm")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = "../wasm/testdata/stepper"
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			stepperErr = fmt.Errorf("build stepper: %v\n%s", err, b)
			return
		}
		stepperWasm, stepperErr = os.ReadFile(out)
		os.RemoveAll(dir)
		if stepperErr == nil { // compile it once, into the shared cache
			_, stepperErr = wasm.Run(context.Background(), wasm.Unit{Module: stepperWasm, CacheDir: wasmCache, Args: []string{"-steps", "0"}}, nil)
		}
	})
	if stepperErr != nil {
		t.Fatal(stepperErr)
	}
	return stepperWasm
}

// stepperWant is the stepper's result hash, computed natively.
func stepperWant(unit, steps, iters int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("unit-%d", unit)))
	for range steps * iters {
		sum = sha256.Sum256(sum[:])
	}
	return fmt.Sprintf("%x", sum)
}

var quiet = slog.New(slog.DiscardHandler)

type testNode struct {
	h   host.Host
	svc *Service
	db  *store.DB
}

func startService(t *testing.T, slots int, mod func(*Config)) *testNode {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Host: h, DB: db, Slots: slots, Start: startInProc, Heartbeat: 300 * time.Millisecond, LeaseTTL: 3 * time.Second, Log: quiet}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{h: h, svc: svc, db: db}
	t.Cleanup(func() { n.stop() })
	return n
}

func (n *testNode) stop() {
	if n.svc != nil {
		n.svc.Close()
		n.h.Close()
		n.db.Close()
		n.svc = nil
	}
}

func connect(t *testing.T, a *testNode, others ...*testNode) {
	t.Helper()
	for _, b := range others {
		if err := a.h.Connect(context.Background(), peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "identify", func() bool {
		for _, b := range others {
			if ps, _ := a.h.Peerstore().SupportsProtocols(b.h.ID(), Protocol); len(ps) == 0 {
				return false
			}
		}
		return true
	})
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitJob(t *testing.T, svc *Service, id string, d time.Duration) JobStatus {
	t.Helper()
	var st JobStatus
	defer func() {
		if t.Failed() {
			svc.mu.Lock()
			for _, u := range svc.jobs[id].Units {
				for _, r := range u.Runs {
					t.Logf("unit %d: %s %s from %d ckpt %d progress %.2f %s %s", u.Index, shortPeer(r.Supplier), r.State, r.From, r.CkptSeq, r.Progress, r.Fail, r.Reason)
				}
			}
			svc.mu.Unlock()
		}
	}()
	waitFor(t, d, "job "+id+" to finish", func() bool {
		var err error
		st, err = svc.Status(id)
		if err != nil {
			t.Fatal(err)
		}
		return st.State == StateDone || st.State == StateFailed
	})
	return st
}

// TestJobSurvivesSupplierLoss: units run on two suppliers; one is stopped
// mid-run; its units resume elsewhere from their last checkpoint and every
// result is right.
func TestJobSurvivesSupplierLoss(t *testing.T) {
	module := buildStepper(t)
	req := startService(t, 0, nil)
	a := startService(t, 2, nil)
	b := startService(t, 2, nil)
	connect(t, req, a, b)
	const steps, iters = 12, 3000
	id, err := req.svc.Submit(context.Background(), module, nil, Spec{Units: 4, Replicas: 1, Deadline: time.Minute,
		Args: []string{"-steps", fmt.Sprint(steps), "-iters", fmt.Sprint(iters)}})
	if err != nil {
		t.Fatal(err)
	}
	// Stop a supplier once one of its units has checkpointed.
	var victim string
	waitFor(t, 90*time.Second, "a checkpoint", func() bool {
		req.svc.mu.Lock()
		defer req.svc.mu.Unlock()
		for _, u := range req.svc.jobs[id].Units {
			for _, r := range u.Runs {
				if r.State == runActive && r.CkptSeq >= 2 {
					victim = r.Supplier
					return true
				}
			}
		}
		return false
	})
	for _, n := range []*testNode{a, b} {
		if n.h.ID().String() == victim {
			n.stop()
		}
	}
	st := waitJob(t, req.svc, id, 120*time.Second)
	if st.State != StateDone {
		t.Fatalf("job %s: %+v", st.State, st.Units)
	}
	res, err := req.svc.Results(id)
	if err != nil {
		t.Fatal(err)
	}
	resumed := 0
	for i, r := range res {
		want := stepperWant(i, steps, iters)
		if !strings.Contains(string(r.Stdout), "result="+want) {
			t.Errorf("unit %d: stdout %q, want result=%s", i, r.Stdout, want)
		}
		if st.Units[i].Resumed > 0 {
			resumed++
			if !strings.Contains(string(r.Stdout), fmt.Sprintf("start=%d\n", st.Units[i].Resumed)) {
				t.Errorf("unit %d resumed from %d but says %q", i, st.Units[i].Resumed, r.Stdout)
			}
		}
	}
	if resumed == 0 {
		t.Error("no unit resumed from a checkpoint")
	}
}

// TestLiarOutvoted: with two replicas, a supplier that corrupts its results
// is outvoted by two honest ones and loses reliability.
func TestLiarOutvoted(t *testing.T) {
	module := buildStepper(t)
	req := startService(t, 0, nil)
	h1 := startService(t, 1, nil)
	h2 := startService(t, 1, nil)
	liar := startService(t, 1, func(c *Config) { c.lie = true })
	connect(t, req, h1, h2, liar)
	id, err := req.svc.Submit(context.Background(), module, nil, Spec{Units: 4, Replicas: 2, Deadline: time.Minute,
		Args: []string{"-steps", "2", "-iters", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	st := waitJob(t, req.svc, id, 60*time.Second)
	if st.State != StateDone {
		t.Fatalf("job %s: %+v", st.State, st.Units)
	}
	res, err := req.svc.Results(id)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if strings.Contains(string(r.Stdout), "lie") || !strings.Contains(string(r.Stdout), stepperWant(i, 2, 1000)) {
			t.Errorf("unit %d: %q", i, r.Stdout)
		}
	}
	req.svc.mu.Lock()
	defer req.svc.mu.Unlock()
	outvoted := 0
	for _, u := range req.svc.jobs[id].Units {
		for _, r := range u.Runs {
			if r.Outvoted {
				outvoted++
				if r.Supplier != liar.h.ID().String() {
					t.Errorf("honest supplier outvoted")
				}
			}
		}
	}
	if outvoted == 0 || req.svc.reliability(liar.h.ID().String()) >= 1 {
		t.Errorf("liar outvoted %d times, reliability %v", outvoted, req.svc.reliability(liar.h.ID().String()))
	}
}

// TestUnitFailures: a module that is not Wasm and one that reads
// /etc/passwd and fails end cleanly with their reason; the supplier keeps
// working.
func TestUnitFailures(t *testing.T) {
	module := buildStepper(t)
	req := startService(t, 0, nil)
	s := startService(t, 1, nil)
	connect(t, req, s)
	bad, err := req.svc.Submit(context.Background(), []byte("not wasm at all"), nil, Spec{Units: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := waitJob(t, req.svc, bad, 20*time.Second)
	if st.State != StateFailed || !strings.Contains(st.Units[0].Reason, "invalid module") {
		t.Errorf("bad module: %s %q", st.State, st.Units[0].Reason)
	}
	good, err := req.svc.Submit(context.Background(), module, nil, Spec{Units: 1, Args: []string{"-steps", "1", "-iters", "10"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitJob(t, req.svc, good, 20*time.Second); st.State != StateDone {
		t.Errorf("after a failure the supplier does not run units: %+v", st)
	}
}

// TestRequesterRestart: a job survives the requester's restart (the store
// keeps it) and completes.
func TestRequesterRestart(t *testing.T) {
	module := buildStepper(t)
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	svc, err := New(Config{Host: h, DB: db, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	id, err := svc.Submit(context.Background(), module, nil, Spec{Units: 2, Args: []string{"-steps", "1", "-iters", "10"}})
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()
	h.Close()
	db.Close()
	db, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h2, _ := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	defer h2.Close()
	svc2, err := New(Config{Host: h2, DB: db, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	req := &testNode{h: h2, svc: svc2, db: db}
	s := startService(t, 1, nil)
	connect(t, req, s)
	if st := waitJob(t, svc2, id, 30*time.Second); st.State != StateDone {
		t.Fatalf("after restart: %+v", st)
	}
	req.svc = nil // closed by the defers
}

// TestRequesterVanishes: a supplier whose requester is gone drops its units
// once the lease has run out, and its slot is free again.
func TestRequesterVanishes(t *testing.T) {
	module := buildStepper(t)
	req := startService(t, 0, nil)
	s := startService(t, 1, nil)
	connect(t, req, s)
	if _, err := req.svc.Submit(context.Background(), module, nil, Spec{Units: 1, Args: []string{"-steps", "1000", "-iters", "100000"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the unit to run", func() bool { return s.svc.Capacity().Free == 0 })
	req.stop()
	waitFor(t, 30*time.Second, "the supplier to drop the unit", func() bool { return s.svc.Capacity().Free == 1 })
}

// TestSupplierRefuses: outside its window, over its memory, or for a
// consumer over the credit allowance, a supplier takes nothing.
func TestSupplierRefuses(t *testing.T) {
	ws, _ := ParseWindows([]string{time.Now().Add(2*time.Hour).Format("15:04") + "-" + time.Now().Add(3*time.Hour).Format("15:04")})
	closed := startService(t, 1, func(c *Config) { c.Windows = ws })
	small := startService(t, 1, func(c *Config) { c.Memory = 1 << 20 })
	owed := startService(t, 1, func(c *Config) { c.Credit = owes{}; c.Allowance = time.Minute })
	m := &assignMsg{Lease: make([]byte, leaseLen), Job: make([]byte, jobIDLen), Key: make([]byte, 32), Memory: 64 << 20, Deadline: int64(time.Minute)}
	busy := startService(t, 1, nil)
	busy.svc.setBusy(true) // --compute-when-idle: the owner's load is high
	if !busy.svc.Capacity().Busy {
		t.Error("a suspended supplier does not say it is busy")
	}
	for name, n := range map[string]*testNode{"closed window": closed, "small memory": small, "credit": owed, "busy": busy} {
		if rep := n.svc.accept(peer.ID("someone"), m); rep.Status != statusRefused {
			t.Errorf("%s: status %d %q, want refused", name, rep.Status, rep.Message)
		}
	}
}

// owes is a ledger in which everyone owes us an hour of CPU.
type owes struct{ NoCredit }

func (owes) ComputeBalance(peer.ID) time.Duration { return time.Hour }

// TestWindowCloses: when its window closes, a supplier hands its unit back;
// the requester moves it to a supplier that is open and it resumes from its
// last checkpoint.
func TestWindowCloses(t *testing.T) {
	module := buildStepper(t)
	ws, err := ParseWindows([]string{"Mon 09:00-17:00"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.Local) // a Monday, open
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	req := startService(t, 0, nil)
	day := startService(t, 1, func(c *Config) { c.Windows, c.now = ws, clock })
	connect(t, req, day)
	id, err := req.svc.Submit(context.Background(), module, nil, Spec{Units: 1, Deadline: time.Minute,
		Args: []string{"-steps", "1000", "-iters", "3000"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a checkpoint on the day supplier", func() bool {
		st, _ := req.svc.Status(id)
		return st.Units[0].CkptSeq >= 2
	})
	mu.Lock()
	now = now.Add(6 * time.Hour) // 18:00: closed
	mu.Unlock()
	waitFor(t, 10*time.Second, "the unit handed back", func() bool {
		st, _ := req.svc.Status(id)
		return st.Units[0].Retries == 1 && day.svc.Capacity().Free == 1
	})
	night := startService(t, 1, nil)
	connect(t, req, night)
	waitFor(t, 30*time.Second, "the unit resumed on the open supplier", func() bool {
		st, _ := req.svc.Status(id)
		return st.Units[0].Resumed >= 2 && st.Units[0].Supplier == shortPeer(night.h.ID().String())
	})
	if err := req.svc.Cancel(id); err != nil {
		t.Fatal(err)
	}
}

// book records what a node books on its ledger.
type book struct {
	NoCredit
	mu           sync.Mutex
	given, taken map[peer.ID]time.Duration
}

func newBook() *book {
	return &book{given: map[peer.ID]time.Duration{}, taken: map[peer.ID]time.Duration{}}
}

func (b *book) ComputeGiven(p peer.ID, d time.Duration) { b.mu.Lock(); b.given[p] += d; b.mu.Unlock() }
func (b *book) ComputeTaken(p peer.ID, d time.Duration) { b.mu.Lock(); b.taken[p] += d; b.mu.Unlock() }

// TestCreditUrgency: both sides book the CPU a run took, times the job's
// urgency, once.
func TestCreditUrgency(t *testing.T) {
	module := buildStepper(t)
	rb, sb := newBook(), newBook()
	req := startService(t, 0, func(c *Config) { c.Credit = rb })
	s := startService(t, 1, func(c *Config) { c.Credit = sb })
	connect(t, req, s)
	id, err := req.svc.Submit(context.Background(), module, nil, Spec{Units: 2, Urgency: 3, Args: []string{"-steps", "2", "-iters", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitJob(t, req.svc, id, 30*time.Second); st.State != StateDone {
		t.Fatalf("job %s", st.State)
	}
	var cpu time.Duration
	req.svc.mu.Lock()
	for _, u := range req.svc.jobs[id].Units {
		for _, r := range u.Runs {
			cpu += time.Duration(r.CPU)
		}
	}
	req.svc.mu.Unlock()
	want := time.Duration(3 * float64(cpu))
	waitFor(t, 5*time.Second, "the supplier to book both units", func() bool {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		return sb.given[req.h.ID()] >= want
	})
	rb.mu.Lock()
	sb.mu.Lock()
	defer rb.mu.Unlock()
	defer sb.mu.Unlock()
	if cpu == 0 || rb.taken[s.h.ID()] != want || sb.given[req.h.ID()] != want {
		t.Errorf("cpu %v: requester booked %v taken, supplier %v given; want %v", cpu, rb.taken[s.h.ID()], sb.given[req.h.ID()], want)
	}
}
