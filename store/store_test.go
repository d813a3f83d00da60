package store_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/store/storetest"
)

func openTemp(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// reopen closes db and opens the store in dir again, closed at the test's end.
func reopen(t *testing.T, db *store.DB, dir string) *store.DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(dir, store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestBlobsConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func(t *testing.T) store.Blobs
	}{
		{"badger", func(t *testing.T) store.Blobs { return openTemp(t).Blobs() }},
		{"memory", func(t *testing.T) store.Blobs { return store.NewMemory() }},
	} {
		t.Run(tc.name, func(t *testing.T) { storetest.Run(t, tc.new) })
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := store.Open(dir, store.Options{}); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestReserveRefusesWrites(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(1, func(tx *store.Txn) error { return tx.Set([]byte("k"), []byte("v")) })
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Update past the reserve = %v, want ErrNoSpace", err)
	}
}

func TestSyncSharedConcurrent(t *testing.T) {
	db := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.Update(8, func(tx *store.Txn) error { return tx.Set([]byte{'t', byte(i)}, []byte("v")) })
			if err == nil {
				err = db.SyncShared()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadAt: parts of a stored chunk at its location, whose size is the
// chunk's; a range past its end is ErrCorrupt, a missing chunk ErrNotFound.
func TestReadAt(t *testing.T) {
	db := openTemp(t)
	a := []byte("0123456789abcdef")
	var ida, missing peerdrive.ChunkID
	ida[0], missing[0] = 1, 3
	if err := db.Update(0, func(tx *store.Txn) error { return tx.PutChunk(ida, a) }); err != nil {
		t.Fatal(err)
	}
	err := db.View(func(tx *store.Txn) error {
		loc, err := tx.ChunkLoc(ida)
		if err != nil || loc.Size() != 16 {
			t.Fatalf("ChunkLoc: size %d, %v", loc.Size(), err)
		}
		for _, c := range []struct{ off, n int64 }{{0, 16}, {0, 0}, {3, 5}, {15, 1}, {16, 0}} {
			got, err := tx.ReadAt([]byte("x"), loc, c.off, c.n)
			if err != nil || string(got) != "x"+string(a[c.off:c.off+c.n]) {
				t.Errorf("[%d, +%d): %q, %v", c.off, c.n, got, err)
			}
		}
		for _, c := range []struct{ off, n int64 }{{0, 17}, {16, 1}, {-1, 2}, {2, -1}} {
			if _, err := tx.ReadAt(nil, loc, c.off, c.n); !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("[%d, +%d): %v, want ErrCorrupt", c.off, c.n, err)
			}
		}
		if _, err := tx.ChunkLoc(missing); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing chunk: %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAppendChunk: a chunk read onto the end of a buffer, into its spare
// capacity or beyond it; a missing chunk leaves the buffer as it was.
func TestAppendChunk(t *testing.T) {
	db := openTemp(t)
	a, b := []byte("sealed chunk a"), []byte("the other sealed chunk, b")
	var ida, idb, missing peerdrive.ChunkID
	ida[0], idb[0], missing[0] = 1, 2, 3
	if err := db.Update(0, func(tx *store.Txn) error {
		if err := tx.PutChunk(ida, a); err != nil {
			return err
		}
		return tx.PutChunk(idb, b)
	}); err != nil {
		t.Fatal(err)
	}
	err := db.View(func(tx *store.Txn) error {
		buf := make([]byte, 0, len(a)+3) // room for a, not for b
		buf = append(buf, "hdr"...)
		buf, _, err := tx.AppendChunk(buf[:3], ida)
		if err != nil {
			return err
		}
		if buf, _, err = tx.AppendChunk(buf, idb); err != nil {
			return err
		}
		if want := "hdr" + string(a) + string(b); string(buf) != want {
			t.Errorf("appended %q, want %q", buf, want)
		}
		before := len(buf)
		buf, _, err = tx.AppendChunk(buf, missing)
		if !errors.Is(err, store.ErrNotFound) || len(buf) != before {
			t.Errorf("missing chunk: %v, length %d (was %d)", err, len(buf), before)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
