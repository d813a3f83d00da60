package fs

import (
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkip lists posixtest cases the drive cannot pass, with the reason.
var posixSkip = map[string]string{
	// The test takes a write lock with F_SETLK and expects a second F_SETLK
	// from the same process, on another descriptor, to fail with EAGAIN.
	// POSIX record locks belong to the process, so Linux grants it (ext4
	// and tmpfs do too); only a FUSE server that implements locks itself
	// (go-fuse's loopback turns them into OFD locks) passes. The drive
	// leaves locking to the kernel (MountOptions.EnableLocks is off).
	"FcntlFlockLocksFile": "expects OFD-like conflicts between one process's POSIX locks; kernel-local locking grants them as ext4 does",
}

// TestPosix runs go-fuse's POSIX conformance suite, each case on a fresh
// mount.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			d := mountDrive(t, nil)
			posixtest.All[name](t, d.mnt)
		})
	}
}
