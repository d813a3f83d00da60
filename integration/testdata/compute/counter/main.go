// Command counter is the compute tests' unit: iterated SHA-256 in steps,
// a checkpoint after each step (the sandbox's convention, docs/compute.md),
// the result on stdout and in /out/result, and the step it started from on
// stderr, which replicas do not compare: a run resumed from a checkpoint
// agrees with a fresh one. Outside the sandbox (native build) the root of
// in/, out/, ckpt/ is $COUNTER_ROOT.
//
// Usage: counter STEPS ITERS
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) != 3 {
		fail("usage: counter STEPS ITERS")
	}
	steps, err1 := strconv.Atoi(os.Args[1])
	iters, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil {
		fail("usage: counter STEPS ITERS")
	}
	root := os.Getenv("COUNTER_ROOT")
	if root == "" {
		root = "/"
	}
	at := func(p string) string { return filepath.Join(root, p) }
	sum := sha256.Sum256([]byte("unit-" + os.Getenv("PEERDRIVE_UNIT")))
	start := 0
	if b, err := os.ReadFile(at("ckpt/state")); err == nil {
		f := strings.Fields(string(b))
		h, err := hex.DecodeString(f[len(f)-1])
		if len(f) != 2 || err != nil || len(h) != len(sum) {
			fail("bad state %q", b)
		}
		if start, err = strconv.Atoi(f[0]); err != nil {
			fail("bad state %q", b)
		}
		copy(sum[:], h)
	}
	for step := start; step < steps; step++ {
		for range iters {
			sum = sha256.Sum256(sum[:])
		}
		if err := os.WriteFile(at("ckpt/state"), fmt.Appendf(nil, "%d %x\n", step+1, sum), 0o644); err != nil {
			fail("write state: %v", err)
		}
		checkpoint(float64(step+1) / float64(steps))
	}
	result := fmt.Sprintf("result=%x\n", sum)
	if err := os.WriteFile(at("out/result"), []byte(result), 0o644); err != nil {
		fail("write result: %v", err)
	}
	fmt.Print(result)
	fmt.Fprintf(os.Stderr, "start=%d\n", start)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "counter: "+format+"\n", args...)
	os.Exit(1)
}
