// Command stepper is the example compute unit: it does measurable work in
// steps (iterated SHA-256) and commits a checkpoint after each step, so a
// run killed and restarted with the last checkpoint continues from there.
//
// Usage: stepper [-steps N] [-iters K] [-pad BYTES]
//
//   - -steps N: number of steps (default 10).
//   - -iters K: SHA-256 iterations per step (default 100000).
//   - -pad BYTES: extra bytes written to /ckpt/pad at every checkpoint, to
//     measure checkpoint cost (default 0).
//
// The seed is "unit-" + $PEERDRIVE_UNIT, followed by /in/seed if present.
// State: /ckpt/state holds "STEP HEX\n", the next step and the running hash.
// Output: stdout and /out/result hold "start=S\nresult=HEX\n", where S is
// the step this run started from (0 for a fresh start). Outside the sandbox
// (a native build) the root of in/, out/, ckpt/ is $STEPPER_ROOT.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func main() {
	steps := flag.Int("steps", 10, "number of steps")
	iters := flag.Int("iters", 100000, "SHA-256 iterations per step")
	pad := flag.Int("pad", 0, "extra checkpoint bytes")
	flag.Parse()
	root := os.Getenv("STEPPER_ROOT")
	if root == "" {
		root = "/"
	}
	at := func(p string) string { return filepath.Join(root, p) }

	seed := []byte("unit-" + os.Getenv("PEERDRIVE_UNIT"))
	if b, err := os.ReadFile(at("in/seed")); err == nil {
		seed = append(seed, b...)
	}
	sum := sha256.Sum256(seed)
	start := 0
	if b, err := os.ReadFile(at("ckpt/state")); err == nil {
		f := strings.Fields(string(b))
		if len(f) != 2 {
			fail("bad state %q", b)
		}
		n, err := strconv.Atoi(f[0])
		h, err2 := hex.DecodeString(f[1])
		if err != nil || err2 != nil || len(h) != len(sum) {
			fail("bad state %q", b)
		}
		start = n
		copy(sum[:], h)
	}
	padding := make([]byte, *pad)
	for step := start; step < *steps; step++ {
		for i := 0; i < *iters; i++ {
			sum = sha256.Sum256(sum[:])
		}
		state := fmt.Sprintf("%d %x\n", step+1, sum)
		if err := os.WriteFile(at("ckpt/state"), []byte(state), 0o644); err != nil {
			fail("write state: %v", err)
		}
		if *pad > 0 {
			padding[0] = byte(step)
			if err := os.WriteFile(at("ckpt/pad"), padding, 0o644); err != nil {
				fail("write pad: %v", err)
			}
		}
		checkpoint(float64(step+1) / float64(*steps))
	}
	result := fmt.Sprintf("start=%d\nresult=%x\n", start, sum)
	if err := os.WriteFile(at("out/result"), []byte(result), 0o644); err != nil {
		fail("write result: %v", err)
	}
	fmt.Print(result)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "stepper: "+format+"\n", args...)
	os.Exit(1)
}
