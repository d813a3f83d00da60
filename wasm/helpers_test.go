package wasm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasm-test-")
	if err != nil {
		panic(err)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildDir  string
	buildMu   sync.Mutex
	buildDone = map[string]string{}
)

// build builds testdata/NAME once per test binary, for wasip1 (native
// false) or for this machine, and returns the path of the result.
func build(tb testing.TB, name string, native bool) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := name
	if native {
		key += ".native"
	} else {
		key += ".wasm"
	}
	if p, ok := buildDone[key]; ok {
		return p
	}
	out := filepath.Join(buildDir, key)
	src, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", out, ".")
	if name == "worker" {
		// wazero's compiled-code cache is keyed by wazero's version, which
		// a test binary does not know ("dev"): give the worker the one this
		// binary has, so that the two share the cache the worker fills.
		cmd = exec.Command("go", "build", "-ldflags", "-X github.com/tetratelabs/wazero/internal/version.version="+wazeroVersion(), "-o", out, ".")
	}
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if name != "worker" {
		cmd.Env = append(cmd.Env, "GOWORK=off") // its own module
	}
	if !native {
		cmd.Env = append(cmd.Env, "GOOS=wasip1", "GOARCH=wasm")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", key, err, b)
	}
	buildDone[key] = out
	return out
}

// wazeroVersion is the version of wazero as wazero computes it in this
// binary (internal/version.GetWazeroVersion).
func wazeroVersion() string {
	v := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if strings.Contains(dep.Path, "github.com/tetratelabs/wazero") {
				v = dep.Version
			}
		}
		if v == "" || v == "(devel)" {
			v = info.Main.Version
		}
	}
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	return v
}

// module returns the wasm bytes of testdata/NAME, compiled into the
// tests' compilation cache.
func module(tb testing.TB, name string) []byte {
	tb.Helper()
	path := build(tb, name, false)
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	warm(tb, path, b)
	return b
}

var (
	warmMu   sync.Mutex
	warmDone = map[string]bool{}
)

// warm compiles module b (at path) into the tests' compilation cache
// directory, for workers and for Run, in worker processes. The worker is
// built without the race detector: it compiles a Go module in seconds
// where the race-instrumented test binary takes a minute; tests then load
// the compiled code from the cache.
func warm(tb testing.TB, path string, b []byte) {
	tb.Helper()
	warmMu.Lock()
	defer warmMu.Unlock()
	key := string(b)
	if warmDone[key] {
		return
	}
	p, err := Start(context.Background(), workerExe(tb), nil, Unit{Module: b, Args: []string{"-steps", "0"}, CacheDir: cacheDir()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		tb.Fatalf("warming the compilation cache: %v", err)
	}
	if out, err := exec.Command(workerExe(tb), "warm", path, cacheDir()).CombinedOutput(); err != nil {
		tb.Fatalf("warming the compilation cache: %v\n%s", err, out)
	}
	warmDone[key] = true
}

// workerExe is the worker binary: testdata/worker, WorkerMain alone.
func workerExe(tb testing.TB) string { return build(tb, "worker", true) }

// cacheDir is the tests' compilation cache directory.
func cacheDir() string { return filepath.Join(buildDir, "cache") }

// testRun is Run with the tests' compilation cache.
func testRun(ctx context.Context, u Unit, onCheckpoint func(Checkpoint) error) (Result, error) {
	u.CacheDir = cacheDir()
	return Run(ctx, u, onCheckpoint)
}
