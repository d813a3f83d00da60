package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// Helpers for the tests of issue 4 (restore from the recovery key, snapshots, the
// single-writer lease): recovery keys, `peerdrive snapshots --json`, the drive's fields of
// `status --json`, a tree with every kind of file, and read-only checks.

// Recovery keys.

// saveRecoveryKey copies home's recovery key to dst (0600), as a user keeps it off the
// machine, and returns dst.
func saveRecoveryKey(t testing.TB, home, dst string) string {
	t.Helper()
	b := readFile(t, filepath.Join(home, "recovery-key.txt"))
	if !strings.Contains(string(b), "AGE-SECRET-KEY-1") {
		t.Fatalf("%s/recovery-key.txt holds no AGE-SECRET-KEY-1… identity (DESIGN.md §2):\n%s", home, b)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// initFromKey runs `peerdrive --home home init --from-key key` on a home that does not exist
// yet and returns home.
func initFromKey(t testing.TB, home, key string) string {
	t.Helper()
	if _, err := os.Stat(home); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("initFromKey: %s exists (%v): a restore starts from a fresh home", home, err)
	}
	mustRun(t, cmdOpts{Timeout: time.Minute}, pdBin, "--home", home, "init", "--from-key", key)
	got := readFile(t, filepath.Join(home, "recovery-key.txt"))
	if want := readFile(t, key); !strings.Contains(string(got), strings.TrimSpace(keyLine(string(want)))) {
		t.Fatalf("%s/recovery-key.txt after init --from-key %s does not hold that key", home, key)
	}
	return home
}

// keyLine returns the AGE-SECRET-KEY-1… line of a key file.
func keyLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "AGE-SECRET-KEY-1") {
			return l
		}
	}
	return s
}

// Snapshots.

// snapInfo is one element of `peerdrive snapshots --json`.
type snapInfo struct {
	Seq   uint64
	Time  int64 // unix ns
	Files uint64
	Bytes uint64
}

// listSnapshots runs `peerdrive --home home snapshots --json` and decodes its array, requiring
// every element to have Seq, Time, Files and Bytes, and the list to be newest first with
// strictly decreasing IDs and non-increasing times.
func listSnapshots(t testing.TB, home string) []snapInfo {
	t.Helper()
	args := []string{"--home", home, "snapshots", "--json"}
	res := runSplit(t, 45*time.Second, pdBin, args...)
	if res.timedOut || !res.state.Success() {
		t.Fatalf("peerdrive %s: %v (timed out: %v), want exit 0; stderr:\n%s", strings.Join(args, " "),
			res.state, res.timedOut, tail(res.stderr, 20))
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(res.stdout), &raw); err != nil {
		t.Fatalf("peerdrive %s: want a JSON array on stdout: %v:\n%s", strings.Join(args, " "), err, tail(res.stdout, 20))
	}
	var list []snapInfo
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
		t.Fatalf("peerdrive %s: %v:\n%s", strings.Join(args, " "), err, tail(res.stdout, 20))
	}
	for i, o := range raw {
		for _, f := range []string{"Seq", "Time", "Files", "Bytes"} {
			if _, ok := o[f]; !ok {
				t.Fatalf("peerdrive %s: element %d has no field %s:\n%s", strings.Join(args, " "), i, f, tail(res.stdout, 20))
			}
		}
		if i > 0 && !(list[i].Seq < list[i-1].Seq && list[i].Time <= list[i-1].Time) {
			t.Errorf("peerdrive %s: not newest first with increasing IDs: element %d is %+v after %+v",
				strings.Join(args, " "), i, list[i], list[i-1])
		}
	}
	return list
}

// Status: the drive's lease.

// driveStatus is the part of `peerdrive status --json` about the drive's root and lease.
type driveStatus struct {
	PeerID         string `json:"peer_id"`
	ReadOnlyReason string `json:"read_only_reason"`
	RootSeq        uint64 `json:"root_seq"`
	Writer         string `json:"writer"`
	Snapshots      int    `json:"snapshots"`
	raw            string
}

func getDriveStatus(t testing.TB, home string) driveStatus {
	t.Helper()
	out, stderr, err := runOut(statusTimeout, pdBin, "--home", home, "status", "--json")
	if err != nil {
		t.Fatalf("peerdrive --home %s status --json: %v\n%s", home, err, tail(stderr, 20))
	}
	var st driveStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("peerdrive --home %s status --json: want one JSON object: %v\n%s", home, err, tail(out, 20))
	}
	st.raw = strings.Join(strings.Fields(out), " ")
	return st
}

// waitDriveStatus polls the drive's status until cond holds, failing the test after timeout.
func waitDriveStatus(t testing.TB, home, what string, timeout time.Duration, cond func(driveStatus) bool) driveStatus {
	t.Helper()
	start := time.Now()
	for {
		st := getDriveStatus(t, home)
		if cond(st) {
			t.Logf("%s after %v", what, time.Since(start).Round(100*time.Millisecond))
			return st
		}
		if time.Since(start) > timeout {
			t.Fatalf("waited %v for %s; last status: %s", timeout, what, st.raw)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Daemon output.

// logLines returns the lines of l that contain s (stderr only), in order.
func logLines(l *logTail, s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) && !strings.HasPrefix(line, "[stdout]") {
			out = append(out, line)
		}
	}
	return out
}

// Trees.

// refCopy copies src to dst (which must not exist) with cp -a: contents, modes, owners,
// nanosecond times, hard links, symlinks, FIFOs and xattrs. Not rsync: rsync 3.x compares the
// times of directories and symlinks to the second, so a copy taken within a second of their
// mtime keeps its own creation times for them, and `rsync -n` does not see the difference;
// manifest compares every entry's mtime to the nanosecond for that.
func refCopy(t testing.TB, src, dst string) {
	t.Helper()
	if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("refCopy: %s exists (%v)", dst, err)
	}
	mustRun(t, cmdOpts{}, "cp", "-a", src+"/.", dst+"/")
}

// lutimesNano sets path's access and modification times without following a symlink
// (utimensat with AT_SYMLINK_NOFOLLOW), to the nanosecond.
func lutimesNano(path string, mtime time.Time) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	ts := [2]syscall.Timespec{syscall.NsecToTimespec(mtime.UnixNano()), syscall.NsecToTimespec(mtime.UnixNano())}
	dirfd := -100 // AT_FDCWD
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&ts[0])), 0x100 /* AT_SYMLINK_NOFOLLOW */, 0, 0)
	if e != 0 {
		return &os.PathError{Op: "utimensat", Path: path, Err: e}
	}
	return nil
}

// fullTree describes the tree that TestRestoreFromKey writes: every kind of file the drive
// keeps.
type fullTree struct {
	data   map[string][]byte // regular files' contents by path (the first name of a hard link)
	sparse []byte            // the 4 KiB of data in sparse.img
}

// newFullTree draws the random contents once, so that the same tree can be written twice.
func newFullTree() *fullTree {
	ft := &fullTree{data: map[string][]byte{
		"empty":               {},
		"hello.txt":           []byte("hello\n"),
		"private/secret":      randBytes(3000),
		"public/tool":         randBytes(70_000),
		"public/suid":         randBytes(1000),
		"shared/big.bin":      randBytes(5<<20 + 123), // > 1 MiB, not a multiple of anything
		"shared/two-mib":      randBytes(2 << 20),     // exactly 2 MiB
		"shared/hard-a":       randBytes(5000),
		"public/deep/er/leaf": randBytes(12345),
		"owned/nobody.txt":    randBytes(100),
		"name with spaces & ünïcödé 名前.txt": randBytes(77),
		"caf\xe9 in Latin-1, not UTF-8":     randBytes(55), // Linux names are bytes
	}}
	ft.sparse = randBytes(4096)
	for i := range 150 { // enough small files for the tree to take some room
		ft.data[fmt.Sprintf("many/sub%d/f%03d", i%5, i)] = randBytes(i * 37 % 3000)
	}
	return ft
}

// Hard links, symlinks and FIFOs of the full tree.
var (
	fullTreeLinks = [][2]string{{"shared/hard-a", "public/hard-b"}, {"shared/hard-a", "hard-c"}}
	fullTreeSyms  = [][2]string{
		{"hello.txt", "link-rel"},
		{"../shared/big.bin", "public/link-up"},
		{"public/deep", "link-dir"},
		{"no/such/target", "dangling"},
		{"/nonexistent/absolute/path", "link-abs"},
		{"nobody.txt", "owned/link-owned"},
		{"caf\xe9 in Latin-1, not UTF-8", "link-\xff"},
	}
)

// sparseSize is the size of sparse.img: 4 KiB of data at 8 MiB and one byte at the end.
const sparseSize = 16 << 20

// write builds the tree under root, which must exist and be empty: directories with modes
// 0700, 0755, 0750 and 2775, files 0600, 0640, 0644, 0755 and 4755, an empty and a sparse
// file, files and a directory and a symlink owned by nobody, hard links, relative, absolute and
// dangling symlinks, FIFOs, user xattrs (empty, binary and 2000-byte values), and distinct
// nanosecond mtimes on everything, directories last. It returns the regular files' sums by path,
// hard links under each name.
func (ft *fullTree) write(t testing.TB, root string) map[string]fileSum {
	t.Helper()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("writing the full tree under %s: %v", root, err)
		}
	}
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{"private", 0o700}, {"public", 0o755}, {"shared", os.ModeSetgid | 0o775}, {"public/deep", 0o755},
		{"public/deep/er", 0o750}, {"empty-dir", 0o755}, {"owned", 0o770},
		{"many", 0o755}, {"many/sub0", 0o755}, {"many/sub1", 0o755}, {"many/sub2", 0o755}, {"many/sub3", 0o755}, {"many/sub4", 0o755},
	}
	for _, d := range dirs {
		check(os.Mkdir(filepath.Join(root, d.path), 0o700))
		check(os.Chmod(filepath.Join(root, d.path), d.mode)) // past the umask, with setgid
	}
	check(os.Chmod(root, 0o755))
	modes := map[string]os.FileMode{
		"private/secret": 0o600, "public/tool": 0o755, "public/suid": os.ModeSetuid | 0o755,
		"shared/hard-a": 0o640, "owned/nobody.txt": 0o664,
	}
	want := map[string]fileSum{}
	for _, rel := range slices.Sorted(maps.Keys(ft.data)) {
		p := filepath.Join(root, rel)
		check(os.WriteFile(p, ft.data[rel], 0o600))
		want[rel] = fileSum{Size: int64(len(ft.data[rel])), Sum: hashBytes(ft.data[rel])}
		mode, ok := modes[rel]
		if !ok {
			mode = 0o644
		}
		if rel == "owned/nobody.txt" {
			check(os.Chown(p, 65534, 100)) // before the chmod: a chown clears set-ID bits
		}
		check(os.Chmod(p, mode))
	}
	check(os.Chown(filepath.Join(root, "owned"), 65534, 65534))

	sp, err := os.OpenFile(filepath.Join(root, "sparse.img"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	check(err)
	_, err = sp.WriteAt(ft.sparse, 8<<20)
	check(err)
	_, err = sp.WriteAt([]byte{1}, sparseSize-1)
	check(err)
	check(sp.Close())
	sparse := make([]byte, sparseSize)
	copy(sparse[8<<20:], ft.sparse)
	sparse[sparseSize-1] = 1
	want["sparse.img"] = fileSum{Size: sparseSize, Sum: hashBytes(sparse)}

	for _, l := range fullTreeLinks {
		check(os.Link(filepath.Join(root, l[0]), filepath.Join(root, l[1])))
		want[l[1]] = want[l[0]]
	}
	for _, l := range fullTreeSyms {
		check(os.Symlink(l[0], filepath.Join(root, l[1])))
	}
	check(os.Lchown(filepath.Join(root, "owned/link-owned"), 65534, 65534))
	check(syscall.Mkfifo(filepath.Join(root, "pipe"), 0o644))
	check(syscall.Mkfifo(filepath.Join(root, "private/fifo-600"), 0o600))
	check(os.Chmod(filepath.Join(root, "pipe"), 0o644))
	check(os.Chmod(filepath.Join(root, "private/fifo-600"), 0o600))

	for _, x := range []struct {
		path, name string
		value      []byte
	}{
		{"hello.txt", "user.comment", []byte("hello, world")},
		{"hello.txt", "user.second", []byte("another one")},
		{"shared/big.bin", "user.binary", []byte{0, 0xff, 0x10, 0xee, 0x7f, 0}},
		{"public", "user.dirnote", []byte("a directory's note")},
		{"empty", "user.flag", []byte{}},
		{"shared/hard-a", "user.linked", []byte("shared by the three links")},
		{"sparse.img", "user.long", []byte(strings.Repeat("0123456789", 200))},
	} {
		if err := syscall.Setxattr(filepath.Join(root, x.path), x.name, x.value, 0); err != nil {
			t.Fatalf("setxattr %s %s under %s: %v", x.path, x.name, root, err)
		}
	}

	// Distinct nanosecond mtimes for everything, directories last (setting an entry's times
	// does not change its directory's mtime, but creating it did), the root the very last.
	var others, dirPaths []string
	check(filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			dirPaths = append(dirPaths, p)
		} else {
			others = append(others, p)
		}
		return nil
	}))
	slices.Reverse(dirPaths) // deepest first, the root last
	base := time.Date(2019, 7, 8, 9, 10, 11, 0, time.UTC)
	for i, p := range append(others, dirPaths...) {
		check(lutimesNano(p, base.Add(time.Duration(i)*time.Hour+time.Duration(123_456_789+i*1111))))
	}
	return want
}

// Read-only mounts.

// requireReadOnly tries every kind of change under root and requires each to fail with
// EROFS; file and dir name an existing regular file and directory relative to root. It then
// requires the tree to be as before.
func requireReadOnly(t testing.TB, what, root, file, dir string) {
	t.Helper()
	before := manifest(t, root, manifestOpts{})
	f, d := filepath.Join(root, file), filepath.Join(root, dir)
	// New names nothing can have taken: an existing name gives EEXIST before EROFS.
	sfx := fmt.Sprintf("-%x", randBytes(6))
	ops := []struct {
		name string
		fn   func() error
	}{
		{"create a file", func() error { return os.WriteFile(filepath.Join(d, "new-file"+sfx), []byte("x"), 0o644) }},
		{"open an existing file for writing", func() error {
			fh, err := os.OpenFile(f, os.O_WRONLY, 0)
			if err == nil {
				_, err = fh.Write([]byte("x"))
				if cerr := fh.Close(); err == nil {
					err = cerr
				}
			}
			return err
		}},
		{"append to an existing file", func() error {
			fh, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				fh.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(f, 0) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(d, "new-dir"+sfx), 0o755) }},
		{"unlink", func() error { return os.Remove(f) }},
		{"rename", func() error { return os.Rename(f, f+".moved"+sfx) }},
		{"symlink", func() error { return os.Symlink("target", filepath.Join(d, "new-link"+sfx)) }},
		{"hard link", func() error { return os.Link(f, filepath.Join(d, "new-hard"+sfx)) }},
		{"chmod", func() error { return os.Chmod(f, 0o600) }},
		{"utimes", func() error { return os.Chtimes(f, time.Now(), time.Now()) }},
		{"setxattr", func() error { return syscall.Setxattr(f, "user.new", []byte("v"), 0) }},
		{"mkfifo", func() error { return syscall.Mkfifo(filepath.Join(d, "new-fifo"+sfx), 0o644) }},
	}
	var bad []string
	for _, op := range ops {
		if err := op.fn(); !errors.Is(err, syscall.EROFS) {
			bad = append(bad, fmt.Sprintf("%s: %v", op.name, errOrSuccess(err)))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s: want EROFS from every change under %s; got:\n%s", what, root, strings.Join(bad, "\n"))
	}
	requireSameTree(t, what+": after the refused changes", before, manifest(t, root, manifestOpts{}))
}

func errOrSuccess(err error) string {
	if err == nil {
		return "succeeded"
	}
	return err.Error()
}

// requireWritable writes, reads back and removes a file under root.
func requireWritable(t testing.TB, what, root string) {
	t.Helper()
	p := filepath.Join(root, ".writable-probe")
	data := randBytes(10_000)
	if err := writeSynced(p, data, 0o644); err != nil {
		t.Fatalf("%s: want a writable drive, but writing %s: %v", what, p, err)
	}
	if got := readFile(t, p); string(got) != string(data) {
		t.Fatalf("%s: %s read back differs", what, p)
	}
	if err := os.Remove(p); err != nil {
		t.Fatalf("%s: remove %s: %v", what, p, err)
	}
}
