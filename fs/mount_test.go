package fs

// The FUSE test harness: every test here mounts a real drive (badger store
// in a temporary directory, fresh drive key) through the kernel, as
// go-fuse's own tests and gocryptfs's do. Tests must not exec programs with
// descriptors on the mount, nor mmap files on it (go-fuse fs/api.go,
// "Deadlocks").

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/tree"
)

var seedFlag = flag.Int64("seed", 0, "seed of the randomized operations test (0: from the clock)")

func TestMain(m *testing.M) {
	flag.Parse()
	// A process that serves a FUSE mount and uses it must never run out of
	// threads for the server: see go-fuse fs/api.go, "Deadlocks".
	if runtime.GOMAXPROCS(0) < 4 {
		runtime.GOMAXPROCS(4)
	}
	// Let the runtime open its own long-lived descriptors (netpoll) before
	// any test counts descriptors.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	// go-fuse's splice pool opens /dev/null once for the process's life.
	if p, err := splice.Get(); err == nil {
		splice.Done(p)
	}
	splice.ClearSplicePool()
	os.Exit(m.Run())
}

// --- logs ---

// logRec is one record logged through the drive's logger.
type logRec struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (r logRec) String() string {
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", r.Level, r.Msg)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, r.Attrs[k])
	}
	return b.String()
}

// logRecorder keeps everything the code under test logs. At the end of the
// test, a warning or error that the test did not declare with expect fails
// it (STYLE.md: in tests a warning is a failure).
type logRecorder struct {
	mu     sync.Mutex
	recs   []logRec
	expect []func(logRec) bool
}

// expectLog declares that records matching fn are part of the test.
func (l *logRecorder) expectLog(fn func(logRec) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expect = append(l.expect, fn)
}

// find returns the records that match fn.
func (l *logRecorder) find(fn func(logRec) bool) []logRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRec
	for _, r := range l.recs {
		if fn(r) {
			out = append(out, r)
		}
	}
	return out
}

// unexpected returns the warnings and errors nobody expected.
func (l *logRecorder) unexpected() []logRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRec
	for _, r := range l.recs {
		if r.Level < slog.LevelWarn {
			continue
		}
		if !slices.ContainsFunc(l.expect, func(fn func(logRec) bool) bool { return fn(r) }) {
			out = append(out, r)
		}
	}
	return out
}

func (l *logRecorder) handler() slog.Handler { return &recHandler{l: l} }

type recHandler struct {
	l      *logRecorder
	attrs  []slog.Attr
	prefix string
}

func (h *recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Resolve().String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[h.prefix+a.Key] = a.Value.Resolve().String()
		return true
	})
	h.l.mu.Lock()
	h.l.recs = append(h.l.recs, rec)
	h.l.mu.Unlock()
	return nil
}

func (h *recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		a.Key = h.prefix + a.Key
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *recHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

// --- descriptors ---

// openFDs lists the process's open descriptors with what they point at.
func openFDs(t testing.TB) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list descriptors: %v", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the descriptor ReadDir itself used
		}
		out[e.Name()] = target
	}
	return out
}

// checkFDs fails t if descriptors beyond those in before stay open. Some
// are closed by goroutines that are still winding down: it waits a little.
func checkFDs(t testing.TB, before map[string]string) {
	t.Helper()
	var extra []string
	for try := 0; try < 50; try++ {
		extra = extra[:0]
		for fd, target := range openFDs(t) {
			if before[fd] != target {
				extra = append(extra, fd+" -> "+target)
			}
		}
		if len(extra) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(extra)
	t.Errorf("descriptors leaked: %s", strings.Join(extra, ", "))
}

// --- the drive ---

// testDrive is a drive mounted for one test. Everything it opens is closed
// by t.Cleanup; remount stops and starts it on the same store and key.
type testDrive struct {
	t       testing.TB
	storeAt string
	mnt     string
	key     crypto.DriveKey
	opts    Options
	logs    *logRecorder
	// chunkCache, if set, bounds the tree's decrypted chunks (from the
	// next start or remount).
	chunkCache int

	db   *store.DB
	tree *tree.Tree
	fs   *FS
	srv  *fuse.Server
}

// mountDrive mounts a fresh, empty drive. opt, if not nil, adjusts the FS
// options.
func mountDrive(t testing.TB, opt func(*Options)) *testDrive {
	t.Helper()
	before := openFDs(t)
	key, err := crypto.NewDriveKey()
	if err != nil {
		t.Fatal(err)
	}
	d := &testDrive{t: t, storeAt: t.TempDir(), mnt: t.TempDir(), key: key, logs: &logRecorder{}}
	d.opts.Log = slog.New(d.logs.handler())
	if opt != nil {
		opt(&d.opts)
	}
	// Badger logs through the default logger.
	prev := slog.Default()
	slog.SetDefault(d.opts.Log)
	t.Cleanup(func() {
		d.stop()
		slog.SetDefault(prev)
		checkFDs(t, before)
		for _, r := range d.logs.unexpected() {
			t.Errorf("unexpected log: %s", r)
		}
	})
	d.start()
	return d
}

// start opens the store, the tree and the FS and mounts it; the mount is
// live when it returns.
func (d *testDrive) start() {
	t := d.t
	t.Helper()
	ctx := context.Background()
	var err error
	if d.db, err = store.Open(d.storeAt, store.Options{}); err != nil {
		t.Fatalf("open store: %v", err)
	}
	d.tree, err = tree.Open(ctx, d.db, crypto.DeriveKeys(d.key), tree.Options{
		RootUID: uint32(os.Getuid()), RootGID: uint32(os.Getgid()), Log: d.opts.Log, ChunkCacheBytes: d.chunkCache})
	if err != nil {
		d.db.Close()
		d.db = nil
		t.Fatalf("open tree: %v", err)
	}
	d.fs = New(d.tree, d.db, d.opts)
	if err := d.fs.PurgeOrphans(ctx); err != nil {
		t.Errorf("purge orphans: %v", err)
	}
	d.srv, err = d.fs.Mount(d.mnt)
	if err != nil {
		d.fs.Close(ctx)
		d.db.Close()
		d.fs, d.db = nil, nil
		t.Fatalf("mount: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.mnt, &st); err != nil {
		t.Fatalf("statfs %s: %v", d.mnt, err)
	}
	if st.Type != unix.FUSE_SUPER_MAGIC {
		t.Fatalf("%s: filesystem type %#x after mount, want FUSE", d.mnt, st.Type)
	}
}

// stop unmounts the drive and closes the FS and the store. It is safe to
// call twice.
func (d *testDrive) stop() {
	t := d.t
	t.Helper()
	if d.srv != nil {
		// A test that failed half-way may leave descriptors on the mount;
		// they would keep it busy, and closing them after the server is
		// gone would hang the process.
		for fd, target := range openFDs(t) {
			if target == d.mnt || strings.HasPrefix(target, d.mnt+"/") {
				t.Errorf("descriptor %s left open on the mount: %s", fd, target)
				if n, err := strconv.Atoi(fd); err == nil {
					unix.Close(n)
				}
			}
		}
		var st unix.Stat_t
		statErr := unix.Stat(d.mnt, &st)
		if err := d.srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", d.mnt, err)
			// Fail every pending and future request, then detach.
			if statErr == nil {
				abortConnection(t, st.Dev)
			}
			if err := unix.Unmount(d.mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", d.mnt, err)
			}
		}
		done := make(chan struct{})
		go func() { d.srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("FUSE server of %s did not stop", d.mnt)
		}
		d.srv = nil
		splice.ClearSplicePool() // pipes go-fuse keeps for the next request
	}
	if d.fs != nil {
		if err := d.fs.Close(context.Background()); err != nil {
			t.Errorf("close FS: %v", err)
		}
		d.mu(func(f *FS) {
			if len(f.files) != 0 {
				t.Errorf("%d open-file states left after unmount", len(f.files))
			}
		})
		if n := d.fs.bufBytes.Load(); n != 0 {
			t.Errorf("%d buffered bytes left after close", n)
		}
		d.fs = nil
	}
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
		d.db = nil
	}
	d.tree = nil
}

// abortConnection aborts the FUSE connection of the mount on device dev
// through fusectl, so that nothing waits for a server that is gone.
func abortConnection(t testing.TB, dev uint64) {
	const ctl = "/sys/fs/fuse/connections"
	const fusectlMagic = 0x65735543 // linux/magic.h FUSE_CTL_SUPER_MAGIC
	var st unix.Statfs_t
	if err := unix.Statfs(ctl, &st); err != nil || st.Type != fusectlMagic {
		if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
			t.Errorf("mount fusectl: %v", err)
			return
		}
		defer unix.Unmount(ctl, 0)
	}
	kdev := unix.Major(dev)<<20 | unix.Minor(dev) // the kernel's dev_t, as fusectl names it
	if err := os.WriteFile(fmt.Sprintf("%s/%d/abort", ctl, kdev), []byte("1"), 0o200); err != nil {
		t.Errorf("abort FUSE connection: %v", err)
	}
}

func (d *testDrive) mu(fn func(*FS)) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	fn(d.fs)
}

// remount unmounts and mounts the drive again on the same store and key.
func (d *testDrive) remount() {
	d.t.Helper()
	d.stop()
	d.start()
}

// path returns the path of name (slash separated) on the mount.
func (d *testDrive) path(name string) string { return filepath.Join(d.mnt, name) }

// --- small helpers ---

// errnoOf returns the errno in err, or 0.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// wantErrno fails t unless err carries errno want (0 means success).
func wantErrno(t testing.TB, what string, err error, want unix.Errno) {
	t.Helper()
	got := errnoOf(err)
	if err != nil && got == 0 {
		t.Fatalf("%s: %v, want errno %v", what, err, want)
	}
	if got != want {
		t.Fatalf("%s: errno %v (%v), want %v", what, got, err, want)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lstat(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHarness checks the harness itself: the mount is live, a remount keeps
// data, and an unexpected warning is noticed.
func TestHarness(t *testing.T) {
	d := mountDrive(t, nil)
	writeFile(t, d.path("a"), []byte("hello"))
	d.remount()
	if got := string(readFile(t, d.path("a"))); got != "hello" {
		t.Fatalf("after remount: %q", got)
	}
	d.opts.Log.Warn("harness self-check")
	if u := d.logs.unexpected(); len(u) != 1 || u[0].Msg != "harness self-check" {
		t.Fatalf("recorder saw %v", u)
	}
	d.logs.expectLog(func(r logRec) bool { return r.Msg == "harness self-check" })
}

const slogError = slog.LevelError

// flipChunkBit flips one bit of the stored (sealed) chunk id of a stopped
// drive: it finds the chunk's record under the 'C' prefix of the store and,
// since the sealed bytes live in pack files (docs/format.md, "Pack files"),
// flips a bit of those bytes in the pack. With inRecord it damages the
// record (the location) itself instead.
func flipChunkBit(t testing.TB, storeAt string, id peerdrive.ChunkID, inRecord bool) {
	t.Helper()
	db, err := store.Open(storeAt, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var key, val []byte
	err = db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{'C'}, nil, true, func(k, v []byte) (bool, error) {
			if bytes.Equal(k[1:], id[:]) {
				key, val = slices.Clone(k), slices.Clone(v)
				return false, nil
			}
			return true, nil
		})
	})
	if err != nil || key == nil {
		t.Fatalf("chunk %s not found in the store: %v", id.Short(), err)
	}
	if inRecord {
		val[15] ^= 0x01 // the low byte of the length of the sealed bytes (docs/format.md §9.1)
		if err := db.Update(0, func(tx *store.Txn) error { return tx.Set(key, val) }); err != nil {
			t.Fatal(err)
		}
		return
	}
	path, off, n, err := db.ChunkFile(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	at := off + int64(n/2)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// asUser runs fn on a thread whose filesystem uid and gid are uid and gid,
// as an unprivileged process would call; an error it returns fails t. The
// thread is thrown away after.
func asUser(t testing.TB, uid, gid int, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		// Leaving uid 0 this way also drops the capabilities that let
		// root bypass file modes.
		unix.Setfsgid(gid)
		unix.Setfsuid(uid)
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("as uid %d: %v", uid, err)
	}
}

// errnoIs returns an error unless err carries errno want.
func errnoIs(what string, err error, want unix.Errno) error {
	if got := errnoOf(err); got != want || (err != nil && got == 0) {
		return fmt.Errorf("%s: %v, want %v", what, err, want)
	}
	return nil
}
