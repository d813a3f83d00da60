// Command worker is the compute worker alone (what `peerdrive
// compute-worker` runs), for the package's tests. Built without the race
// detector it compiles modules in seconds where the race-instrumented test
// binary takes a minute, so the tests also use it to fill their
// compilation cache:
//
//	worker warm MODULE CACHEDIR
//
// compiles MODULE for wasm.Run (in-process runs, which are compiled with
// termination checks, unlike the worker's) into CACHEDIR, by running it
// with the argument "-steps 0".
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/peerdrive/peerdrive/wasm"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "warm" {
		b, err := os.ReadFile(os.Args[2])
		if err == nil {
			_, err = wasm.Run(context.Background(), wasm.Unit{Module: b, Args: []string{"-steps", "0"}, CacheDir: os.Args[3]}, nil)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "warm:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(wasm.WorkerMain(os.Stdin, os.Stdout))
}
