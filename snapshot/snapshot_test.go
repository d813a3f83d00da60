package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerdrive/peerdrive/store"
)

func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestDumpLoadRoundTrip(t *testing.T) {
	src := openStore(t)
	want := map[string][]byte{}
	for b := 0; b < 20; b++ {
		err := src.Update(0, func(tx *store.Txn) error {
			for i := b * 1000; i < (b+1)*1000; i++ {
				tag := DumpTags[i%len(DumpTags)]
				k := fmt.Appendf([]byte{tag}, "key-%06d", i)
				v := bytes.Repeat([]byte{byte(i)}, i%300)
				want[string(k)] = v
				if err := tx.Set(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := src.Update(0, func(tx *store.Txn) error {
		// Not part of a snapshot: the local cache, a storage node's holds.
		if err := tx.Set([]byte("Pshard"), []byte("x")); err != nil {
			return err
		}
		return tx.Set([]byte("Uqueued-chunk-id"), []byte{0, 0, 0, 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	pieces, queued, err := Dump(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || string(queued[0]) != "queued-chunk-id" {
		t.Fatalf("queued = %q", queued)
	}
	if len(pieces) < 2 {
		t.Fatalf("%d pieces: the dump was not cut", len(pieces))
	}
	for i, p := range pieces {
		if len(p) > pieceMax+64<<10 {
			t.Fatalf("piece %d is %d bytes", i, len(p))
		}
	}
	dst := openStore(t)
	n, err := Load(dst, pieces)
	if err != nil || n != len(want) {
		t.Fatalf("Load = %d, %v; want %d records", n, err, len(want))
	}
	err = dst.View(func(tx *store.Txn) error {
		for k, v := range want {
			got, err := tx.Get([]byte(k))
			if err != nil || !bytes.Equal(got, v) {
				return fmt.Errorf("key %q: %v", k, err)
			}
		}
		if ok, _ := tx.Has([]byte("Pshard")); ok {
			return errors.New("a storage node's record was copied")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A change in one place changes few pieces: the cut points follow keys.
	if err := src.Update(0, func(tx *store.Txn) error { return tx.Set([]byte("Ikey-000100"), []byte("changed")) }); err != nil {
		t.Fatal(err)
	}
	again, _, err := Dump(src)
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	old := map[string]bool{}
	for _, p := range pieces {
		old[string(p)] = true
	}
	for _, p := range again {
		if old[string(p)] {
			same++
		}
	}
	if same < len(again)-2 {
		t.Fatalf("one changed record changed %d of %d pieces", len(again)-same, len(again))
	}
}

func TestLoadRejectsForeignTags(t *testing.T) {
	piece := appendRecordBytes(nil, []byte("Cchunk"), []byte("location"))
	if _, err := Load(openStore(t), [][]byte{piece}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Load of a C record = %v, want ErrMalformed", err)
	}
}

func TestRetention(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var h []Info
	// One snapshot every 10 minutes for 40 days.
	for i := range 40 * 24 * 6 {
		h = append(h, Info{Seq: uint64(40*24*6 - i), Time: now.Add(-time.Duration(i) * 10 * time.Minute).UnixNano()})
	}
	got := DefaultRetention.Apply(h, now)
	if got[0].Seq != h[0].Seq {
		t.Fatalf("newest snapshot not kept")
	}
	// 10 newest, up to 24 more hourly and 30 daily, with overlaps.
	if len(got) < 30 || len(got) > 10+24+30+2 {
		t.Fatalf("kept %d snapshots", len(got))
	}
	oldest := time.Unix(0, got[len(got)-1].Time)
	if age := now.Sub(oldest); age > 31*24*time.Hour {
		t.Fatalf("kept a snapshot %v old", age)
	}
}

func FuzzRecords(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.piece"))
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add(appendRecordBytes(nil, []byte("Ik"), []byte("v")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Records(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var again []byte
		for _, r := range recs {
			again = appendRecordBytes(again, r.Key, r.Value)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("records do not re-encode to the piece")
		}
	})
}
