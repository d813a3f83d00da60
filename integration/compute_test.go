package integration

// Shared computing (issue 6, docs/compute.md) with real processes: three
// `peerdrive serve --compute-slots 1` suppliers and a storage-only consumer;
// a job of 20 checkpointing units with 2 replicas survives a supplier's
// SIGKILL (its units resume from their checkpoints), a supplier built to
// lie is outvoted, and units over their memory or deadline, or reading
// /etc/passwd, end as they should.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// computeStatus is `peerdrive compute status --json`.
type computeStatus struct {
	State string `json:"state"`
	Units []struct {
		Index    int    `json:"index"`
		State    string `json:"state"`
		Supplier string `json:"supplier"`
		CkptSeq  int    `json:"checkpoint_seq"`
		Retries  int    `json:"retries"`
		Outvoted int    `json:"outvoted"`
		Resumed  int    `json:"resumed_from"`
		Reason   string `json:"reason"`
	} `json:"units"`
}

func jobStatus(t testing.TB, home, job string) computeStatus {
	t.Helper()
	out, stderr, err := runOut(statusTimeout, pdBin, "--home", home, "compute", "status", job, "--json")
	if err != nil {
		t.Fatalf("compute status: %v\n%s", err, stderr)
	}
	var st computeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("compute status --json: %v\n%s", err, out)
	}
	return st
}

func waitJobState(t testing.TB, home, job string, d time.Duration) computeStatus {
	t.Helper()
	var st computeStatus
	for end := time.Now().Add(d); ; time.Sleep(300 * time.Millisecond) {
		st = jobStatus(t, home, job)
		if st.State == "done" || st.State == "failed" {
			return st
		}
		if time.Now().After(end) {
			out, _, _ := runOut(statusTimeout, pdBin, "--home", home, "compute", "status", job)
			t.Fatalf("job %s still %s after %v:\n%s", job, st.State, d, out)
		}
	}
}

func submit(t testing.TB, home string, args ...string) string {
	t.Helper()
	out, stderr, err := runOut(time.Minute, pdBin, append([]string{"--home", home, "compute", "submit"}, args...)...)
	if err != nil {
		t.Fatalf("compute submit %v: %v\n%s", args, err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// buildWasm builds the Go program in dir for wasip1 into out.
func buildWasm(dir, out string) error {
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", dir, err, b)
	}
	return nil
}

// launchSupplier starts bin serve on home with one compute slot.
func launchSupplier(t testing.TB, bin, name, home string, bootstrap ...string) *ServeNode {
	t.Helper()
	if out, err := tryRun(cmdOpts{Timeout: time.Minute}, bin, "--home", home, "init"); err != nil {
		t.Fatalf("init %s: %v\n%s", home, err, out)
	}
	id, _, err := runOut(30*time.Second, bin, "--home", home, "id")
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{bin, "--home", home, "serve", "--listen", loopbackAddr, "--contribute", "128MiB", "--compute-slots", "1"}
	for _, b := range bootstrap {
		argv = append(argv, "--bootstrap", b)
	}
	p, err := launchProc(t, name, serveReadyLine, argv, nil)
	if err != nil {
		t.Fatal(err)
	}
	as := printedAddrs(p.log)
	if len(as) == 0 {
		t.Fatalf("%s printed no address", name)
	}
	return &ServeNode{Proc: p, Home: home, ID: strings.TrimSpace(id), Addr: as[0]}
}

// waitComputePeers waits until the consumer sees n suppliers' capacity.
func waitComputePeers(t testing.TB, home string, n int) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, err := getStatus(home)
		if err == nil && st.Peers >= n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("consumer sees %d peers, want %d (%v)", st.Peers, n, err)
		}
	}
}

func TestComputeJob(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	counter := filepath.Join(dir, "counter.wasm")
	native := filepath.Join(dir, "counter")
	probe := filepath.Join(dir, "probe.wasm")
	liarBin := filepath.Join(dir, "peerdrive-liar")
	var builds sync.WaitGroup
	var liarErr error
	builds.Add(1)
	go func() { // the supplier that lies is needed only later
		defer builds.Done()
		out, err := tryRun(cmdOpts{Dir: "..", Timeout: 5 * time.Minute}, "go", "build", "-tags", "liar", "-o", liarBin, "./cmd/peerdrive")
		if err != nil {
			liarErr = fmt.Errorf("go build -tags liar: %v\n%s", err, out)
		}
	}()
	defer builds.Wait()
	if err := buildWasm("testdata/compute/counter", counter); err != nil {
		t.Fatal(err)
	}
	mustRun(t, cmdOpts{Dir: "testdata/compute/counter"}, "go", "build", "-o", native, ".")
	if err := buildWasm("../wasm/testdata/probe", probe); err != nil {
		t.Fatal(err)
	}

	var sup []*ServeNode
	for i := range 3 {
		sup = append(sup, launchSupplier(t, pdBin, fmt.Sprintf("supplier s%d", i+1), filepath.Join(dir, fmt.Sprintf("s%d", i+1))))
	}
	consumer, err := launchServe(t, "consumer", filepath.Join(dir, "consumer"), serveOpts{Contribute: "128MiB", Bootstrap: []string{sup[0].Addr, sup[1].Addr, sup[2].Addr}})
	if err != nil {
		t.Fatal(err)
	}
	C := consumer.Home
	waitComputePeers(t, C, 3)

	// 20 units × 2 replicas; SIGKILL a supplier once one of its units has
	// checkpointed.
	const steps, iters = 6, 30000
	job := submit(t, C, counter, "--units", "20", "--replicas", "2", "--deadline", "2m", "--", fmt.Sprint(steps), fmt.Sprint(iters))
	victim := sup[1]
	short := victim.ID[len(victim.ID)-8:]
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st := jobStatus(t, C, job)
		hit := false
		for _, u := range st.Units {
			hit = hit || (u.Supplier == short && u.CkptSeq >= 2 && u.State == "running")
		}
		if hit {
			break
		}
		if st.State == "done" || time.Now().After(end) {
			t.Fatalf("no unit of the victim checkpointed (job %s)", st.State)
		}
	}
	victim.Kill(t)
	t.Logf("supplier s2 SIGKILLed at %v", time.Since(start).Round(time.Millisecond))
	st := waitJobState(t, C, job, 120*time.Second)
	if st.State != "done" {
		t.Fatalf("job %s: %+v", st.State, st.Units)
	}
	res := filepath.Join(dir, "res")
	mustRun(t, cmdOpts{}, pdBin, "--home", C, "compute", "results", job, res)
	resumed := 0
	for i, u := range st.Units {
		root := newDir(t, dir, fmt.Sprintf("native%d", i))
		for _, d := range []string{"in", "out", "ckpt"} {
			os.Mkdir(filepath.Join(root, d), 0o755)
		}
		want := mustRun(t, cmdOpts{Env: []string{fmt.Sprintf("PEERDRIVE_UNIT=%d", i), "COUNTER_ROOT=" + root}}, native, fmt.Sprint(steps), fmt.Sprint(iters))
		want = strings.Split(want, "\n")[0] + "\n"
		got, _ := os.ReadFile(filepath.Join(res, fmt.Sprint(i), "stdout"))
		out, _ := os.ReadFile(filepath.Join(res, fmt.Sprint(i), "result"))
		if string(got) != want || string(out) != want {
			t.Errorf("unit %d: stdout %q, /out/result %q, native %q", i, got, out, want)
		}
		if u.Resumed > 0 {
			resumed++
			stderr, _ := os.ReadFile(filepath.Join(res, fmt.Sprint(i), "stderr"))
			if !strings.Contains(string(stderr), fmt.Sprintf("start=%d\n", u.Resumed)) {
				t.Errorf("unit %d resumed from checkpoint %d but its run says %q", i, u.Resumed, stderr)
			}
		}
	}
	if resumed == 0 {
		t.Errorf("no unit resumed from a checkpoint after the SIGKILL: %+v", st.Units)
	}
	t.Logf("20 units × 2 replicas done at %v, %d resumed from a checkpoint", time.Since(start).Round(time.Millisecond), resumed)

	// A supplier that lies joins; a small job with 2 replicas outvotes it.
	// Units that misbehave run at the same time.
	builds.Wait()
	if liarErr != nil {
		t.Fatal(liarErr)
	}
	launchSupplier(t, liarBin, "supplier liar", filepath.Join(dir, "liar"), consumer.Addr)
	waitComputePeers(t, C, 3)
	lied := submit(t, C, counter, "--units", "4", "--replicas", "2", "--", "2", "1000")
	passwd := submit(t, C, probe, "--", "passwd")
	hog := submit(t, C, probe, "--memory", "64MiB", "--", "hog")
	loop := submit(t, C, probe, "--deadline", "3s", "--", "loop")

	st = waitJobState(t, C, lied, 60*time.Second)
	outvoted := 0
	for _, u := range st.Units {
		outvoted += u.Outvoted
	}
	if st.State != "done" || outvoted == 0 {
		t.Errorf("job with a liar: %s, %d results outvoted: %+v", st.State, outvoted, st.Units)
	}
	res2 := filepath.Join(dir, "res2")
	mustRun(t, cmdOpts{}, pdBin, "--home", C, "compute", "results", lied, res2)
	for i := range 4 {
		root := newDir(t, dir, fmt.Sprintf("native-l%d", i))
		for _, d := range []string{"in", "out", "ckpt"} {
			os.Mkdir(filepath.Join(root, d), 0o755)
		}
		want := strings.Split(mustRun(t, cmdOpts{Env: []string{fmt.Sprintf("PEERDRIVE_UNIT=%d", i), "COUNTER_ROOT=" + root}}, native, "2", "1000"), "\n")[0] + "\n"
		if got, _ := os.ReadFile(filepath.Join(res2, fmt.Sprint(i), "stdout")); string(got) != want {
			t.Errorf("liar job unit %d: %q, want %q", i, got, want)
		}
	}

	for _, c := range []struct{ job, what, reason string }{{hog, "over memory", "memory"}, {loop, "over deadline", "deadline"}} {
		st := waitJobState(t, C, c.job, 60*time.Second)
		if st.State != "failed" || !strings.Contains(st.Units[0].Reason, c.reason) {
			t.Errorf("unit %s: %s, reason %q; want failed with %q", c.what, st.State, st.Units[0].Reason, c.reason)
		}
	}
	if st := waitJobState(t, C, passwd, 60*time.Second); st.State != "done" {
		t.Fatalf("passwd probe: %s %+v", st.State, st.Units)
	}
	res3 := filepath.Join(dir, "res3")
	mustRun(t, cmdOpts{}, pdBin, "--home", C, "compute", "results", passwd, res3)
	out, _ := os.ReadFile(filepath.Join(res3, "0", "stdout"))
	if !strings.Contains(string(out), "passwd: open /etc/passwd: ") || strings.Contains(string(out), "root:") || !strings.Contains(string(out), "escape: ") {
		t.Errorf("a unit reading /etc/passwd printed %q", out)
	}
	t.Logf("passwd probe says %q", out)
	for _, s := range []*ServeNode{sup[0], sup[2]} {
		if !s.Alive() {
			t.Errorf("%s died", s.Name)
		}
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// BenchmarkComputeScheduler measures units per second through the
// scheduler: b.N units of near-zero work (one SHA-256) in one job, one
// replica, on 1 or 3 suppliers with one slot each. Each unit is a worker
// process start plus a cached module instantiation, the assignment, the
// result and its vote. Run with -benchtime=40x.
func BenchmarkComputeScheduler(b *testing.B) {
	dir := b.TempDir()
	counter := filepath.Join(dir, "counter.wasm")
	if err := buildWasm("testdata/compute/counter", counter); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("suppliers=%d", n), func(b *testing.B) {
			var addrs []string
			for i := range n {
				s := launchSupplier(b, pdBin, fmt.Sprintf("supplier %d", i), filepath.Join(b.TempDir(), "s"))
				addrs = append(addrs, s.Addr)
			}
			c, err := launchServe(b, "consumer", filepath.Join(b.TempDir(), "c"), serveOpts{Contribute: "128MiB", Bootstrap: addrs})
			if err != nil {
				b.Fatal(err)
			}
			waitComputePeers(b, c.Home, n)
			// Warm the suppliers' compilation caches.
			waitJobState(b, c.Home, submit(b, c.Home, counter, "--units", fmt.Sprint(n), "--", "1", "1"), time.Minute)
			b.ResetTimer()
			start := time.Now()
			job := submit(b, c.Home, counter, "--units", fmt.Sprint(b.N), "--", "1", "1")
			st := waitJobState(b, c.Home, job, 10*time.Minute)
			el := time.Since(start)
			b.StopTimer()
			if st.State != "done" {
				b.Fatalf("job %s", st.State)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "units/s")
		})
	}
}
