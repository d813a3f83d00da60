package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestNoPlaintextInHome puts a random marker into file contents of several sizes, into file,
// directory and symlink names, a symlink target, an xattr name and an xattr value, and then
// searches every byte and every name under the home for it, while mounted after fsync and
// again after unmounting. The marker must appear nowhere.
func TestNoPlaintextInHome(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	mnt := t.TempDir()
	d := startMount(t, home, mnt)

	var r [12]byte
	_, _ = rand.Read(r[:])
	marker := "pdmark-" + hex.EncodeToString(r[:])
	line := []byte(marker + " the quick brown fox jumps over the lazy dog\n")

	dir := filepath.Join(mnt, "dir-"+marker)
	if err := os.MkdirAll(filepath.Join(dir, "sub-"+marker), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tiny":                               []byte(marker),
		"kib":                                withMarkerAt(randBytes(1024), marker, 500),
		"name-" + marker:                     []byte("plain\n"),
		"dir-" + marker + "/lines-" + marker: bytes.Repeat(line, 4096), // ~230 KB
		"dir-" + marker + "/sub-" + marker + "/ten-mb": bytes.Repeat(line, 10<<20/len(line)+1), // 10 MB
		"straddle": withMarkerAt(randBytes(3<<20), marker, 1<<20-len(marker)/2), // across a 1 MiB boundary
	}
	for rel, data := range files {
		if err := writeSynced(filepath.Join(mnt, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("target-"+marker, filepath.Join(mnt, "link-"+marker)); err != nil {
		t.Fatal(err)
	}
	xattrFile := filepath.Join(mnt, "tiny")
	if err := syscall.Setxattr(xattrFile, "user.note", []byte("value-"+marker), 0); err != nil {
		t.Fatalf("setxattr user.note: %v", err)
	}
	if err := syscall.Setxattr(xattrFile, "user."+marker, []byte("v"), 0); err != nil {
		t.Fatalf("setxattr with the marker in its name: %v", err)
	}
	for _, p := range []string{filepath.Join(dir, "sub-"+marker), dir, mnt} {
		if err := syncDir(p); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := os.Open(xattrFile); err == nil { // an fsync after the xattrs, for the metadata
		_ = f.Sync()
		f.Close()
	}

	requireNoMarker(t, home, marker, "mounted, after fsync")
	d.Stop(t)
	requireNoMarker(t, home, marker, "after unmount")

	// The marker did go in: check that it comes back out.
	d = startMount(t, home, mnt)
	for rel, data := range files {
		if got := readFile(t, filepath.Join(mnt, rel)); !bytes.Equal(got, data) {
			t.Errorf("%s: contents differ after remount", rel)
		}
	}
	buf := make([]byte, 256)
	if n, err := syscall.Getxattr(xattrFile, "user.note", buf); err != nil || string(buf[:n]) != "value-"+marker {
		t.Errorf("xattr user.note after remount: %q, %v", buf[:max(n, 0)], err)
	}
	d.Stop(t)
}

func withMarkerAt(b []byte, marker string, off int) []byte {
	copy(b[off:], marker)
	return b
}

// requireNoMarker fails if any name or any file's bytes under root contain marker.
func requireNoMarker(t *testing.T, root, marker, when string) {
	t.Helper()
	var hits []string
	var files, size int64
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed while we walked (a compaction)
			}
			return err
		}
		if strings.Contains(de.Name(), marker) {
			hits = append(hits, path+" (name)")
		}
		if target, err := os.Readlink(path); err == nil && strings.Contains(target, marker) {
			hits = append(hits, path+" (symlink target)")
		}
		if de.Type()&fs.ModeSymlink == 0 && xattrsContain(path, marker) {
			hits = append(hits, path+" (xattr)")
		}
		if !de.Type().IsRegular() {
			return nil
		}
		n, found, err := fileContains(path, []byte(marker))
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		files++
		size += n
		if found {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: scanning %s: %v", when, root, err)
	}
	if len(hits) > 0 {
		t.Errorf("%s: plaintext marker %q found under the home in:\n%s", when, marker, strings.Join(hits, "\n"))
	}
	t.Logf("%s: scanned %d files, %d bytes, under %s", when, files, size, root)
	if files == 0 {
		t.Errorf("%s: the home %s holds no files at all: where does the data go?", when, root)
	}
}

// xattrsContain reports whether an extended attribute name or value of path contains marker.
func xattrsContain(path, marker string) bool {
	names := make([]byte, 64<<10)
	n, err := syscall.Listxattr(path, names)
	if err != nil || n <= 0 {
		return false
	}
	val := make([]byte, 64<<10)
	for _, name := range strings.Split(strings.TrimRight(string(names[:n]), "\x00"), "\x00") {
		if strings.Contains(name, marker) {
			return true
		}
		if m, err := syscall.Getxattr(path, name, val); err == nil && bytes.Contains(val[:m], []byte(marker)) {
			return true
		}
	}
	return false
}

// fileContains streams path looking for needle, so that large or sparse store files are
// not read into memory whole.
func fileContains(path string, needle []byte) (int64, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20+len(needle))
	keep := 0 // bytes carried over from the previous read
	var total int64
	for {
		n, err := f.Read(buf[keep:])
		total += int64(n)
		if bytes.Contains(buf[:keep+n], needle) {
			return total, true, nil
		}
		if err == io.EOF {
			return total, false, nil
		}
		if err != nil {
			return total, false, fmt.Errorf("read %s: %w", path, err)
		}
		end := keep + n
		keep = min(end, len(needle)-1)
		copy(buf, buf[end-keep:end])
	}
}

// TestFileContains checks the scanner itself, with the needle across read boundaries.
func TestFileContains(t *testing.T) {
	needle := []byte("needle-0123456789")
	for _, off := range []int{0, 1, 1<<20 - 5, 1 << 20, 2<<20 - len(needle), 3<<20 - len(needle)} {
		data := make([]byte, 3<<20)
		copy(data[off:], needle)
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, found, err := fileContains(p, needle); err != nil || !found {
			t.Errorf("needle at %d: found %v, %v", off, found, err)
		}
		copy(data[off:], "x")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, found, err := fileContains(p, needle); err != nil || found {
			t.Errorf("broken needle at %d: found %v, %v", off, found, err)
		}
	}
}
