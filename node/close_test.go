package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUnmountDuringSnapshot unmounts a drive with no peers while its
// periodic snapshot waits for uploads that cannot happen: the unmount
// must flush and return, not wait for the snapshot's timeout (it waited
// five minutes before the background work's context was cancelled on
// close).
func TestUnmountDuringSnapshot(t *testing.T) {
	requireFUSE(t)
	defer func(r, p, pt time.Duration) { renewEvery, publishEvery, publishTimeout = r, p, pt }(renewEvery, publishEvery, publishTimeout)
	renewEvery, publishEvery, publishTimeout = 10*time.Millisecond, 10*time.Millisecond, time.Hour

	home := filepath.Join(t.TempDir(), "home")
	if err := Init(home, ""); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	m := startMounted(t, home, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("waits for peers"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The next tick finds the stats changed and starts a snapshot, which
	// holds pubMu while it waits for the upload of f's chunk to peers that
	// do not exist.
	deadline := time.Now().Add(10 * time.Second)
	for m.n.pubMu.TryLock() {
		m.n.pubMu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no periodic snapshot started in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	done := make(chan error, 1)
	go func() { done <- m.stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("unmount and close: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("unmount and close still waiting after a minute")
	}
}
