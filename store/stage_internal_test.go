package store

import (
	"testing"
	"time"
)

// TestViewBetweenCommit: a commit of staged writes that comes between a
// view's snapshot and its reading of the stage waits for the view; else the
// view would see the writes in neither.
func TestViewBetweenCommit(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Stage(0, func(tx *Txn) error { return tx.Set([]byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	viewHook = func() {
		viewHook = nil
		go func() { committed <- db.UpdateStaged(0, nil) }()
		select {
		case err := <-committed:
			committed <- err
		case <-time.After(100 * time.Millisecond): // the commit waits for the view: right
		}
	}
	defer func() { viewHook = nil }()
	err = db.View(func(tx *Txn) error {
		v, err := tx.Get([]byte("k"))
		if err != nil || string(v) != "v" {
			t.Errorf("staged key read as %q, %v, with its commit between snapshot and stage", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if n := db.Staged(); n != 0 {
		t.Fatalf("%d keys staged after the commit", n)
	}
}
