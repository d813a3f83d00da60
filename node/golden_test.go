package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
)

// update generates the golden home of this format version and its
// manifest, if it does not exist yet:
//
//	go test ./node/ -run TestGoldenHome -update
//
// The fixture of a released version is never rewritten.
var update = flag.Bool("update", false, "generate testdata/golden-vN (home and manifest) for this format version")

// golden is the directory of the golden home of one format version.
type golden string

func goldenOf(version int) golden { return golden(fmt.Sprintf("testdata/golden-v%d", version)) }

func (g golden) home() string     { return string(g) + "/home" }
func (g golden) manifest() string { return string(g) + "/manifest.json" }
func (g golden) readme() string   { return string(g) + "/README.md" }

// fixedMtime is the mtime set on hello.txt: 2001-09-09T01:46:40.123456789Z.
const fixedMtime = 1000000000123456789

// manifest describes the tree of a golden home as the mount shows it.
type manifest struct {
	Comment       string          `json:"comment"`
	FormatVersion int             `json:"format_version"`
	Stats         manifestStats   `json:"stats"`
	Entries       []manifestEntry `json:"entries"`
}

// manifestStats are the drive's figures (the S record): they show that
// identical chunks were stored once and all-zero chunks not at all.
type manifestStats struct {
	Chunks      uint64 `json:"chunks"`
	UsedBytes   uint64 `json:"used_bytes"`
	StoredBytes uint64 `json:"stored_bytes"`
	Inodes      uint64 `json:"inodes"`
}

func statsOf(n *Node) manifestStats {
	st := n.Status()
	return manifestStats{Chunks: st.Chunks, UsedBytes: st.UsedBytes, StoredBytes: st.StoredBytes, Inodes: st.Inodes}
}

// manifestEntry is one path of the tree. Path is slash-separated and
// relative to the mount root ("." is the root). Mode is the permission bits
// in octal. Size is checked for files and symlinks only (a directory's size
// is whatever the FUSE layer reports). Xattrs maps each attribute name to
// its value in hex. SameFileAs names an earlier path that is the same inode
// (a hard link).
type manifestEntry struct {
	Path       string            `json:"path"`
	Type       string            `json:"type"`
	Mode       string            `json:"mode"`
	UID        uint32            `json:"uid"`
	GID        uint32            `json:"gid"`
	Nlink      uint64            `json:"nlink"`
	Size       int64             `json:"size,omitempty"`
	SHA256     string            `json:"sha256,omitempty"`
	Target     string            `json:"target,omitempty"`
	MtimeNs    int64             `json:"mtime_ns"`
	Xattrs     map[string]string `json:"xattrs,omitempty"`
	SameFileAs string            `json:"same_file_as,omitempty"`
}

// TestGoldenHome opens a copy of the home that each format version this code
// reads wrote (testdata/golden-vN), mounts it read-write and checks every
// file against the manifest. If it fails, this version can no longer read
// past homes: fix the code, or bump the format version and migrate.
func TestGoldenHome(t *testing.T) {
	requireFUSE(t)
	if g := goldenOf(peerdrive.FormatVersion); *update {
		if _, err := os.Stat(string(g)); err == nil {
			t.Fatalf("%s exists: a released fixture is never rewritten", g)
		}
		generateGolden(t, g)
	}
	for v := peerdrive.OldestFormatVersion; v <= peerdrive.FormatVersion; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { checkGolden(t, goldenOf(v), v) })
	}
}

// checkGolden mounts a copy of g's home, which format version wrote, and
// checks it against g's manifest.
func checkGolden(t *testing.T, g golden, version int) {
	var m manifest
	data, err := os.ReadFile(g.manifest())
	if err != nil {
		t.Fatalf("%v (generate with -update)", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v", g.manifest(), err)
	}
	if m.FormatVersion != version {
		t.Fatalf("%s is format version %d, want %d", g, m.FormatVersion, version)
	}
	// The first chunk of the first pack shows the chunk envelope the
	// version wrote: 0x01 in version 1, 0x02 (XAES-256-GCM) from version 2.
	pack, err := os.ReadFile(filepath.Join(g.home(), StoreDir, "packs", "pack-00000001"))
	if env := min(version, 2); err != nil || len(pack) == 0 || int(pack[0]) != env {
		t.Fatalf("%s: first pack starts %x (%v), want chunk envelope version %d", g, pack[:min(1, len(pack))], err, env)
	}

	home := filepath.Join(t.TempDir(), "home")
	copyHome(t, g.home(), home)
	mnt := t.TempDir()
	n := startMounted(t, home, mnt)

	if got := statsOf(n.n); got != m.Stats {
		t.Errorf("stats = %+v, want %+v", got, m.Stats)
	}
	got := scanTree(t, mnt)
	compareManifest(t, m.Entries, got)

	// Reading is not all: the drive must take writes and read them back.
	probe := filepath.Join(mnt, "probe.txt")
	if err := os.WriteFile(probe, []byte("probe"), 0o644); err != nil {
		t.Fatalf("write to the golden drive: %v", err)
	}
	if b, err := os.ReadFile(probe); err != nil || string(b) != "probe" {
		t.Fatalf("read back %q, %v", b, err)
	}
	stopMounted(t, n)
}

// TestGoldenHomeHasNoPlaintext checks the threat model of docs/format.md
// against the golden store: no name, content, symlink target or extended
// attribute of the tree appears in any file of the store.
func TestGoldenHomeHasNoPlaintext(t *testing.T) {
	for v := peerdrive.OldestFormatVersion; v <= peerdrive.FormatVersion; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { checkGoldenNoPlaintext(t, goldenOf(v)) })
	}
}

func checkGoldenNoPlaintext(t *testing.T, g golden) {
	needles := []string{
		"hello, peerdrive", "hello.txt", "hello-link", "hello.symlink", "big-copy", "sparse.bin",
		"zeros.bin", "dangling", "does-not-exist", "secret", "run.sh", "#!/bin/sh", "ünïcödé",
		"names are hashed", "private", "deeper", "user.comment", "user.bin", "user.empty", "golden",
		string(deterministic("peerdrive golden v1 big.bin", 64)),
	}
	store := filepath.Join(g.home(), StoreDir)
	seen := 0
	err := filepath.WalkDir(store, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		seen++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s holds plaintext %q", path, n)
			}
		}
		return nil
	})
	if err != nil || seen == 0 {
		t.Fatalf("walk %s: %v, %d files (generate with -update)", store, err, seen)
	}
}

// requireFUSE skips unless the test can mount FUSE file systems.
func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
}

// testLogger returns a logger that writes to t.Log and fails the test on a
// warning or an error.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(&failHandler{t: t, h: slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type failHandler struct {
	t *testing.T
	h slog.Handler
}

func (f *failHandler) Enabled(ctx context.Context, l slog.Level) bool { return f.h.Enabled(ctx, l) }
func (f *failHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		f.t.Errorf("logged at %s: %s", r.Level, r.Message)
	}
	return f.h.Handle(ctx, r)
}
func (f *failHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &failHandler{f.t, f.h.WithAttrs(a)}
}
func (f *failHandler) WithGroup(g string) slog.Handler { return &failHandler{f.t, f.h.WithGroup(g)} }

// mounted is a node started and mounted by startMounted.
type mounted struct {
	n    *Node
	dir  string
	once sync.Once
	err  error
}

// startMounted starts a node on home and mounts it on mnt. The mount is
// live when it returns; a cleanup unmounts and closes it if the test does
// not.
func startMounted(t *testing.T, home, mnt string) *mounted {
	t.Helper()
	n, err := Start(context.Background(), Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := n.Mount(mnt); err != nil {
		n.Close(context.Background())
		t.Fatalf("mount: %v", err)
	}
	m := &mounted{n: n, dir: mnt}
	t.Cleanup(func() { m.stop() })
	return m
}

// stop unmounts, waits for the FUSE server and closes the node, once.
func (m *mounted) stop() error {
	m.once.Do(func() {
		if err := m.n.Unmount(); err != nil {
			m.err = err
			unix.Unmount(m.dir, unix.MNT_DETACH)
		}
		m.n.Wait()
		if err := m.n.Close(context.Background()); m.err == nil {
			m.err = err
		}
	})
	return m.err
}

// stopMounted unmounts cleanly and closes the node, failing the test on
// any error.
func stopMounted(t *testing.T, m *mounted) {
	t.Helper()
	if err := m.stop(); err != nil {
		t.Fatalf("unmount and close: %v", err)
	}
}

// copyHome copies a home directory tree, giving it the modes docs/format.md
// prescribes (git keeps none of them): 0700 directories and 0600 files.
func copyHome(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o700)
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(out, b, 0o600)
		default:
			return fmt.Errorf("%s: unexpected file type %v in a stored home", path, d.Type())
		}
	})
	if err != nil {
		t.Fatalf("copy home: %v", err)
	}
}

// scanTree describes every path under root.
func scanTree(t *testing.T, root string) []manifestEntry {
	t.Helper()
	var out []manifestEntry
	seen := map[[2]uint64]string{} // dev, ino -> first path
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		e := manifestEntry{
			Path:    rel,
			Mode:    fmt.Sprintf("%04o", st.Mode&0o7777),
			UID:     st.Uid,
			GID:     st.Gid,
			Nlink:   uint64(st.Nlink),
			MtimeNs: st.Mtim.Nano(),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = "dir"
		case unix.S_IFREG:
			e.Type = "file"
			e.Size = st.Size
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if int64(len(b)) != st.Size {
				return fmt.Errorf("%s: read %d bytes, stat says %d", rel, len(b), st.Size)
			}
			sum := sha256.Sum256(b)
			e.SHA256 = hex.EncodeToString(sum[:])
		case unix.S_IFLNK:
			e.Type = "symlink"
			e.Size = st.Size
			if e.Target, err = os.Readlink(path); err != nil {
				return err
			}
		default:
			e.Type = fmt.Sprintf("mode-%o", st.Mode&unix.S_IFMT)
		}
		if e.Xattrs, err = xattrs(path); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if e.Type != "dir" {
			id := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := seen[id]; ok {
				e.SameFileAs = first
			} else {
				seen[id] = rel
			}
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return out
}

// xattrs returns the extended attributes of path (not following a
// symlink), values in hex.
func xattrs(path string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = hex.EncodeToString(val[:vn])
	}
	return out, nil
}

// compareManifest checks that got holds exactly the entries of want.
func compareManifest(t *testing.T, want, got []manifestEntry) {
	t.Helper()
	byPath := map[string]manifestEntry{}
	for _, e := range got {
		byPath[e.Path] = e
	}
	for _, w := range want {
		g, ok := byPath[w.Path]
		if !ok {
			t.Errorf("%s: missing", w.Path)
			continue
		}
		delete(byPath, w.Path)
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(g)
		if !bytes.Equal(wj, gj) {
			t.Errorf("%s:\n got %s\nwant %s", w.Path, gj, wj)
		}
	}
	extra := make([]string, 0, len(byPath))
	for p := range byPath {
		extra = append(extra, p)
	}
	sort.Strings(extra)
	for _, p := range extra {
		t.Errorf("%s: not in the manifest", p)
	}
}

// deterministic returns n bytes of SHA-256 in counter mode over label: the
// same bytes on every machine and Go version.
func deterministic(label string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var ctr [8]byte
	for i := uint64(0); len(out) < n; i++ {
		binary.BigEndian.PutUint64(ctr[:], i)
		sum := sha256.Sum256(append([]byte(label), ctr[:]...))
		out = append(out, sum[:]...)
	}
	return out[:n]
}

// generateGolden makes a new home in testdata, writes the golden tree
// through a real mount, unmounts cleanly and writes the manifest.
func generateGolden(t *testing.T, g golden) {
	if err := os.MkdirAll(string(g), 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	n := startMounted(t, g.home(), mnt)

	p := func(rel string) string { return filepath.Join(mnt, filepath.FromSlash(rel)) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	writeFile := func(rel string, data []byte, mode os.FileMode) {
		t.Helper()
		must(os.WriteFile(p(rel), data, mode))
		must(os.Chmod(p(rel), mode)) // not subject to the umask
	}

	// A small file with a fixed mtime (with nanoseconds), a hard link to
	// it and a symlink to it.
	writeFile("hello.txt", []byte("hello, peerdrive\n"), 0o644)
	must(os.Mkdir(p("dir"), 0o755))
	must(os.Chmod(p("dir"), 0o755))
	must(os.Link(p("hello.txt"), p("dir/hello-link.txt")))
	must(os.Symlink("dir/hello-link.txt", p("hello.symlink")))
	must(os.Symlink("does-not-exist", p("dir/dangling")))
	// More than one chunk of deterministic content: a full 1 MiB chunk and
	// a 4097-byte tail chunk.
	big := deterministic("peerdrive golden v1 big.bin", peerdrive.ChunkSize+4097)
	writeFile("big.bin", big, 0o644)
	// The same content again: stored once (dedup), referenced twice.
	writeFile("dir/big-copy.bin", big, 0o600)
	// A sparse file: data in chunk 0, nothing in chunk 1 (a hole: no map
	// entry), a few bytes in chunk 2, and zeros up to the size.
	f, err := os.OpenFile(p("sparse.bin"), os.O_CREATE|os.O_WRONLY, 0o644)
	must(err)
	_, err = f.WriteAt([]byte("start"), 0)
	must(err)
	_, err = f.WriteAt([]byte("end"), 2*peerdrive.ChunkSize+50)
	must(err)
	must(f.Truncate(2*peerdrive.ChunkSize + 100))
	must(f.Close())
	// An all-zero chunk written explicitly: stored as a hole too.
	writeFile("zeros.bin", make([]byte, peerdrive.ChunkSize), 0o644)
	writeFile("empty", nil, 0o644)
	writeFile("ünïcödé näme.txt", []byte("names are hashed, not stored in keys\n"), 0o644)
	// A private directory with a file and an executable.
	must(os.Mkdir(p("private"), 0o700))
	must(os.Chmod(p("private"), 0o700))
	writeFile("private/secret.txt", []byte("secret\n"), 0o600)
	writeFile("private/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	must(os.MkdirAll(p("dir/sub/deeper"), 0o755))
	// Extended attributes, one binary, one empty.
	must(unix.Setxattr(p("hello.txt"), "user.comment", []byte("golden"), 0))
	must(unix.Setxattr(p("private"), "user.bin", []byte{0, 1, 2, 0xff}, 0))
	must(unix.Setxattr(p("big.bin"), "user.empty", nil, 0))
	// Fixed mtime last: every change to the file above moved it.
	ts := []unix.Timespec{unix.NsecToTimespec(fixedMtime), unix.NsecToTimespec(fixedMtime)}
	must(unix.UtimesNano(p("hello.txt"), ts))
	must(unix.UtimesNanoAt(unix.AT_FDCWD, p("hello.symlink"), ts, unix.AT_SYMLINK_NOFOLLOW))

	entries := scanTree(t, mnt)
	stats := statsOf(n.n)
	stopMounted(t, n)

	// Files a running node leaves behind are not part of a stored home.
	for _, name := range []string{AddrsFile, ControlSocket} {
		if _, err := os.Lstat(filepath.Join(g.home(), name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left in the home after a clean close (%v)", name, err)
		}
	}

	// Badger preallocates its value-log discard statistics (store/DISCARD)
	// at 1 MiB, sparse, and never shrinks the file. This home deleted
	// nothing, so the file holds only zeros; badger recreates exactly that
	// when the file is missing. Drop it to keep the fixture small.
	discard := filepath.Join(g.home(), StoreDir, "DISCARD")
	b, err := os.ReadFile(discard)
	must(err)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatalf("%s holds discard statistics; keep it", discard)
	}
	must(os.Remove(discard))

	m := manifest{
		Comment: "The tree of home/ as a mount shows it; generated by TestGoldenHome -update. " +
			"Mode is octal permission bits; xattr values and sha256 are hex; mtime_ns is nanoseconds since the epoch.",
		FormatVersion: peerdrive.FormatVersion,
		Stats:         stats,
		Entries:       entries,
	}
	data, err := json.MarshalIndent(m, "", "  ")
	must(err)
	must(os.WriteFile(g.manifest(), append(data, '\n'), 0o644))
	must(os.WriteFile(g.readme(), []byte(readme(t, g, peerdrive.FormatVersion)), 0o644))
	t.Logf("golden home written; size:\n%s", homeSizes(t, g.home()))
}

// homeSizes lists the apparent and allocated size of every file of a home.
func homeSizes(t *testing.T, home string) string {
	var b strings.Builder
	var total, alloc int64
	filepath.WalkDir(home, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(home, path)
		fmt.Fprintf(&b, "%10d %10d %s\n", st.Size, st.Blocks*512, rel)
		total += st.Size
		alloc += st.Blocks * 512
		return nil
	})
	fmt.Fprintf(&b, "%10d %10d total (apparent, allocated)\n", total, alloc)
	return b.String()
}

func readme(t *testing.T, g golden, version int) string {
	v := strconv.Itoa(version)
	key, err := os.ReadFile(filepath.Join(g.home(), RecoveryKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var pub string
	for _, line := range strings.Split(string(key), "\n") {
		if v, ok := strings.CutPrefix(line, "# public key: "); ok {
			pub = v
		}
	}
	return `# TEST-ONLY KEY — NOT A SECRET

home/recovery-key.txt is a **published, test-only recovery key**: anyone
can read this drive with it. Never use this key, or any home copied from
here, for real data.

Public key: ` + pub + `

# Golden home, format version ` + v + `

home/ is a PeerDrive home made by format version ` + v + ` (docs/format.md):
recovery-key.txt, node.key, drive-key.age and the badger store in store/.
manifest.json lists the tree it holds as a mount shows it. The generator
removed store/DISCARD, badger's 1 MiB, all-zero value-log discard statistics
(badger recreates the file on open); everything else is as version ` + v + ` left it
after a clean unmount.

node.TestGoldenHome copies home/ to a temporary directory (with the modes
docs/format.md prescribes: git keeps none of them), mounts the copy
read-write and checks every manifest entry exactly: type, mode, owner, link
count, size, SHA-256 of the contents, symlink target, mtime in nanoseconds,
extended attributes and hard links. The fixture itself is never opened in
place.

The tree covers: a file with a fixed mtime (` + strconv.Itoa(fixedMtime) + ` ns), a hard
link and a symlink to it, a dangling symlink, a file of two chunks (1 MiB +
4097 bytes) and an identical copy (deduplicated to one stored chunk), a
sparse file (a missing map entry for a hole), a file of one all-zero chunk
(stored as a hole), an empty file, a non-ASCII name, a 0700 directory, an
executable, nested directories, and extended attributes (text, binary and
empty values).

Do not regenerate this fixture: it is what version ` + v + ` wrote, and every later
version must keep reading it (or migrate it). A new format version gets a
new golden-vN directory, made with

	go test ./node/ -run TestGoldenHome -update

which writes the fixture of the code's format version if it is missing.
`
}
