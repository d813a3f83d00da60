package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The peer network, with every node a separate process on 127.0.0.1 (issue 3): erasure-coded
// shards survive lost storage nodes and a lost mount machine; too many lost nodes give EIO,
// never wrong bytes; no plaintext reaches a peer; the demo cleans up after itself.

const (
	cacheSlack = 1 << 20 // what cached_bytes may exceed --cache-size by, at most
	// defaultTestMB is the data TestPeersSurvive writes unless PEERDRIVE_TEST_MB says otherwise;
	// the other tests write a fifth of it.
	defaultTestMB = 200
)

// shardFlags are a mount's erasure-coding flags for 4 data and 2 parity shards.
var shardFlags = []string{"--data-shards", "4", "--parity-shards", "2"}

// TestPeersSurvive runs 8 storage nodes and a mount with 4+2 erasure coding, writes a mix of
// files ($PEERDRIVE_TEST_MB, default 200 MB) and syncs. It then remounts with a 4 MiB cache
// (so the data must come from the peers), SIGKILLs the 2 nodes holding the most, and reads
// everything back byte-identical. After SIGKILLing a third, some segments have fewer than 4
// shards left: reads of the files in them must fail with EIO, every other file must read back
// identical, no read may return wrong bytes, and status must count lost chunks.
func TestPeersSurvive(t *testing.T) {
	mb := envMB(t, "PEERDRIVE_TEST_MB", defaultTestMB)
	dir := t.TempDir()
	nodes := startServes(t, dir, 8, serveOpts{})
	home := initHome(t, filepath.Join(dir, "home"))
	mnt := t.TempDir()
	// The quota is about contribution × 4/6 × 0.97 (DESIGN.md §1): contribute twice the data.
	contribute := fmt.Sprintf("%dMiB", max(256, 2*mb))
	flags := slices.Concat(shardFlags, []string{"--contribute", contribute}, bootstrapFlags(nodes))
	d := startMount(t, home, mnt, flags...)
	waitStatus(t, home, "8 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 8 })

	want := writeMixedTree(t, mnt, mixedSizes(mb<<20))
	syncDrive(t, d, 4*time.Minute)
	pollStatus(t, home, "4+2 shards, peer_loss_tolerated ≥ 2 over 8 peers", 10*time.Second, func(st nodeStatus) bool {
		return st.DataShards == 4 && st.ParityShards == 2 && st.PeerLossTolerated >= 2
	})
	// Every peer that took shards told us its space in its PUT replies.
	st := mustStatus(t, home)
	known := 0
	for _, p := range st.StoragePeers {
		if p.CapacityBytes > 0 && p.UsedBytes > 0 && p.Healthy && p.LatencyMS > 0 {
			known++
		}
	}
	if len(st.StoragePeers) != 8 || known != 8 {
		t.Errorf("storage_peers: %d rows, %d with space, latency and health known; want 8 of 8; status: %s", len(st.StoragePeers), known, st.raw)
	}
	d.Stop(t)

	// A cache far smaller than the data: once the synced chunks are evicted, reads go to the peers.
	d = startMount(t, home, mnt, append(slices.Clone(flags), "--cache-size", "4MiB")...)
	waitStatus(t, home, "cached_bytes ≤ 4 MiB + slack with --cache-size 4MiB", 60*time.Second,
		func(st nodeStatus) bool { return st.CachedBytes <= 4<<20+cacheSlack })
	waitStatus(t, home, "8 storage peers connected after the restart", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 8 })

	victims := byHeldBytes(t, nodes)
	for _, n := range victims[:2] {
		t.Logf("SIGKILL %s", n.Name)
		n.Kill(t)
	}
	dropCaches(t)
	res := readBack(t, mnt, want, 2*time.Minute)
	requireAllBack(t, "2 of 8 storage nodes killed, 4 MiB cache", res, want)
	if st := mustStatus(t, home); st.CachedBytes > 4<<20+cacheSlack {
		t.Errorf("cached_bytes %d after reading everything back with --cache-size 4MiB; status: %s", st.CachedBytes, st.raw)
	}
	if t.Failed() {
		t.FailNow()
	}

	// One more node gone: segments that had a shard on each of the three have 3 of 6 left.
	t.Logf("SIGKILL %s", victims[2].Name)
	victims[2].Kill(t)
	pollStatus(t, home, "lost_chunks > 0 with 3 of 8 storage nodes killed", 30*time.Second,
		func(st nodeStatus) bool { return st.LostChunks > 0 })
	dropCaches(t)
	res = readBack(t, mnt, want, 2*time.Minute)
	t.Logf("3 of 8 storage nodes killed: read %d files in %v: %d identical, %d EIO, %d wrong, %d other errors",
		len(want), res.Took.Round(time.Millisecond), res.OK, len(res.EIO), len(res.Wrong), len(res.Failed))
	if len(res.Wrong) > 0 {
		t.Errorf("3 of 8 storage nodes killed: reads returned wrong bytes, want EIO or the right bytes: %s", list(res.Wrong))
	}
	if len(res.Failed) > 0 || len(res.Missing) > 0 || len(res.Extra) > 0 {
		t.Errorf("3 of 8 storage nodes killed: want EIO or the right bytes; other errors: %s\nmissing: %s\nunexpected: %s",
			list(res.Failed), list(res.Missing), list(res.Extra))
	}
	if len(res.EIO) == 0 {
		t.Errorf("3 of 8 storage nodes killed (%s) with a 4 MiB cache: every one of %d files read back, want EIO on the files of segments with fewer than 4 shards left; status: %s",
			strings.Join(nodeNames(victims[:3]), ", "), len(want), mustStatus(t, home).raw)
	} else {
		t.Logf("EIO on %s", list(res.EIO))
	}
	d.Stop(t) // lost chunks or not, the drive unmounts cleanly
}

// byHeldBytes orders the nodes by the shard bytes they hold for others, most first, as their
// status tells.
func byHeldBytes(t testing.TB, nodes []*ServeNode) []*ServeNode {
	t.Helper()
	held := map[*ServeNode]int64{}
	var desc []string
	for _, n := range nodes {
		st, err := getStatus(n.Home)
		if err != nil {
			t.Errorf("status of storage node %s: %v", n.Name, err)
			continue
		}
		held[n] = st.HeldForPeersBytes
		desc = append(desc, n.Name+": "+humanBytes(st.HeldForPeersBytes))
	}
	t.Logf("held for peers: %s", strings.Join(desc, ", "))
	out := slices.Clone(nodes)
	slices.SortStableFunc(out, func(a, b *ServeNode) int { return int(min(max(held[b]-held[a], -1), 1)) })
	return out
}

func nodeNames(nodes []*ServeNode) []string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.Name)
	}
	return s
}

// TestMountMachineDies syncs a mix of files to 6 storage nodes, then loses the mount's
// machine: SIGKILL, a stale mount lazily detached, and a restart on the same home with a
// 1 MiB cache, so that the cached chunks are dropped. With the page cache dropped too,
// everything must read back byte-identical from the peers.
func TestMountMachineDies(t *testing.T) {
	mb := max(8, envMB(t, "PEERDRIVE_TEST_MB", defaultTestMB)/5)
	dir := t.TempDir()
	nodes := startServes(t, dir, 6, serveOpts{})
	home := initHome(t, filepath.Join(dir, "home"))
	mnt := t.TempDir()
	flags := slices.Concat(shardFlags, bootstrapFlags(nodes))
	d := startMount(t, home, mnt, flags...)
	waitStatus(t, home, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })
	want := writeMixedTree(t, mnt, mixedSizes(mb<<20))
	syncDrive(t, d, 2*time.Minute)

	d.Kill(t)
	lazyUnmount(t, mnt)
	d = startMount(t, home, mnt, append(slices.Clone(flags), "--cache-size", "1MiB")...)
	st := waitStatus(t, home, "cached_bytes ≤ 1 MiB + slack with --cache-size 1MiB", 60*time.Second,
		func(st nodeStatus) bool { return st.CachedBytes <= 1<<20+cacheSlack })
	if st.PendingUploadBytes != 0 || st.LostChunks != 0 {
		t.Errorf("after the crash: pending_upload_bytes %d, lost_chunks %d, want 0 (everything was synced); status: %s",
			st.PendingUploadBytes, st.LostChunks, st.raw)
	}
	waitStatus(t, home, "6 storage peers connected after the restart", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })
	dropCaches(t)
	res := readBack(t, mnt, want, 2*time.Minute)
	requireAllBack(t, "after the mount's machine died, 1 MiB cache", res, want)

	// And it did come from the peers: with all of them gone, the big file cannot be read.
	for _, n := range nodes {
		n.Kill(t)
	}
	dropCaches(t)
	sum, size, err := hashFileTimeout(filepath.Join(mnt, "big.bin"), 2*time.Minute)
	switch {
	case err == nil && sum == want["big.bin"].Sum:
		t.Errorf("big.bin (%d bytes) read back with every storage node killed and a 1 MiB cache: the cache bound was not kept", size)
	case err == nil:
		t.Errorf("big.bin read back with every storage node killed: %d bytes with sha256 %s, want EIO, never wrong bytes", size, sum[:16])
	case !errors.Is(err, syscall.EIO):
		t.Errorf("big.bin with every storage node killed: %v, want EIO", err)
	}
	d.Stop(t)
}

// TestNoPlaintextOnPeers writes a random marker into file contents of several sizes and into
// file, directory and symlink names, syncs to 6 storage nodes, and searches every name and
// byte under every storage node's home for it, while they run and again after they stopped.
func TestNoPlaintextOnPeers(t *testing.T) {
	dir := t.TempDir()
	nodes := startServes(t, dir, 6, serveOpts{})
	home := initHome(t, filepath.Join(dir, "home"))
	mnt := t.TempDir()
	d := startMount(t, home, mnt, slices.Concat(shardFlags, bootstrapFlags(nodes))...)
	waitStatus(t, home, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })

	var r [12]byte
	_, _ = rand.Read(r[:])
	marker := "pdpeer-" + hex.EncodeToString(r[:])
	line := []byte(marker + " the quick brown fox jumps over the lazy dog\n")
	if err := os.MkdirAll(filepath.Join(mnt, "dir-"+marker, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tiny":                            []byte(marker),
		"name-" + marker:                  []byte("plain\n"),
		"kib":                             withMarkerAt(randBytes(4096), marker, 1000),
		"dir-" + marker + "/lines":        bytes.Repeat(line, 4096),
		"dir-" + marker + "/sub/ten-mb":   bytes.Repeat(line, 10<<20/len(line)+1),
		"dir-" + marker + "/sub/straddle": withMarkerAt(randBytes(9<<20), marker, 4<<20-len(marker)/2),
	}
	var total int64
	for rel, data := range files {
		if err := os.WriteFile(filepath.Join(mnt, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(len(data))
	}
	for i := range 200 { // small files, which are packed together
		if err := os.WriteFile(filepath.Join(mnt, "dir-"+marker, "small-"+string(rune('a'+i%26))+hex.EncodeToString([]byte{byte(i)})),
			[]byte(marker+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("target-"+marker, filepath.Join(mnt, "link-"+marker)); err != nil {
		t.Fatal(err)
	}
	syncDrive(t, d, 2*time.Minute)

	var held int64
	for _, n := range nodes {
		held += mustStatus(t, n.Home).HeldForPeersBytes
		requireNoMarker(t, n.Home, marker, n.Name+", running, after sync")
	}
	if held < total {
		t.Errorf("the storage nodes hold %d bytes for peers, want at least the %d bytes written (4+2 shards of them)", held, total)
	}
	d.Stop(t)
	// Each way of stopping a storage node must exit 0: the shutdown command, SIGTERM, SIGINT.
	for i, n := range nodes {
		switch i % 3 {
		case 0:
			mustRun(t, cmdOpts{Timeout: 30 * time.Second}, pdBin, "--home", n.Home, "shutdown")
			n.WaitExit0(t, "peerdrive shutdown")
		case 1:
			n.StopSignal(t, syscall.SIGTERM)
		case 2:
			n.StopSignal(t, syscall.SIGINT)
		}
		requireNoMarker(t, n.Home, marker, n.Name+", stopped")
	}

	// The marker did go in: it comes back out, from the local cache.
	d = startMount(t, home, mnt, "--data-shards", "4", "--parity-shards", "2")
	for rel, data := range files {
		if got := readFile(t, filepath.Join(mnt, rel)); !bytes.Equal(got, data) {
			t.Errorf("%s: contents differ after remount", rel)
		}
	}
	d.Stop(t)
}

// TestDemo runs `peerdrive demo DIR --peers 6` with its own TMPDIR: it must mount, a 10 MB
// file must round-trip and sync to the 6 peers, and SIGINT must unmount it and exit 0 within
// 30 s, leaving nothing in TMPDIR.
func TestDemo(t *testing.T) {
	tmp := t.TempDir()
	mnt := filepath.Join(t.TempDir(), "demo")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := launchDaemon(t, "", mnt, []string{pdBin, "demo", mnt, "--peers", "6"}, []string{"TMPDIR=" + tmp})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(10_000_000)
	if err := os.WriteFile(filepath.Join(mnt, "x"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	if got := readFile(t, filepath.Join(mnt, "x")); !bytes.Equal(got, data) {
		t.Fatalf("10 MB did not round-trip through the demo drive: read %d bytes, sha256 %s, want %s",
			len(got), hashBytes(got)[:16], hashBytes(data)[:16])
	}

	// The drive's home is in TMPDIR; through it, the drive must sync to its 6 peers.
	homes, _ := filepath.Glob(filepath.Join(tmp, "*", "drive"))
	if len(homes) != 1 {
		entries, _ := os.ReadDir(tmp)
		t.Errorf("want one */drive home in the demo's TMPDIR %s, found %q (entries %v)", tmp, homes, entries)
	} else {
		d.Home = homes[0]
		waitStatus(t, d.Home, "6 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 6 })
		syncDrive(t, d, time.Minute)
		pollStatus(t, d.Home, "at most 6 shards a segment, peer_loss_tolerated ≥ 1", 10*time.Second, func(st nodeStatus) bool {
			return st.DataShards+st.ParityShards <= 6 && st.PeerLossTolerated >= 1
		})
	}

	start := time.Now()
	d.StopSignal(t, syscall.SIGINT) // exit 0 within exitTimeout (30 s), mount gone
	t.Logf("demo exited 0 %v after SIGINT", time.Since(start).Round(time.Millisecond))
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("demo left %s behind in its TMPDIR %s", strings.Join(names, ", "), tmp)
	}
}
