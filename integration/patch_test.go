package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCrashAfterRandomRewrites kills the daemon with SIGKILL while a writer rewrites a file the
// way a database does (small writes at random offsets, an fsync every few writes), three times
// on the same home. An fsync of such writes stores them as patches of the file's chunks
// (docs/format.md §5.9), which the next mount replays. After each crash every byte of the file
// must hold what it held at the last fsync that returned, or a value written after it; the size
// must not change. The file has chunks with data, holes and a short tail, so patches of stored
// chunks and of holes are both replayed.
func TestCrashAfterRandomRewrites(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	dir := t.TempDir()
	const size = 3<<20 + 5000 // chunks 0 (data), 1 and 2 (holes), 3 (a 5000-byte tail)
	model := make([]byte, size)
	copy(model, randBytes(1<<20))
	copy(model[3<<20:], randBytes(5000))

	d := startMount(t, home, dir)
	path := filepath.Join(dir, "db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(model[:1<<20], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(model[3<<20:], 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	replayed := 0
	for round := 1; round <= 3; round++ {
		w := startRewriter(path, model)
		if err := w.waitFsyncs(30, time.Minute); err != nil {
			t.Fatalf("round %d: before the kill: %v\npeerdrive output:\n%s", round, err, d.log)
		}
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
		d.Kill(t)
		durable, pending, fsyncs := w.stop(t)
		t.Logf("round %d: %d fsyncs returned; %d writes after the last", round, fsyncs, len(pending))
		lazyUnmount(t, dir)

		d = startMount(t, home, dir)
		if strings.Contains(d.log.String(), "fsynced patches replayed") {
			replayed++
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("round %d: read after the crash: %v", round, err)
		}
		checkRewritten(t, fmt.Sprintf("after crash %d", round), got, durable, pending)
		model = got
	}
	if replayed == 0 {
		t.Error("no mount replayed patches: the test did not exercise them")
	}
	d.Stop(t)
	d = startMount(t, home, dir)
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, model) {
		t.Errorf("after a clean remount the file changed (%v)", err)
	}
	d.Stop(t)
}

// checkRewritten fails unless got has durable's size and each of its bytes is durable's or one
// that a pending write put at that offset.
func checkRewritten(t *testing.T, when string, got, durable []byte, pending []rewrite) {
	t.Helper()
	if len(got) != len(durable) {
		t.Fatalf("%s: size %d, want %d", when, len(got), len(durable))
	}
	alt := map[int][]byte{}
	for _, w := range pending {
		for k, c := range w.data {
			alt[w.off+k] = append(alt[w.off+k], c)
		}
	}
	bad := 0
	for i := range got {
		if got[i] != durable[i] && !bytes.Contains(alt[i], got[i:i+1]) {
			if bad++; bad <= 5 {
				t.Errorf("%s: byte %d (chunk %d) is %#x, fsynced %#x, later writes %x", when, i, i>>20, got[i], durable[i], alt[i])
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d bytes wrong in all", when, bad)
	}
}

type rewrite struct {
	off  int
	data []byte
}

// rewriter writes 1 to 8 KiB at random offsets of a file, a quarter of them into its holes
// (chunks 1 and 2), and fsyncs after every 1 to 16 writes, until an error stops it. It
// remembers the contents as of the last fsync that returned and the writes since.
type rewriter struct {
	mu      sync.Mutex
	durable []byte
	pending []rewrite
	fsyncs  int
	err     error
	finish  chan struct{}
}

func startRewriter(path string, contents []byte) *rewriter {
	w := &rewriter{durable: bytes.Clone(contents), finish: make(chan struct{})}
	go func() {
		defer close(w.finish)
		err := w.run(path)
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	return w
}

func (w *rewriter) run(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	current := bytes.Clone(w.durable)
	for {
		for n := 1 + rand.IntN(16); n > 0; n-- {
			data := randBytes(1 + rand.IntN(8<<10))
			off := rand.IntN(len(current) - len(data))
			if rand.IntN(4) == 0 {
				off = 1<<20 + rand.IntN(2<<20-len(data))
			}
			w.mu.Lock()
			w.pending = append(w.pending, rewrite{off, data})
			w.mu.Unlock()
			if _, err := f.WriteAt(data, int64(off)); err != nil {
				return err
			}
			copy(current[off:], data)
		}
		if err := f.Sync(); err != nil {
			return err
		}
		w.mu.Lock()
		copy(w.durable, current)
		w.pending = nil
		w.fsyncs++
		w.mu.Unlock()
	}
}

// waitFsyncs waits until n fsyncs returned; it fails if the writer stops first.
func (w *rewriter) waitFsyncs(n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		got, err := w.fsyncs, w.err
		w.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-w.finish:
			return fmt.Errorf("the writer stopped after %d fsyncs: %v", got, err)
		case <-deadline:
			return fmt.Errorf("only %d fsyncs within %v", got, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop waits for the writer, which the kill makes fail, and returns what it remembers.
func (w *rewriter) stop(t *testing.T) (durable []byte, pending []rewrite, fsyncs int) {
	t.Helper()
	select {
	case <-w.finish:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer did not stop within 30 s of the kill")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.durable, w.pending, w.fsyncs
}
