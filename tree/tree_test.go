package tree

import (
	"context"
	"syscall"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

func openTestTree(t *testing.T, dir string) (*Tree, *store.DB) {
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
		tr.cache[inos[i]] = &entry{ino: peerdrive.Inode{Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(i + 1)}, dirty: true}
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
