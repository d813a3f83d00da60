package tree

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

func openTestTree(t testing.TB, dir string) (*Tree, *store.DB) {
	t.Helper()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Open(context.Background(), db, testKeys(), Options{})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return tr, db
}

// openTreeWithFile opens a tree in a new directory, with one empty regular
// file, f, in its root; the store closes when the test ends.
func openTreeWithFile(t testing.TB) (*Tree, peerdrive.Ino) {
	t.Helper()
	tr, db := openTestTree(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	return tr, newFile(t, tr, "f")
}

// newFile makes an empty regular file in the root of tr.
func newFile(t testing.TB, tr *Tree, name string) peerdrive.Ino {
	t.Helper()
	ino, _, err := tr.Mknode(context.Background(), peerdrive.RootIno, name, peerdrive.Inode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestFlushManyDirty: the attributes of more open files than one store
// transaction holds are all written, and none is lost on the way.
func TestFlushManyDirty(t *testing.T) {
	const n = 30_000 // more entries than a badger transaction takes at once
	ctx := context.Background()
	dir := t.TempDir()
	tr, db := openTestTree(t, dir)
	// Inodes changed in memory only, as Touch leaves them (made here
	// directly: Mknode for each would take long under the race detector).
	inos := make([]peerdrive.Ino, n)
	tr.mu.Lock()
	for i := range inos {
		inos[i] = tr.allocIno()
		e := &entry{ino: peerdrive.Inode{Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(i + 1)}}
		tr.cache[inos[i]] = e
		tr.markDirty(inos[i], e)
	}
	tr.mu.Unlock()
	if err := tr.Sync(ctx); err != nil {
		t.Fatalf("sync of %d dirty inodes: %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	tr, db = openTestTree(t, dir)
	defer db.Close()
	for i, ino := range inos {
		in, err := tr.Inode(ctx, ino)
		if err != nil || in.Size != uint64(i+1) {
			t.Fatalf("inode %d after reopening: size %d, %v; want %d", ino, in.Size, err, i+1)
		}
	}
}

// TestCommitFilesAllOrNothing: CommitFiles commits the chunks of several
// files in one transaction; when one file fails, none of them is
// committed, and the others commit on their own afterwards.
func TestCommitFilesAllOrNothing(t *testing.T) {
	ctx := context.Background()
	tr, db := openTestTree(t, t.TempDir())
	defer db.Close()
	mk := func(name string) peerdrive.Ino {
		ino, _, err := tr.Mknode(ctx, peerdrive.RootIno, name, peerdrive.Inode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			t.Fatal(err)
		}
		return ino
	}
	a, b := mk("a"), mk("b")
	dataA, dataB := []byte("contents of a"), []byte("contents of b")
	files := []FileChunks{
		{Ino: a, Chunks: []Sealed{tr.Seal(0, dataA)}},
		{Ino: 999_999, Chunks: []Sealed{tr.Seal(0, []byte("no such inode"))}},
		{Ino: b, Chunks: []Sealed{tr.Seal(0, dataB)}},
	}
	if err := tr.CommitFiles(ctx, files); err == nil {
		t.Fatal("CommitFiles with a missing inode succeeded")
	}
	for _, ino := range []peerdrive.Ino{a, b} {
		if _, ok, err := tr.ChunkRef(ctx, ino, 0); ok || err != nil {
			t.Errorf("inode %d after the failed batch: chunk 0 present %v, %v; want absent", ino, ok, err)
		}
	}
	if st := tr.Stats(); st.Chunks != 0 {
		t.Errorf("%d chunks counted after the failed batch, want 0", st.Chunks)
	}
	if err := tr.CommitFiles(ctx, []FileChunks{files[0], files[2]}); err != nil {
		t.Fatal(err)
	}
	for ino, want := range map[peerdrive.Ino][]byte{a: dataA, b: dataB} {
		ref, ok, err := tr.ChunkRef(ctx, ino, 0)
		if !ok || err != nil {
			t.Fatalf("inode %d: chunk 0 present %v, %v", ino, ok, err)
		}
		got, err := tr.ReadChunk(ctx, ref)
		if err != nil || string(got) != string(want) {
			t.Errorf("inode %d reads %q, %v; want %q", ino, got, err, want)
		}
	}
	if st := tr.Stats(); st.Chunks != 2 {
		t.Errorf("%d chunks counted, want 2", st.Chunks)
	}
}

// TestStagedCreates: a file's create is staged (no commit of its own),
// seen at once by lookups, listings and a second create of the name, and
// committed by the next change or by Sync; a directory commits at once.
func TestStagedCreates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tr, db := openTestTree(t, dir)
	root := peerdrive.RootIno
	f, _, err := tr.Mknode(ctx, root, "f", peerdrive.Inode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	if db.Staged() == 0 {
		t.Fatal("a file's create was committed, not staged")
	}
	if d, err := tr.Lookup(ctx, root, "f"); err != nil || d.Ino != f {
		t.Fatalf("lookup of a staged file: %v, %v", d, err)
	}
	if _, _, err := tr.Mknode(ctx, root, "f", peerdrive.Inode{Mode: syscall.S_IFREG | 0o644}); !errors.Is(err, ErrExist) {
		t.Fatalf("second create of a staged name: %v", err)
	}
	g, _, err := tr.Mknode(ctx, root, "g", peerdrive.Inode{Mode: syscall.S_IFLNK | 0o777, Target: "f"})
	if err != nil {
		t.Fatal(err)
	}
	names := func() string {
		ents, err := tr.ReadDir(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, e := range ents {
			s = append(s, e.Name)
		}
		slices.Sort(s)
		return strings.Join(s, " ")
	}
	if got := names(); got != "f g" {
		t.Fatalf("listing with staged creates: %q", got)
	}
	// A directory commits, and with it everything staged before.
	if _, _, err := tr.Mknode(ctx, root, "d", peerdrive.Inode{Mode: syscall.S_IFDIR | 0o755}); err != nil {
		t.Fatal(err)
	}
	if n := db.Staged(); n != 0 {
		t.Fatalf("%d keys still staged after a directory's create", n)
	}
	// Unlink of a staged file: its create and its removal land in order.
	if _, _, err := tr.Mknode(ctx, root, "h", peerdrive.Inode{Mode: syscall.S_IFREG | 0o600}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Unlink(ctx, root, "h"); err != nil {
		t.Fatalf("unlink of a staged file: %v", err)
	}
	if _, _, err := tr.Mknode(ctx, root, "i", peerdrive.Inode{Mode: syscall.S_IFREG | 0o600}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := db.Staged(); n != 0 {
		t.Fatalf("%d keys still staged after Sync", n)
	}
	// The timer commits what no change does.
	if _, _, err := tr.Mknode(ctx, root, "j", peerdrive.Inode{Mode: syscall.S_IFREG | 0o600}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for db.Staged() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a staged create was not committed by the timer")
		}
		time.Sleep(time.Millisecond)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	tr, db = openTestTree(t, dir)
	defer db.Close()
	if got := names(); got != "d f g i j" {
		t.Fatalf("listing after reopen: %q", got)
	}
	for name, ino := range map[string]peerdrive.Ino{"f": f, "g": g} {
		if d, err := tr.Lookup(ctx, root, name); err != nil || d.Ino != ino {
			t.Fatalf("%s after reopen: %v, %v", name, d, err)
		}
	}
}

// TestPurgeMany: one Purge takes several unlinked inodes in one
// transaction (fs batches them); if one of them cannot go (it has a link
// again), none goes.
func TestPurgeMany(t *testing.T) {
	ctx := context.Background()
	tr, db := openTestTree(t, t.TempDir())
	defer db.Close()
	var inos []peerdrive.Ino
	for _, name := range []string{"a", "b", "c", "kept"} {
		ino, _, err := tr.Mknode(ctx, peerdrive.RootIno, name, peerdrive.Inode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			t.Fatal(err)
		}
		inos = append(inos, ino)
	}
	for _, name := range []string{"a", "b", "c"} {
		if _, _, err := tr.Unlink(ctx, peerdrive.RootIno, name); err != nil {
			t.Fatal(err)
		}
	}
	before := tr.Stats().Inodes
	if err := tr.Purge(ctx, inos...); !errors.Is(err, ErrInvalid) {
		t.Fatalf("purge of a batch with a linked inode: %v, want ErrInvalid", err)
	}
	for _, ino := range inos {
		if _, err := tr.Inode(ctx, ino); err != nil {
			t.Fatalf("inode %d after a failed batch: %v", ino, err)
		}
	}
	if err := tr.Purge(ctx, inos[:3]...); err != nil {
		t.Fatal(err)
	}
	for _, ino := range inos[:3] {
		if _, err := tr.Inode(ctx, ino); !errors.Is(err, ErrNotFound) {
			t.Fatalf("inode %d after purge: %v, want ErrNotFound", ino, err)
		}
	}
	if got := tr.Stats().Inodes; got != before-3 {
		t.Fatalf("%d inodes after purging 3 of %d", got, before)
	}
}

// TestTouchUnchanged: a Touch whose fn changes nothing (a read that leaves
// atime alone) leaves the inode clean, for Flush to skip; one that changes
// it marks it.
func TestTouchUnchanged(t *testing.T) {
	ctx := context.Background()
	tr, ino := openTreeWithFile(t)
	if err := tr.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	dirty := func() bool {
		tr.mu.RLock()
		defer tr.mu.RUnlock()
		_, ok := tr.dirty[ino]
		return ok || tr.cache[ino].dirty
	}
	for _, c := range []struct {
		changed bool
	}{{false}, {true}} {
		if _, err := tr.Touch(ino, func(in *peerdrive.Inode) bool {
			if c.changed {
				in.Atime++
			}
			return c.changed
		}); err != nil {
			t.Fatal(err)
		}
		if got := dirty(); got != c.changed {
			t.Fatalf("Touch that changed %v: dirty %v", c.changed, got)
		}
	}
}

// TestFormatVersions: a store of an older format opens and is upgraded,
// unless opened read-only; one of an unknown format or chunk size is refused
// and left as it was.
func TestFormatVersions(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name      string
		rec       formatRecord
		readOnly  bool
		wantErr   error
		wantAfter int
	}{
		{"current", formatRecord{Version: peerdrive.FormatVersion, ChunkSize: peerdrive.ChunkSize}, false, nil, peerdrive.FormatVersion},
		{"v1 upgraded", formatRecord{Version: 1, ChunkSize: peerdrive.ChunkSize}, false, nil, peerdrive.FormatVersion},
		{"v1 read-only", formatRecord{Version: 1, ChunkSize: peerdrive.ChunkSize}, true, nil, 1},
		{"v2 upgraded", formatRecord{Version: 2, ChunkSize: peerdrive.ChunkSize}, false, nil, peerdrive.FormatVersion},
		{"v0", formatRecord{Version: 0, ChunkSize: peerdrive.ChunkSize}, false, ErrVersion, 0},
		{"newer", formatRecord{Version: peerdrive.FormatVersion + 1, ChunkSize: peerdrive.ChunkSize}, false, ErrVersion, peerdrive.FormatVersion + 1},
		{"chunk size", formatRecord{Version: peerdrive.FormatVersion, ChunkSize: 2 << 20}, false, ErrVersion, peerdrive.FormatVersion},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_, db := openTestTree(t, dir)
			defer db.Close()
			setFormat := func(tx *store.Txn) error {
				b, err := marshalPlain(&c.rec)
				if err != nil {
					return err
				}
				return tx.Set([]byte{tagFormat}, b)
			}
			if err := db.Update(0, setFormat); err != nil {
				t.Fatal(err)
			}
			tr, err := Open(ctx, db, testKeys(), Options{ReadOnly: c.readOnly})
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Open: err = %v, want %v", err, c.wantErr)
			}
			if err == nil {
				if _, err := tr.Lookup(ctx, peerdrive.RootIno, "nothing"); !errors.Is(err, ErrNotFound) {
					t.Errorf("lookup in the opened tree: %v", err)
				}
			}
			var f formatRecord
			err = db.View(func(tx *store.Txn) error {
				v, err := tx.Get([]byte{tagFormat})
				if err != nil {
					return err
				}
				return unmarshalPlain(v, &f)
			})
			if err != nil {
				t.Fatal(err)
			}
			if f.Version != c.wantAfter {
				t.Errorf("format version after Open = %d, want %d", f.Version, c.wantAfter)
			}
		})
	}
}

// TestDirSizes: a directory's size counts its entries as tmpfs does: 40
// empty, 20 more per entry, through every change of the namespace.
func TestDirSizes(t *testing.T) {
	ctx := context.Background()
	tr, db := openTestTree(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	mk := func(dir peerdrive.Ino, name string, mode uint32) peerdrive.Ino {
		t.Helper()
		ino, _, err := tr.Mknode(ctx, dir, name, peerdrive.Inode{Mode: mode | 0o755})
		if err != nil {
			t.Fatal(err)
		}
		return ino
	}
	size := func(ino peerdrive.Ino) uint64 {
		t.Helper()
		in, err := tr.Inode(ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		return in.Size
	}
	root := peerdrive.RootIno
	if got := size(root); got != 40 {
		t.Fatalf("new root: %d", got)
	}
	d := mk(root, "d", syscall.S_IFDIR)
	e := mk(root, "e", syscall.S_IFDIR)
	f := mk(d, "f", syscall.S_IFREG)
	mk(d, "g", syscall.S_IFREG)
	sub := mk(d, "sub", syscall.S_IFDIR)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		what  string
		do    func() error
		d, e  uint64
		other uint64 // sub's size
	}{
		{"made", func() error { return nil }, 100, 40, 40},
		{"link", func() error { _, err := tr.Link(ctx, e, "f2", f); return err }, 100, 60, 40},
		{"rename within", func() error { _, _, err := tr.Rename(ctx, d, "g", d, "g2", 0); return err }, 100, 60, 40},
		{"rename across", func() error { _, _, err := tr.Rename(ctx, d, "g2", e, "g", 0); return err }, 80, 80, 40},
		{"rename over", func() error { _, _, err := tr.Rename(ctx, e, "g", e, "f2", 0); return err }, 80, 60, 40},
		{"exchange", func() error { _, _, err := tr.Rename(ctx, d, "f", e, "f2", RenameExchange); return err }, 80, 60, 40},
		{"whiteout", func() error {
			_, _, _, err := tr.RenameWhiteout(ctx, d, "f", sub, "w", 0, peerdrive.Inode{Mode: syscall.S_IFCHR})
			return err
		}, 80, 60, 60},
		{"unlink", func() error { _, _, err := tr.Unlink(ctx, sub, "w"); return err }, 80, 60, 40},
		{"rmdir", func() error { _, err := tr.Rmdir(ctx, d, "sub"); return err }, 60, 60, 40},
	}
	for _, s := range steps {
		must(s.do())
		if gd, ge := size(d), size(e); gd != s.d || ge != s.e {
			t.Fatalf("%s: d %d, e %d; want %d, %d", s.what, gd, ge, s.d, s.e)
		}
		if s.what != "rmdir" {
			if gs := size(sub); gs != s.other {
				t.Fatalf("%s: sub %d, want %d", s.what, gs, s.other)
			}
		}
	}
	if got := size(root); got != 80 {
		t.Fatalf("root with d and e: %d", got)
	}
}
