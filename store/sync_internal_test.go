package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

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

// TestSyncOlderMemtableLogs: a Sync made while badger holds a full
// memtable not yet written to a table syncs that memtable's log too (and
// never the current one's, which badger's own Sync does).
func TestSyncOlderMemtableLogs(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var synced []int
	newest := 0
	memSyncHook = func(fid int, current bool) {
		if current {
			newest = max(newest, fid)
		} else {
			synced = append(synced, fid)
		}
	}
	defer func() { memSyncHook = nil }()
	val := make([]byte, 1000)
	for i := 0; i < 100 && len(synced) == 0; i++ {
		err := db.Update(0, func(tx *Txn) error {
			for j := range 1000 {
				if err := tx.Set(fmt.Appendf(nil, "k%03d%04d", i, j), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if len(synced) == 0 {
		t.Skip("badger wrote every full memtable to a table before a Sync could see it")
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	for _, n := range names {
		var fid int
		fmt.Sscanf(filepath.Base(n), "%d.mem", &fid)
		newest = max(newest, fid)
	}
	for _, fid := range synced {
		if fid >= newest {
			t.Fatalf("synced the log of memtable %d, the newest is %d", fid, newest)
		}
	}
}

// TestSyncOlderLogsPicks: every memtable log but the highest-numbered is
// synced, by number (badger's names grow past five digits), and other
// files are left alone.
func TestSyncOlderLogsPicks(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"00007.mem", "99999.mem", "100000.mem", "00012.vlog", "000003.sst", "MANIFEST", "x.mem.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("log"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var synced []int
	memSyncHook = func(fid int, current bool) {
		if current {
			fid = -fid
		}
		synced = append(synced, fid)
	}
	defer func() { memSyncHook = nil }()
	db := &DB{dir: dir}
	defer func() {
		if db.memFile != nil {
			db.memFile.Close()
		}
	}()
	sync := func(want string) {
		t.Helper()
		synced = nil
		if err := db.syncLogs(false); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(synced) != want {
			t.Fatalf("synced %v, want %v", synced, want)
		}
	}
	sync("[7 99999]")
	sync("[]") // no newer log since: not even a directory read
	// The next memtable's log appears; an older one was written to a
	// table meanwhile and is gone.
	if err := os.WriteFile(filepath.Join(dir, "100001.mem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "00007.mem")); err != nil {
		t.Fatal(err)
	}
	sync("[99999 100000]")
	// With the current log (a Sync whose writes all went to the logs).
	synced = nil
	if err := db.syncLogs(true); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(synced) != "[-100001]" {
		t.Fatalf("synced %v, want [-100001]", synced)
	}
}

// TestSyncThroughBadger: a Sync goes through badger's own (which also
// syncs the value log) after a write of a value that goes to the value log,
// staged or not, and the first time after Open; otherwise it syncs the
// memtable logs alone.
func TestSyncThroughBadger(t *testing.T) {
	db, err := Open(t.TempDir(), Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	badger, logs := 0, 0
	badgerSyncHook = func() { badger++ }
	memSyncHook = func(fid int, current bool) {
		if current {
			logs++
		}
	}
	defer func() { badgerSyncHook, memSyncHook = nil, nil }()
	small, large := make([]byte, 100), make([]byte, valueThreshold)
	set := func(v []byte) func() error {
		return func() error { return db.Update(0, func(tx *Txn) error { return tx.Set([]byte("k"), v) }) }
	}
	for _, c := range []struct {
		name   string
		do     func() error
		badger bool
	}{
		{"first after open", func() error { return nil }, true},
		{"a small value", set(small), false},
		{"a large value", set(large), true},
		{"a small one again", set(small), false},
		{"a large staged value", func() error {
			return db.Stage(0, func(tx *Txn) error { return tx.Set([]byte("s"), large) })
		}, true},
		{"a small staged value", func() error {
			return db.Stage(0, func(tx *Txn) error { return tx.Set([]byte("s"), small) })
		}, false},
	} {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		badger, logs = 0, 0
		if err := db.Sync(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (badger == 1) != c.badger || (logs == 1) == c.badger || badger+logs != 1 {
			t.Fatalf("%s: %d syncs through badger, %d of the current log alone; want through badger %v", c.name, badger, logs, c.badger)
		}
	}
}
