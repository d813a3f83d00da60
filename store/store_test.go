package store_test

import (
	"errors"
	"sync"
	"testing"

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
