// Package integration drives the peerdrive binary as separate processes against real FUSE
// mounts and real clients (rsync, tar, git, restic), checking the CLI and durability contract
// of DESIGN.md §2–3: readiness, clean exit, one-line errors, fsync surviving SIGKILL, ENOSPC,
// and no plaintext under the home.
//
// The tests need root, /dev/fuse and the client tools; they fail rather than skip when any is
// missing. TestMain builds ./cmd/peerdrive once; set PEERDRIVE_BIN to test a prebuilt binary.
package integration
