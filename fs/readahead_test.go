package fs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadAheadPatterns: a file longer than the read-ahead and prefetch
// windows reads back right after a remount (cold) sequentially, backwards
// (each read starts a new run), and sequentially again while the file is
// overwritten in the middle.
func TestReadAheadPatterns(t *testing.T) {
	d := mountDrive(t, nil)
	const n = prefetchChunks + readAheadChunks + 3
	data := randBytes(11, n*mib+123)
	p := d.path("big")
	writeFile(t, p, data)
	d.remount()
	wantBytes(t, "sequential read after remount", readFile(t, p), data)
	d.remount()
	fd := open(t, p, unix.O_RDWR, 0)
	for i := int64(n); i >= 0; i-- {
		want := data[i*mib : min(int64(len(data)), (i+1)*mib)]
		wantBytes(t, "backwards", pread(t, fd, len(want), i*mib), want)
	}
	patch := randBytes(12, 3*mib)
	for off := int64(0); off < int64(len(data)); off += mib {
		if off == 5*mib {
			pwrite(t, fd, patch, 6*mib+7)
			copy(data[6*mib+7:], patch)
		}
		want := data[off:min(int64(len(data)), off+mib)]
		wantBytes(t, "sequential with an overwrite", pread(t, fd, len(want), off), want)
	}
	closeFD(t, fd)
	d.remount()
	wantBytes(t, "after overwrite and remount", readFile(t, p), data)
}
