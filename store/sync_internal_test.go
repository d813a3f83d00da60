package store

import "testing"

// TestSyncSkipsWhenClean: Sync goes to the disk only if a transaction wrote
// something since the last one (and the first time after Open).
func TestSyncSkipsWhenClean(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	disk := 0
	syncHook = func() { disk++ }
	defer func() { syncHook = nil }()
	set := func(tx *Txn) error { return tx.Set([]byte("k"), []byte("v")) }
	for _, c := range []struct {
		name string
		do   func() error
		want int // disk syncs of the Sync that follows
	}{
		{"first after open", func() error { return nil }, 1},
		{"nothing since", func() error { return nil }, 0},
		{"a write", func() error { return db.Update(0, set) }, 1},
		{"a transaction that writes nothing", func() error { return db.Update(0, func(*Txn) error { return nil }) }, 0},
		{"a view", func() error { return db.View(func(tx *Txn) error { _, err := tx.Get([]byte("k")); return err }) }, 0},
		{"a staged write", func() error { return db.Stage(0, set) }, 1},
		{"a chunk", func() error {
			return db.Update(0, func(tx *Txn) error { return tx.PutBlob([]byte("b"), []byte("blob")) })
		}, 1},
		{"a failed transaction", func() error {
			db.Update(0, func(tx *Txn) error { tx.Set([]byte("x"), nil); return ErrNotFound })
			return nil
		}, 0},
	} {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		disk = 0
		if err := db.Sync(); err != nil {
			t.Fatalf("%s: sync: %v", c.name, err)
		}
		if disk != c.want {
			t.Errorf("after %s: Sync went to the disk %d times, want %d", c.name, disk, c.want)
		}
	}
}
