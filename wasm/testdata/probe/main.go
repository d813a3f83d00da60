// Command probe misbehaves on purpose, one way per argument, to test the
// sandbox: hog (allocates without end), loop (never ends), passwd (opens
// /etc/passwd), outfill (writes /out without end), clock (prints time and
// random numbers), panic, trap (nil dereference), ls (lists /, /in, /ckpt),
// write-in (writes under /in), commitfile (commits through /ckpt/.commit),
// exit N.
package main

import (
	"crypto/rand"
	"fmt"
	mrand "math/rand"
	"os"
	"sort"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe MODE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "hog":
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			b[0] = 1
			keep = append(keep, b)
		}
	case "loop":
		x := 0
		for {
			x++
		}
	case "passwd":
		_, err := os.ReadFile("/etc/passwd")
		fmt.Println("passwd:", err)
		_, err = os.ReadFile("/in/../../etc/passwd")
		fmt.Println("escape:", err)
		if err == nil {
			os.Exit(1)
		}
	case "outfill":
		f, err := os.Create("/out/big")
		if err != nil {
			panic(err)
		}
		b := make([]byte, 1<<16)
		for {
			if _, err := f.Write(b); err != nil {
				fmt.Println("write:", err)
				os.Exit(3)
			}
		}
	case "clock":
		var b [8]byte
		rand.Read(b[:])
		fmt.Println(time.Now().UnixNano(), mrand.Int63(), b, time.Since(time.Unix(0, 0)) > 0)
		m := map[int]int{}
		for i := 0; i < 20; i++ {
			m[i] = i
		}
		for k := range m {
			fmt.Print(k, " ")
		}
		fmt.Println()
	case "panic":
		panic("boom")
	case "trap":
		var p *int
		fmt.Println(*p)
	case "ls":
		for _, d := range []string{"/", "/in", "/ckpt"} {
			es, err := os.ReadDir(d)
			var names []string
			for _, e := range es {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			fmt.Println(d, names, err)
		}
		b, err := os.ReadFile("/in/dir/a")
		fmt.Printf("%s %v\n", b, err)
	case "write-in":
		err := os.WriteFile("/in/x", []byte("x"), 0o644)
		fmt.Println("write-in:", err)
		err = os.WriteFile("/etc-new", []byte("x"), 0o644)
		fmt.Println("write-root:", err)
	case "commitfile":
		for i := 1; i <= 3; i++ {
			os.WriteFile("/ckpt/n", []byte(strconv.Itoa(i)), 0o644)
			os.WriteFile("/ckpt/.commit", []byte(fmt.Sprint(float64(i)/4)), 0o644)
		}
		os.WriteFile("/out/done", []byte("yes"), 0o644)
	case "exit":
		n, _ := strconv.Atoi(os.Args[2])
		os.Exit(n)
	}
}
