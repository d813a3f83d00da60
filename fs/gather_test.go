package fs

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSmallFilesGathered: small files closed in quick succession reach the
// store in the gatherer's batches. Files unlinked right after their close
// (their data possibly still waiting in a batch: the batch's commit fails
// for them and is retried file by file) leave nothing behind; every other
// file is back after a remount, and the drive's figures count exactly them.
func TestSmallFilesGathered(t *testing.T) {
	d := mountDrive(t, nil)
	const n = 300
	want := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("f%03d", i)
		data := randBytes(uint64(100+i), 1+i*97%(16<<10))
		writeFile(t, d.path(name), data)
		if i%3 == 0 {
			must(t, os.Remove(d.path(name)))
			continue
		}
		want[name] = data
	}
	// fsync of a file whose data waits in a batch returns once it is in.
	fd := open(t, d.path("f001"), unix.O_RDWR, 0)
	must(t, unix.Fsync(fd))
	closeFD(t, fd)
	// Once the sealers are done, every surviving file's data is in the
	// store: a batch that failed was retried file by file.
	d.fs.settle()
	if st := d.tree.Stats(); st.Chunks != uint64(len(want)) {
		t.Errorf("%d chunks committed, want %d", st.Chunks, len(want))
	}

	d.remount()
	ents, err := os.ReadDir(d.mnt)
	must(t, err)
	if len(ents) != len(want) {
		t.Errorf("%d entries after remount, want %d", len(ents), len(want))
	}
	for name, data := range want {
		wantBytes(t, name, readFile(t, d.path(name)), data)
	}
	st := d.tree.Stats()
	if st.Chunks != uint64(len(want)) || st.Inodes != uint64(len(want))+1 {
		t.Errorf("stats after remount: %d chunks, %d inodes; want %d and %d", st.Chunks, st.Inodes, len(want), len(want)+1)
	}
}
