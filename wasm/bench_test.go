package wasm

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSandboxVsNative runs the example unit natively and in the
// sandbox (in this process, and in a worker process) and reports the
// ratios of wall-clock and of CPU times. -steps 10 -iters 100000: 1M
// SHA-256. In-process runs are compiled with termination checks (see run),
// workers without.
func BenchmarkSandboxVsNative(b *testing.B) {
	u := stepperUnit(b, "1", 10, 100000)
	native := build(b, "stepper", true)
	root := b.TempDir()
	for _, d := range []string{"in", "out", "ckpt"} {
		os.Mkdir(root+"/"+d, 0o755)
	}
	os.WriteFile(root+"/in/seed", u.Inputs["seed"], 0o644)
	u.CacheDir = cacheDir()
	if _, err := Run(context.Background(), u, nil); err != nil { // load the compiled module
		b.Fatal(err)
	}
	var tNative, tRun, tWorker, cNative, cRun, cWorker time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		cmd := exec.Command(native, u.Args...)
		cmd.Env = []string{"STEPPER_ROOT=" + root, "PEERDRIVE_UNIT=1"}
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		cNative += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		t1 := time.Now()
		res, err := Run(context.Background(), u, nil)
		if err != nil {
			b.Fatal(err)
		}
		cRun += res.CPU
		t2 := time.Now()
		p, err := Start(context.Background(), workerExe(b), nil, u, nil)
		if err != nil {
			b.Fatal(err)
		}
		res, err = p.Wait()
		if err != nil {
			b.Fatal(err)
		}
		cWorker += res.CPU
		t3 := time.Now()
		tNative += t1.Sub(t0)
		tRun += t2.Sub(t1)
		tWorker += t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(tNative.Seconds()/n, "native-s/op")
	b.ReportMetric(tRun.Seconds()/n, "sandbox-s/op")
	b.ReportMetric(tWorker.Seconds()/n, "worker-s/op")
	b.ReportMetric(tRun.Seconds()/tNative.Seconds(), "sandbox/native")
	b.ReportMetric(tWorker.Seconds()/tNative.Seconds(), "worker/native")
	b.ReportMetric(cRun.Seconds()/cNative.Seconds(), "sandbox/native-cpu")
	b.ReportMetric(cWorker.Seconds()/cNative.Seconds(), "worker/native-cpu")
}

// BenchmarkCheckpoint measures the cost of committing checkpoints of
// several sizes, in this process and through a worker's pipe: 20 steps of
// almost no work, each writing PAD bytes to /ckpt, less the same run
// without padding, per MB checkpointed.
func BenchmarkCheckpoint(b *testing.B) {
	const steps = 20
	run := func(pad int, worker bool) time.Duration {
		u := Unit{Module: module(b, "stepper"), Args: []string{"-steps", strconv.Itoa(steps), "-iters", "1", "-pad", strconv.Itoa(pad)}, CacheDir: cacheDir()}
		t0 := time.Now()
		var err error
		if worker {
			var p *Process
			if p, err = Start(context.Background(), workerExe(b), nil, u, nil); err == nil {
				_, err = p.Wait()
			}
		} else {
			_, err = Run(context.Background(), u, nil)
		}
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for _, mode := range []struct {
		name   string
		worker bool
	}{{"run", false}, {"worker", true}} {
		for _, mb := range []int{1, 8} {
			b.Run(mode.name+"/"+strconv.Itoa(mb)+"MB", func(b *testing.B) {
				run(0, mode.worker) // warm caches
				var base, padded time.Duration
				for i := 0; i < b.N; i++ {
					base += run(0, mode.worker)
					padded += run(mb<<20, mode.worker)
				}
				perMB := (padded - base).Seconds() / float64(b.N) / float64(steps*mb)
				b.ReportMetric(perMB*1000, "ms/MB")
			})
		}
	}
}
