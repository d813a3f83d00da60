package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashSizes cycle through the files the writer makes: empty, tiny, a page, a small chunk,
// and sizes that span one and several chunks.
var crashSizes = []int{0, 1, 4 << 10, 100 << 10, 3 << 19, 5 << 20}

// TestCrashAfterFsync kills the daemon with SIGKILL while a writer is busy, three times on the
// same home, and checks that every file whose fsync and close had returned is byte-identical
// after the next mount, that a file replaced by rename holds its last durable or its next
// version and nothing else, and that the whole tree can be walked, stat'ed and read.
func TestCrashAfterFsync(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home") // mount initializes a home it does not find
	dir := t.TempDir()
	recorded := map[string]string{}    // path under the mount -> sha256 of fsync'd contents
	replaced := map[string][2]string{} // path -> sha256 of its last durable and its next version

	for round := 1; round <= 3; round++ {
		d := startMount(t, home, dir)
		verifyRecorded(t, dir, recorded, fmt.Sprintf("after crash %d", round-1))
		verifyReplaced(t, dir, replaced, fmt.Sprintf("after crash %d", round-1))
		readWholeTree(t, dir)

		w := startWriter(dir, fmt.Sprintf("round%d", round))
		target := 10 + 5*round
		if err := w.waitDone(target, time.Minute); err != nil {
			t.Fatalf("round %d: before the kill: %v\npeerdrive output:\n%s", round, err, d.log)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // land the kill mid-file
		d.Kill(t)
		done, err := w.stop(t, 30*time.Second)
		if err == nil {
			t.Fatalf("round %d: the writer finished all its files before the kill", round)
		}
		t.Logf("round %d: %d files fsync'd, writer then failed with: %v", round, len(done), err)
		for p, sum := range done {
			recorded[p] = sum
		}
		w.mu.Lock()
		replaced[w.statePath] = [2]string{w.stateDone, w.stateNext}
		w.mu.Unlock()
		lazyUnmount(t, dir) // stale-mount recovery has its own test
	}

	d := startMount(t, home, dir)
	verifyRecorded(t, dir, recorded, "after crash 3")
	verifyReplaced(t, dir, replaced, "after crash 3")
	readWholeTree(t, dir)
	d.Stop(t)
	d = startMount(t, home, dir)
	verifyRecorded(t, dir, recorded, "after a clean remount")
	verifyReplaced(t, dir, replaced, "after a clean remount")
	d.Stop(t)
}

// crashWriter writes files of crashSizes with random contents into nested directories under
// root/prefix until it fails, remembering every file whose fsync and close returned without
// error. Every fourth step it also replaces root/prefix/state the durable way: write a temp
// file, fsync, rename over, fsync the directory.
type crashWriter struct {
	mu        sync.Mutex
	done      map[string]string // relative path -> sha256
	statePath string            // relative path of the replaced file
	stateDone string            // sha256 of its version whose directory fsync returned
	stateNext string            // sha256 of the version being put in place
	err       error             // why it stopped
	finish    chan struct{}
}

func startWriter(root, prefix string) *crashWriter {
	w := &crashWriter{done: map[string]string{}, statePath: filepath.Join(prefix, "state"), finish: make(chan struct{})}
	go func() {
		defer close(w.finish)
		err := w.run(root, prefix)
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	return w
}

func (w *crashWriter) run(root, prefix string) error {
	made := map[string]bool{}
	for i := 0; i < 400; i++ {
		if i%4 == 3 {
			if err := w.replaceState(root, i); err != nil {
				return err
			}
		}
		rel := filepath.Join(prefix, fmt.Sprintf("d%d", i/8), fmt.Sprintf("e%d", i%3))
		if !made[rel] {
			if err := mkdirSynced(root, rel); err != nil {
				return err
			}
			made[rel] = true
		}
		rel = filepath.Join(rel, fmt.Sprintf("f%03d", i))
		data := randBytes(crashSizes[i%len(crashSizes)])
		if err := writeInPieces(filepath.Join(root, rel), data); err != nil {
			return err
		}
		w.mu.Lock()
		w.done[rel] = hashBytes(data)
		w.mu.Unlock()
	}
	return nil
}

// replaceState puts a new version of the state file in place atomically and durably.
func (w *crashWriter) replaceState(root string, i int) error {
	path := filepath.Join(root, w.statePath)
	data := randBytes(64<<10 + i)
	w.mu.Lock()
	w.stateNext = hashBytes(data)
	w.mu.Unlock()
	if err := os.Remove(path + ".tmp"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := writeInPieces(path+".tmp", data); err != nil {
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("fsync dir after rename: %w", err)
	}
	w.mu.Lock()
	w.stateDone = w.stateNext
	w.mu.Unlock()
	return nil
}

// writeInPieces writes data in 256 KiB writes so that a kill can land inside a file.
func writeInPieces(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += 256 << 10 {
		if _, err := f.Write(data[off:min(off+256<<10, len(data))]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}

// mkdirSynced makes root/rel and its missing parents, fsyncing the parent of each new one.
func mkdirSynced(root, rel string) error {
	p := root
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		next := filepath.Join(p, part)
		err := os.Mkdir(next, 0o755)
		switch {
		case err == nil:
			if err := syncDir(p); err != nil {
				return fmt.Errorf("fsync dir %s: %w", p, err)
			}
		case !errors.Is(err, fs.ErrExist):
			return err
		}
		p = next
	}
	return nil
}

// waitDone waits until at least n files are done; it fails if the writer stops first.
func (w *crashWriter) waitDone(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		got, err := len(w.done), w.err
		w.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-w.finish:
			return fmt.Errorf("the writer stopped after %d files: %v", got, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d files written and fsync'd within %v", got, n, timeout)
		}
	}
}

// stop waits for the writer to end (it ends on its first error, once the mount is dead) and
// returns the files it completed and the error it stopped on, nil if it wrote them all.
func (w *crashWriter) stop(t *testing.T, timeout time.Duration) (map[string]string, error) {
	t.Helper()
	select {
	case <-w.finish:
	case <-time.After(timeout):
		t.Fatalf("the writer is stuck in a file system call %v after the kill", timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done, w.err
}

// verifyRecorded checks that every recorded file reads back with the recorded hash.
func verifyRecorded(t *testing.T, root string, recorded map[string]string, when string) {
	t.Helper()
	paths := make([]string, 0, len(recorded))
	for p := range recorded {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	bad := 0
	for _, p := range paths {
		got, err := hashFile(filepath.Join(root, p))
		switch {
		case err != nil:
			t.Errorf("%s: fsync'd file %s: %v", when, p, err)
		case got != recorded[p]:
			t.Errorf("%s: fsync'd file %s: contents changed (sha256 %s, want %s)", when, p, got, recorded[p])
		default:
			continue
		}
		if bad++; bad == 20 {
			break
		}
	}
	if bad > 0 {
		t.FailNow()
	}
	t.Logf("%s: %d fsync'd files intact", when, len(paths))
}

// verifyReplaced checks that each file replaced by rename holds its last durable version or
// the one that was being put in place, and is absent only if no replacement completed.
func verifyReplaced(t *testing.T, root string, replaced map[string][2]string, when string) {
	t.Helper()
	for p, v := range replaced {
		got, err := hashFile(filepath.Join(root, p))
		switch {
		case errors.Is(err, fs.ErrNotExist) && v[0] == "":
		case err != nil:
			t.Errorf("%s: %s, replaced by rename: %v", when, p, err)
		case got != v[0] && got != v[1]:
			t.Errorf("%s: %s, replaced by rename, holds neither its durable nor its next version (sha256 %s)", when, p, got)
		}
	}
}

// readWholeTree lstats every entry under root and reads every regular file to the end,
// failing on any error (a dangling directory entry, EIO, a short read...).
func readWholeTree(t *testing.T, root string) {
	t.Helper()
	var errs []error
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, err)
			if de != nil && de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if fi.Mode().IsRegular() {
			if _, err := hashFile(path); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) >= 20 {
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		t.Fatalf("walking the tree under %s: %v", root, errors.Join(errs...))
	}
}

// TestTruncateCutsBufferedTail: a truncate into a chunk whose rewrite is still buffered must
// not leave the store with the new size over the old chunk: after a crash, growing the file
// again would show the bytes the truncate removed instead of zeros.
func TestTruncateCutsBufferedTail(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	dir := t.TempDir()
	d := startMount(t, home, dir)
	path := filepath.Join(dir, "f")
	old := randBytes(100 << 10)
	if err := writeSynced(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new"), 0); err != nil { // buffers chunk 0
		t.Fatal(err)
	}
	if err := f.Truncate(50 << 10); err != nil {
		t.Fatal(err)
	}
	d.Kill(t) // the truncate's transaction is committed, not synced: a process crash keeps it
	f.Close()
	lazyUnmount(t, dir)

	d = startMount(t, home, dir)
	defer d.Stop(t)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 50<<10 {
		t.Fatalf("size after the crash %d, want the truncated 51200", st.Size())
	}
	if err := os.Truncate(path, 100<<10); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[50<<10:], make([]byte, 50<<10)) {
		t.Error("bytes past the truncated end came back when the file grew")
	}
	if !bytes.Equal(got[3:50<<10], old[3:50<<10]) {
		t.Error("bytes before the truncated end changed")
	}
}
