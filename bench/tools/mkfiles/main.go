// Command mkfiles creates N files of S bytes each in a directory, writing
// each one with open, write, close (no fsync). It is the small-file workload
// of bench/run.sh: a shell loop would measure the shell, not the file system.
//
// Every file gets its own pseudo-random content, so content-addressed
// deduplication cannot shortcut the work.
//
//	mkfiles -n 10000 -size 4096 DIR
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

func main() {
	n := flag.Int("n", 10000, "number of files")
	size := flag.Int("size", 4096, "bytes per file")
	seed := flag.Uint64("seed", 1, "seed of the file contents")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mkfiles [-n N] [-size BYTES] [-seed S] DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *n < 0 || *size < 0 {
		flag.Usage()
		os.Exit(2)
	}
	dir := flag.Arg(0)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{byte(*seed), byte(*seed >> 8), byte(*seed >> 16), byte(*seed >> 24),
		byte(*seed >> 32), byte(*seed >> 40), byte(*seed >> 48), byte(*seed >> 56)})
	buf := make([]byte, *size)
	for i := 0; i < *n; i++ {
		_, _ = rng.Read(buf) // never fails
		name := filepath.Join(dir, fmt.Sprintf("f%06d", i))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			fatal(err)
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			fatal(err)
		}
		if err := f.Close(); err != nil {
			fatal(err)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mkfiles:", err)
	os.Exit(1)
}
