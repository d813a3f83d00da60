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
