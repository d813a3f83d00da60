package store_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/peerdrive/peerdrive/store"
)

// keys lists the keys with prefix as a View sees them, with their values.
func keys(t *testing.T, db *store.DB, prefix string) string {
	t.Helper()
	var out []string
	err := db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte(prefix), nil, true, func(k, v []byte) (bool, error) {
			out = append(out, string(k)+"="+string(v))
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func get(t *testing.T, db *store.DB, key string) string {
	t.Helper()
	var v []byte
	err := db.View(func(tx *store.Txn) error {
		var err error
		v, err = tx.Get([]byte(key))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func TestStagedWrites(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	set := func(tx *store.Txn, kv ...string) error {
		for i := 0; i < len(kv); i += 2 {
			if err := tx.Set([]byte(kv[i]), []byte(kv[i+1])); err != nil {
				return err
			}
		}
		return nil
	}
	if err := db.Update(0, func(tx *store.Txn) error { return set(tx, "a1", "x", "a3", "x", "a5", "x") }); err != nil {
		t.Fatal(err)
	}
	// Staged: one new key between committed ones, one changed, one deleted.
	if err := db.Stage(0, func(tx *store.Txn) error {
		if err := set(tx, "a2", "s", "a3", "s"); err != nil {
			return err
		}
		return tx.Delete([]byte("a5"))
	}); err != nil {
		t.Fatal(err)
	}
	// A later stage sees the earlier one, and its own writes.
	if err := db.Stage(0, func(tx *store.Txn) error {
		if v, err := tx.Get([]byte("a2")); err != nil || string(v) != "s" {
			return fmt.Errorf("staged a2 in a later stage: %q, %v", v, err)
		}
		if ok, err := tx.Has([]byte("a5")); err != nil || ok {
			return fmt.Errorf("deleted a5 in a later stage: %v, %v", ok, err)
		}
		if err := set(tx, "a4", "t", "b1", "t"); err != nil {
			return err
		}
		if v, err := tx.Get([]byte("a4")); err != nil || string(v) != "t" {
			return fmt.Errorf("own a4: %q, %v", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A stage that fails leaves nothing staged.
	boom := errors.New("boom")
	if err := db.Stage(0, func(tx *store.Txn) error { _ = set(tx, "a6", "u"); return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing stage: %v", err)
	}
	// Blobs are not staged.
	if err := db.Stage(0, func(tx *store.Txn) error { return tx.PutBlob([]byte("blob"), []byte("b")) }); !errors.Is(err, store.ErrNotStageable) {
		t.Fatalf("PutBlob in a stage: %v", err)
	}
	const want = "a1=x a2=s a3=s a4=t"
	if got := keys(t, db, "a"); got != want {
		t.Fatalf("view sees %q, want %q", got, want)
	}
	for k, v := range map[string]string{"a5": "<none>", "a6": "<none>", "b1": "t", "a3": "s"} {
		if got := get(t, db, k); got != v {
			t.Errorf("get %s = %q, want %q", k, got, v)
		}
	}
	// Iteration from a start key and stopping early.
	var from []string
	err = db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte("a"), []byte("a3"), false, func(k, _ []byte) (bool, error) {
			from = append(from, string(k))
			return len(from) < 2, nil
		})
	})
	if err != nil || strings.Join(from, " ") != "a3 a4" {
		t.Fatalf("iterate from a3, two keys: %v, %v", from, err)
	}
	if n := db.Staged(); n != 5 {
		t.Fatalf("staged keys %d, want 5", n)
	}
	// UpdateStaged commits the staged writes before its own.
	if err := db.UpdateStaged(0, func(tx *store.Txn) error {
		if v, err := tx.Get([]byte("a4")); err != nil || string(v) != "t" {
			return fmt.Errorf("a4 inside UpdateStaged: %q, %v", v, err)
		}
		return set(tx, "a4", "v")
	}); err != nil {
		t.Fatal(err)
	}
	if n := db.Staged(); n != 0 {
		t.Fatalf("staged keys after UpdateStaged: %d", n)
	}
	// Staged again, then closed: Close commits it.
	if err := db.Stage(0, func(tx *store.Txn) error { return set(tx, "a7", "w") }); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir)
	if got, want := keys(t, db, "a"), "a1=x a2=s a3=s a4=v a7=w"; got != want {
		t.Fatalf("after reopen %q, want %q", got, want)
	}
}

// TestStagedNotCommittedByUpdate: a plain Update leaves staged writes
// staged (only UpdateStaged commits them); Sync commits them.
func TestStagedNotCommittedByUpdate(t *testing.T) {
	db := openTemp(t)
	if err := db.Stage(0, func(tx *store.Txn) error { return tx.Set([]byte("k"), []byte("s")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(0, func(tx *store.Txn) error { return tx.Set([]byte("j"), []byte("u")) }); err != nil {
		t.Fatal(err)
	}
	if n := db.Staged(); n != 1 {
		t.Fatalf("staged keys %d after a plain Update, want 1", n)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := db.Staged(); n != 0 {
		t.Fatalf("staged keys %d after Sync, want 0", n)
	}
	if got := get(t, db, "k"); got != "s" {
		t.Fatalf("k after Sync: %q", got)
	}
}

// TestStagedSeenAcrossCommits: a key staged before a view starts is seen by
// the view, whether its commit (and its leaving the stage) comes before,
// during or after the view's start.
func TestStagedSeenAcrossCommits(t *testing.T) {
	db := openTemp(t)
	const n = 3000
	var staged atomic.Int64
	staged.Store(-1)
	done := make(chan error, 1)
	go func() {
		for i := range n {
			k := []byte(fmt.Sprintf("k%06d", i))
			if err := db.Stage(0, func(tx *store.Txn) error { return tx.Set(k, []byte("v")) }); err != nil {
				done <- err
				return
			}
			staged.Store(int64(i))
			if err := db.UpdateStaged(0, nil); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		i := staged.Load()
		if i < 0 {
			continue
		}
		k := fmt.Sprintf("k%06d", i)
		if got := get(t, db, k); got != "v" {
			t.Fatalf("%s, staged before the view began, read as %q", k, got)
		}
	}
}
