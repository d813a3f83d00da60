package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Restore from anywhere (issue 4), with every node a separate process on 127.0.0.1: a fresh
// home with nothing but the recovery key and one peer address gets the whole tree back;
// `peerdrive sync` publishes snapshots that mount read-only as they were; a second machine
// with the same key cannot write while the first holds the lease, and takes over with
// --takeover once the first is gone; another key finds nothing and no peer sees plaintext.

// TestRestoreFromKey has machine A write a tree with every kind of file (see fullTree.write)
// through its mount (checked against the same tree written to the local disk) and sync it to
// 6 storage nodes with 4+2 erasure coding; a reference copy is taken with cp -a (see refCopy
// for why not rsync). A is SIGKILLed and its home deleted. Machine B, a fresh home made
// with `init --from-key` and the recovery key alone, mounts with one peer address: it must
// print restore progress, and `rsync -aHAXn --checksum --delete` from the reference must find
// nothing to change (contents, types, modes, owners, mtimes, hard links, xattrs, FIFOs,
// symlinks), every entry's mtime must match to the nanosecond, and every file must read back
// with the sha256 it was written with.
func TestRestoreFromKey(t *testing.T) {
	requireTool(t, "rsync")
	dir := t.TempDir()
	nodes := startServes(t, dir, 6, serveOpts{})
	homeA := initHome(t, filepath.Join(dir, "A"))
	mntA := newDir(t, dir, "mnt-a")
	dA := startMount(t, homeA, mntA, slices.Concat(shardFlags, bootstrapFlags(nodes))...)
	waitStatus(t, homeA, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })

	ft := newFullTree()
	src := newDir(t, dir, "src") // the same tree on the local disk, to check machine A too
	want := ft.write(t, src)
	ft.write(t, mntA)
	requireRsyncSame(t, src, mntA)
	if t.Failed() {
		t.FailNow() // machine A does not keep the tree: a restore cannot be judged
	}
	syncDrive(t, dA, 2*time.Minute)
	ref := filepath.Join(dir, "ref")
	refCopy(t, mntA, ref)
	requireRsyncSame(t, src, ref)
	refTree := manifest(t, ref, manifestOpts{})
	key := saveRecoveryKey(t, homeA, filepath.Join(dir, "recovery-key.txt"))

	// The house burns down.
	dA.Kill(t)
	lazyUnmount(t, mntA)
	if err := os.RemoveAll(homeA); err != nil {
		t.Fatal(err)
	}

	homeB := initFromKey(t, filepath.Join(dir, "B"), key)
	mntB := newDir(t, dir, "mnt-b")
	start := time.Now()
	dB := startMount(t, homeB, mntB, "--bootstrap", nodes[3].Addr) // one peer, and not the first
	t.Logf("restored and mounted in %v", time.Since(start).Round(time.Millisecond))
	if prog := logLines(dB.log, "peerdrive: restoring:"); len(prog) == 0 {
		t.Errorf("no `peerdrive: restoring: ...` progress on stderr while restoring; output:\n%s", dB.log)
	} else {
		t.Logf("restore progress:\n%s", strings.Join(prog, "\n"))
	}
	st := getDriveStatus(t, homeB)
	t.Logf("B: root_seq %d, writer %s, read-only reason %q", st.RootSeq, st.Writer, st.ReadOnlyReason)

	dropCaches(t)
	requireRsyncSame(t, ref, mntB)
	requireSameTree(t, "restored on B", refTree, manifest(t, mntB, manifestOpts{}))
	requireHardLinked(t, mntB, "shared/hard-a", "public/hard-b", "hard-c")
	dropCaches(t)
	requireAllBack(t, "restored on B", readBack(t, mntB, want, time.Minute), want)
	dB.Stop(t)
}

// TestSnapshots writes v1 (files, nested directories, a symlink, a directory with a
// nanosecond mtime), syncs, and keeps a copy; then changes a file, rewrites part of a big
// one, deletes one, adds some, renames a directory and changes a mode, and syncs again.
// `snapshots --json` must list both, newest first, with sensible figures. With the drive
// unmounted, `mount --snapshot` of the first must show v1 exactly and refuse every change with
// EROFS; the newest snapshot must show v2; the live drive, mounted again, shows v2 and writes.
func TestSnapshots(t *testing.T) {
	requireTool(t, "rsync")
	dir := t.TempDir()
	nodes := startServes(t, dir, 6, serveOpts{})
	flags := slices.Concat(shardFlags, bootstrapFlags(nodes))
	home := initHome(t, filepath.Join(dir, "home"))
	mnt := newDir(t, dir, "mnt")
	d := startMount(t, home, mnt, flags...)
	waitStatus(t, home, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })
	began := time.Now()

	v1 := map[string][]byte{
		"a.txt":                 []byte("version 1 of a\n"),
		"keep.txt":              randBytes(1000),
		"docs/b.txt":            randBytes(5000),    // deleted in v2
		"docs/old/c.bin":        randBytes(2 << 20), // its directory renamed in v2
		"docs/old/nested/d.txt": randBytes(300),
		"src/main.go":           []byte("package main\n\nfunc main() {}\n"),
		"big.bin":               randBytes(3<<20 + 5), // partly rewritten in v2
	}
	var v1Random int64 // bytes of random content, which nothing dedups
	for rel, data := range v1 {
		p := filepath.Join(mnt, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if len(data) >= 1000 {
			v1Random += int64(len(data))
		}
	}
	if err := os.Symlink("a.txt", filepath.Join(mnt, "latest")); err != nil {
		t.Fatal(err)
	}
	if err := lutimesNano(filepath.Join(mnt, "docs"), time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC)); err != nil {
		t.Fatal(err)
	}
	syncDrive(t, d, 2*time.Minute)
	snaps := listSnapshots(t, home)
	if len(snaps) == 0 {
		t.Fatalf("peerdrive snapshots --json lists nothing after a sync, want the snapshot it published")
	}
	first := snaps[0]
	t.Logf("after the first sync: %+v", snaps)
	ref1 := filepath.Join(dir, "ref1")
	refCopy(t, mnt, ref1)
	want1 := sumsOf(v1)

	// v2.
	if err := os.WriteFile(filepath.Join(mnt, "a.txt"), []byte("version 2 of a, a little longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	patch := randBytes(100_000)
	f, err := os.OpenFile(filepath.Join(mnt, "big.bin"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(patch, 1<<20+3); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "docs/b.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "docs/old"), filepath.Join(mnt, "docs/archive")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "docs/new-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for rel, data := range map[string][]byte{"new.txt": []byte("added in v2\n"), "docs/new-dir/e.bin": randBytes(70_000)} {
		if err := os.WriteFile(filepath.Join(mnt, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(mnt, "keep.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	syncDrive(t, d, 2*time.Minute)
	ended := time.Now()
	snaps = listSnapshots(t, home)
	t.Logf("after the second sync: %+v", snaps)
	if len(snaps) < 2 {
		t.Fatalf("peerdrive snapshots --json lists %d snapshots after two syncs, want at least 2: %+v", len(snaps), snaps)
	}
	newest := snaps[0]
	if newest.Seq <= first.Seq || newest.Time <= first.Time {
		t.Errorf("newest snapshot %+v is not after the first %+v", newest, first)
	}
	if i := slices.IndexFunc(snaps, func(s snapInfo) bool { return s.Seq == first.Seq }); i < 0 {
		t.Errorf("the first snapshot %d is no longer listed after the second sync: %+v", first.Seq, snaps)
	} else if snaps[i] != first {
		t.Errorf("the first snapshot changed: %+v, was %+v", snaps[i], first)
	}
	for _, s := range []snapInfo{first, newest} {
		if tm := time.Unix(0, s.Time); tm.Before(began.Add(-time.Second)) || tm.After(ended.Add(time.Second)) {
			t.Errorf("snapshot %d has time %v, want between %v and %v (the syncs)", s.Seq, tm, began, ended)
		}
		if s.Files < 7 || s.Bytes < uint64(v1Random) {
			t.Errorf("snapshot %d: %d files, %d bytes; want at least the 7 files and the %d bytes of random content written",
				s.Seq, s.Files, s.Bytes, v1Random)
		}
	}
	text := mustRun(t, cmdOpts{Timeout: 45 * time.Second}, pdBin, "--home", home, "snapshots")
	for _, s := range snaps {
		if !slices.ContainsFunc(strings.Split(text, "\n"), func(l string) bool {
			f := strings.Fields(l)
			return len(f) > 0 && f[0] == strconv.FormatUint(s.Seq, 10)
		}) {
			t.Errorf("peerdrive snapshots does not list ID %d on a line of its own:\n%s", s.Seq, text)
		}
	}
	if st := getDriveStatus(t, home); st.Snapshots != len(snaps) || st.RootSeq < newest.Seq {
		t.Errorf("status: snapshots %d, root_seq %d; want %d snapshots and root_seq ≥ %d: %s",
			st.Snapshots, st.RootSeq, len(snaps), newest.Seq, st.raw)
	}
	ref2 := filepath.Join(dir, "ref2")
	refCopy(t, mnt, ref2)
	want2 := map[string]fileSum{}
	if err := filepath.WalkDir(ref2, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			rel, _ := filepath.Rel(ref2, p)
			sum, err := hashFile(p)
			fi, _ := de.Info()
			want2[rel] = fileSum{Size: fi.Size(), Sum: sum}
			return err
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	d.Stop(t)

	// The first snapshot, read-only, as it was.
	snap := newDir(t, dir, "snap")
	ds := startMount(t, home, snap, append(slices.Clone(flags), "--snapshot", strconv.FormatUint(first.Seq, 10))...)
	dropCaches(t)
	requireRsyncSame(t, ref1, snap)
	requireSameTree(t, fmt.Sprintf("snapshot %d", first.Seq), manifest(t, ref1, manifestOpts{}), manifest(t, snap, manifestOpts{}))
	requireAllBack(t, fmt.Sprintf("snapshot %d", first.Seq), readBack(t, snap, want1, time.Minute), want1)
	requireReadOnly(t, fmt.Sprintf("mount --snapshot %d", first.Seq), snap, "a.txt", "docs")
	ds.Stop(t)

	// The newest snapshot is v2.
	ds = startMount(t, home, snap, append(slices.Clone(flags), "--snapshot", strconv.FormatUint(newest.Seq, 10))...)
	requireRsyncSame(t, ref2, snap)
	requireReadOnly(t, fmt.Sprintf("mount --snapshot %d", newest.Seq), snap, "new.txt", "docs/archive")
	ds.Stop(t)

	// The live drive still shows v2, and writes.
	d = startMount(t, home, mnt, flags...)
	requireRsyncSame(t, ref2, mnt)
	requireAllBack(t, "the live drive after the snapshot mounts", readBack(t, mnt, want2, time.Minute), want2)
	requireWritable(t, "the live drive after the snapshot mounts", mnt)
	d.Stop(t)
}

// sumsOf returns the sums of the files of a map of contents.
func sumsOf(files map[string][]byte) map[string]fileSum {
	m := map[string]fileSum{}
	for rel, data := range files {
		m[rel] = fileSum{Size: int64(len(data)), Sum: hashBytes(data)}
	}
	return m
}

// TestLease mounts the drive on machine A, which writes and syncs. Machine B, a fresh home
// with the same recovery key, mounts while A runs: it must come up read-only with a message
// saying so, refuse every change with EROFS, see everything A synced, and name A as the
// writer, while A stays writable. B stops; A writes and syncs again, and is SIGKILLed while
// its lease is still valid. B', another fresh home with the key, mounts with --takeover: it
// must be writable, have everything A synced, write and sync, and be the writer in status.
// A's machine comes back on its old home right after the takeover and again after B' synced:
// both times it must come up read-only, since B' holds the drive now.
func TestLease(t *testing.T) {
	requireTool(t, "rsync")
	dir := t.TempDir()
	nodes := startServes(t, dir, 6, serveOpts{})
	flags := slices.Concat(shardFlags, bootstrapFlags(nodes))
	homeA := initHome(t, filepath.Join(dir, "A"))
	mntA := newDir(t, dir, "mnt-a")
	dA := startMount(t, homeA, mntA, flags...)
	waitStatus(t, homeA, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })

	files := map[string][]byte{
		"one/a.txt":   []byte("written by A\n"),
		"one/big.bin": randBytes(4<<20 + 1),
		"two/b.bin":   randBytes(100_000),
	}
	writeFiles(t, mntA, files)
	syncDrive(t, dA, 2*time.Minute)
	stA := getDriveStatus(t, homeA)
	if stA.ReadOnlyReason != "" || stA.Writer != stA.PeerID || stA.RootSeq == 0 {
		t.Errorf("A after its sync: want writable, writer = its own peer ID, root_seq > 0: %s", stA.raw)
	}
	key := saveRecoveryKey(t, homeA, filepath.Join(dir, "recovery-key.txt"))

	// B, while A holds the lease.
	homeB := initFromKey(t, filepath.Join(dir, "B"), key)
	mntB := newDir(t, dir, "mnt-b")
	dB := startMount(t, homeB, mntB, append(slices.Clone(shardFlags), "--bootstrap", nodes[1].Addr)...)
	if lines := logLines(dB.log, "read-only"); len(lines) == 0 {
		t.Errorf("B mounted while A holds the lease without a line containing %q on stderr; output:\n%s", "read-only", dB.log)
	} else {
		t.Logf("B says: %s", lines[len(lines)-1])
	}
	stB := getDriveStatus(t, homeB)
	if stB.ReadOnlyReason == "" || stB.Writer != stA.PeerID || stB.PeerID == stA.PeerID {
		t.Errorf("B while A holds the lease: want read_only_reason set and writer = A's peer ID %s: %s", stA.PeerID, stB.raw)
	}
	requireReadOnly(t, "B while A holds the lease", mntB, "one/a.txt", "one")
	requireRsyncSame(t, mntA, mntB)
	wantA := sumsOf(files)
	requireAllBack(t, "B while A holds the lease", readBack(t, mntB, wantA, time.Minute), wantA)

	// A is still the writer.
	if st := getDriveStatus(t, homeA); st.ReadOnlyReason != "" || st.Writer != stA.PeerID {
		t.Errorf("A with B mounted: want writable, writer A %s: %s", stA.PeerID, st.raw)
	}
	dB.Stop(t)
	// A writes and syncs again once B is gone. (Not while B runs: B, a mount node, is a storage
	// peer too and would take shards of A's that nothing restores to full redundancy once it
	// stops; this test is about the lease.)
	more := map[string][]byte{"one/later.txt": []byte("written by A after B\n"), "three/c.bin": randBytes(1 << 20)}
	writeFiles(t, mntA, more)
	if err := os.Remove(filepath.Join(mntA, "two/b.bin")); err != nil {
		t.Fatal(err)
	}
	syncDrive(t, dA, 2*time.Minute)
	stA2 := getDriveStatus(t, homeA)
	if stA2.ReadOnlyReason != "" || stA2.Writer != stA.PeerID || stA2.RootSeq <= stA.RootSeq {
		t.Errorf("A after its second sync: want writable, writer A, root_seq > %d: %s", stA.RootSeq, stA2.raw)
	}
	ref := filepath.Join(dir, "ref")
	refCopy(t, mntA, ref)
	delete(wantA, "two/b.bin")
	for rel, s := range sumsOf(more) {
		wantA[rel] = s
	}

	// A's machine dies with its lease still valid.
	dA.Kill(t)
	lazyUnmount(t, mntA)
	killedAt := time.Now()

	homeB2 := initFromKey(t, filepath.Join(dir, "B2"), key)
	mntB2 := newDir(t, dir, "mnt-b2")
	dB2 := startMount(t, homeB2, mntB2, append(slices.Clone(shardFlags), "--takeover", "--bootstrap", nodes[4].Addr)...)
	t.Logf("B' mounted with --takeover %v after A was killed", time.Since(killedAt).Round(time.Millisecond))
	if lines := logLines(dB2.log, "read-only"); len(lines) > 0 {
		t.Errorf("B' with --takeover came up read-only: %s", strings.Join(lines, "\n"))
	}
	stB2 := getDriveStatus(t, homeB2)
	t.Logf("B' right after the takeover: writer %s (A is %s), root_seq %d", stB2.Writer, stA.PeerID, stB2.RootSeq)
	if stB2.ReadOnlyReason != "" {
		t.Errorf("B' with --takeover: read_only_reason %q, want writable: %s", stB2.ReadOnlyReason, stB2.raw)
	}
	// A's machine comes back on its old home right after the takeover, before B' has written
	// anything: B' holds the drive now, A must not write. (Before B' writes: a mount node is a
	// storage peer too, and shards of B''s on A would be under-replicated once A stops again.)
	requireComesBackReadOnly(t, homeA, mntA, flags, "right after the takeover")

	requireRsyncSame(t, ref, mntB2)
	requireAllBack(t, "B' after the takeover", readBack(t, mntB2, wantA, time.Minute), wantA)
	requireWritable(t, "B' after the takeover", mntB2)
	byB2 := map[string][]byte{"by-b2/x.bin": randBytes(300_000), "one/a.txt.b2": []byte("written by B'\n")}
	writeFiles(t, mntB2, byB2)
	syncDrive(t, dB2, 2*time.Minute)
	stB2 = getDriveStatus(t, homeB2)
	if stB2.Writer != stB2.PeerID || stB2.Writer == stA.PeerID || stB2.ReadOnlyReason != "" || stB2.RootSeq <= stA2.RootSeq {
		t.Errorf("B' after writing and syncing: want writer = B''s peer ID %s, writable, root_seq > A's %d: %s",
			stB2.PeerID, stA2.RootSeq, stB2.raw)
	}

	// A's machine comes back again, now that B' has written and published.
	requireComesBackReadOnly(t, homeA, mntA, flags, "after B' synced")

	// B' is unharmed and still writes.
	all := maps.Clone(wantA)
	maps.Copy(all, sumsOf(byB2))
	requireAllBack(t, "B' at the end", readBack(t, mntB2, all, time.Minute), all)
	requireWritable(t, "B' at the end", mntB2)
	dB2.Stop(t)
}

// requireComesBackReadOnly mounts the old home of a machine that was SIGKILLed and whose
// drive another machine has taken over: it must come up read-only, say so on stderr, and
// refuse every change with EROFS.
func requireComesBackReadOnly(t *testing.T, home, mnt string, flags []string, when string) {
	t.Helper()
	d := startMount(t, home, mnt, flags...)
	what := "the old writer back on its home " + when
	if lines := logLines(d.log, "read-only"); len(lines) == 0 {
		t.Errorf("%s: no line containing %q on stderr; output:\n%s", what, "read-only", d.log)
	}
	if st := getDriveStatus(t, home); st.ReadOnlyReason == "" {
		t.Errorf("%s: want read_only_reason set: %s", what, st.raw)
	} else {
		t.Logf("%s: %s", what, st.ReadOnlyReason)
	}
	// A file and a directory that exist there (a failure before may have changed the tree).
	var file, dir string
	_ = filepath.WalkDir(mnt, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() && file == "" {
			file, _ = filepath.Rel(mnt, p)
			dir = filepath.Dir(file)
		}
		return err
	})
	if file == "" {
		t.Errorf("%s: no file in the drive", what)
	} else {
		requireReadOnly(t, what, mnt, file, dir)
	}
	d.Stop(t)
}

// writeFiles writes files (paths relative to root) with their directories.
func writeFiles(t testing.TB, root string, files map[string][]byte) {
	t.Helper()
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForeignRoot syncs a drive whose names, contents, symlink target and xattrs carry a random
// marker to 6 storage nodes. A node with another recovery key (init --from-key with that key)
// must fail to restore, within its --restore-timeout of 10 s, with an error that mentions no
// root record, and mount nothing; neither its home nor any storage node's home may contain the
// marker: the tree is on the peers now, and they must not be able to read it.
func TestForeignRoot(t *testing.T) {
	dir := t.TempDir()
	nodes := startServes(t, dir, 6, serveOpts{})
	flags := slices.Concat(shardFlags, bootstrapFlags(nodes))
	home := initHome(t, filepath.Join(dir, "A"))
	mnt := newDir(t, dir, "mnt")
	d := startMount(t, home, mnt, flags...)
	waitStatus(t, home, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })

	var r [12]byte
	_, _ = rand.Read(r[:])
	marker := "pdroot-" + hex.EncodeToString(r[:])
	line := []byte(marker + " the quick brown fox jumps over the lazy dog\n")
	if err := os.MkdirAll(filepath.Join(mnt, "dir-"+marker, "sub-"+marker), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tiny":                     []byte(marker),
		"name-" + marker:           []byte("plain\n"),
		"dir-" + marker + "/lines": bytes.Repeat(line, 4096),
		"dir-" + marker + "/sub-" + marker + "/straddle": withMarkerAt(randBytes(3<<20), marker, 1<<20-len(marker)/2),
	}
	for i := range 100 { // small files, packed together, names in the tree
		files[fmt.Sprintf("dir-%s/small-%03d-%s", marker, i, marker)] = []byte(marker + "\n")
	}
	writeFiles(t, mnt, files)
	if err := os.Symlink("target-"+marker, filepath.Join(mnt, "link-"+marker)); err != nil {
		t.Fatal(err)
	}
	for _, x := range [][2]string{{"user.note", "value-" + marker}, {"user." + marker, "v"}} {
		if err := syscall.Setxattr(filepath.Join(mnt, "tiny"), x[0], []byte(x[1]), 0); err != nil {
			t.Fatalf("setxattr %s: %v", x[0], err)
		}
	}
	syncDrive(t, d, 2*time.Minute)
	for _, n := range nodes {
		requireNoMarker(t, n.Home, marker, n.Name+", after the sync that published the tree")
	}

	// Another recovery key.
	other := initHome(t, filepath.Join(dir, "other"))
	otherKey := saveRecoveryKey(t, other, filepath.Join(dir, "other-key.txt"))
	if err := os.RemoveAll(other); err != nil {
		t.Fatal(err)
	}
	homeC := initFromKey(t, filepath.Join(dir, "C"), otherKey)
	mntC := newDir(t, dir, "mnt-c")
	start := time.Now()
	dC, err := launchMount(t, homeC, mntC, slices.Concat(shardFlags, []string{"--restore-timeout", "10s"}, bootstrapFlags(nodes))...)
	took := time.Since(start)
	switch {
	case err == nil:
		t.Errorf("a node with another recovery key mounted in %v, want a refusal: it has no drive to restore; output:\n%s", took, dC.log)
		dC.Stop(t)
	case dC == nil || dC.Alive():
		t.Errorf("a node with another recovery key: %v", err)
	default:
		last := lastStderrLine(dC.log)
		t.Logf("another key: %v after %v: %s", dC.cmd.ProcessState, took.Round(time.Millisecond), last)
		if dC.cmd.ProcessState.Success() {
			t.Errorf("a node with another recovery key exited 0 without mounting, want non-zero; output:\n%s", dC.log)
		}
		if !strings.Contains(strings.ToLower(last), "no root record") {
			t.Errorf("a node with another recovery key: last line on stderr %q, want a reason mentioning %q; output:\n%s",
				last, "no root record", dC.log)
		}
		if took < 9*time.Second || took > 40*time.Second {
			t.Errorf("a node with another recovery key and --restore-timeout 10s gave up after %v, want about 10 s", took)
		}
	}
	if isFuseMounted(mntC) {
		t.Errorf("%s is mounted after the refused restore", mntC)
	}
	requireNoMarker(t, homeC, marker, "the home with another key, after its failed restore")
	for _, n := range nodes {
		requireNoMarker(t, n.Home, marker, n.Name+", at the end")
	}
	d.Stop(t)
}

// lastStderrLine returns the last line the process printed on stderr.
func lastStderrLine(l *logTail) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.partial[stderrStream]; len(p) > 0 {
		return string(p)
	}
	for _, line := range slices.Backward(l.lines) {
		if !strings.HasPrefix(line, "[stdout]") {
			return line
		}
	}
	return ""
}
