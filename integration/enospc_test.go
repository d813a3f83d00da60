package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestENOSPC puts the home on a 600 MiB tmpfs and writes random data into the mount until
// the file system refuses. The refusal must be ENOSPC (not EIO, not a hang, not a crash); the
// daemon must keep serving, files fsync'd before must read back intact, and after deleting
// the filler the drive must unmount cleanly and mount again.
func TestENOSPC(t *testing.T) {
	small := t.TempDir()
	registerMountDir(small)
	mustRun(t, cmdOpts{Timeout: 30 * time.Second}, "mount", "-t", "tmpfs", "-o", "size=600m", "tmpfs", small)
	t.Cleanup(func() { // registered before the daemon's, so it runs after it
		if len(mountsAt(small, "tmpfs")) > 0 {
			if _, err := tryRun(cmdOpts{Timeout: 30 * time.Second}, "umount", small); err != nil {
				_, _ = tryRun(cmdOpts{Timeout: 30 * time.Second}, "umount", "-l", small)
			}
		}
	})
	home := filepath.Join(small, "home")
	mnt := t.TempDir()
	// The cache may be larger than the disk: the disk must be what runs out.
	d := startMount(t, home, mnt, "--cache-size", "4GiB")

	early := map[string][]byte{
		"early/one-kib":   randBytes(1 << 10),
		"early/one-mib":   randBytes(1 << 20),
		"early/eight-mib": randBytes(8 << 20),
	}
	if err := os.Mkdir(filepath.Join(mnt, "early"), 0o755); err != nil {
		t.Fatal(err)
	}
	for rel, data := range early {
		if err := writeSynced(filepath.Join(mnt, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{filepath.Join(mnt, "early"), mnt} {
		if err := syncDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(mnt, "fill"), 0o755); err != nil {
		t.Fatal(err)
	}

	var written atomic.Int64
	res := make(chan error, 1)
	go func() { res <- fill(filepath.Join(mnt, "fill"), &written, 3<<30) }()
	var err error
	select {
	case err = <-res:
	case <-time.After(2 * time.Minute):
		d.Kill(t) // unblocks the writer with ENOTCONN
		t.Fatalf("after writing %d MiB into a 600 MiB home, a write has blocked or crawled for 2 minutes without ENOSPC; peerdrive output:\n%s",
			written.Load()>>20, d.log)
	}
	switch {
	case err == nil:
		t.Fatalf("wrote %d MiB of random data into a home on a 600 MiB tmpfs without any error", written.Load()>>20)
	case !errors.Is(err, syscall.ENOSPC):
		t.Errorf("the disk filled after %d MiB with error %v (%s), want ENOSPC", written.Load()>>20, err, errnoName(err))
	default:
		t.Logf("ENOSPC after %d MiB: %v", written.Load()>>20, err)
	}
	if !d.Alive() {
		t.Fatalf("peerdrive died when the disk filled: %v; output:\n%s", d.cmd.ProcessState, d.log)
	}
	if !liveFuseMount(mnt) {
		t.Fatalf("the mount stopped answering when the disk filled; output:\n%s", d.log)
	}
	requireEarly(t, mnt, early, "with the disk full")
	if _, err := os.ReadDir(filepath.Join(mnt, "fill")); err != nil {
		t.Errorf("listing a directory with the disk full: %v", err)
	}

	if err := os.RemoveAll(filepath.Join(mnt, "fill")); err != nil {
		t.Errorf("deleting the filler with the disk full: %v", err)
	}
	requireEarly(t, mnt, early, "after deleting the filler")
	d.Stop(t)
	d = startMount(t, home, mnt, "--cache-size", "4GiB")
	requireEarly(t, mnt, early, "after remounting")
	if _, err := os.Lstat(filepath.Join(mnt, "fill")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted filler after remount: %v, want it gone", err)
	}
	d.Stop(t)
}

// fill writes 32 MiB files of fresh random data (nothing to deduplicate or compress) into
// dir until a create, write, fsync or close fails, or limit bytes are written; it returns
// that error, nil at the limit.
func fill(dir string, written *atomic.Int64, limit int64) error {
	for i := 0; written.Load() < limit; i++ {
		path := filepath.Join(dir, fmt.Sprintf("f%04d", i))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		for j := 0; j < 32; j++ {
			n, err := f.Write(randBytes(1 << 20))
			written.Add(int64(n))
			if err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
	}
	return nil
}

func requireEarly(t *testing.T, mnt string, early map[string][]byte, when string) {
	t.Helper()
	for rel, data := range early {
		got, err := os.ReadFile(filepath.Join(mnt, rel))
		switch {
		case err != nil:
			t.Errorf("%s: %s: %v", when, rel, err)
		case hashBytes(got) != hashBytes(data):
			t.Errorf("%s: %s: contents changed", when, rel)
		}
	}
}

// errnoName names the errno inside err, if any.
func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Sprintf("errno %d", int(errno))
	}
	return "no errno"
}
