package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// Audits and repair with every node a separate process (issue 5, docs/audit.md): shards of
// peers gone for good are rebuilt elsewhere, a peer that silently drops shards is caught by
// audits, and in both cases as many peers as before can then fail with no loss.

// repairFigures is the audit and repair part of `peerdrive status --json`.
type repairFigures struct {
	UnderReplicatedChunks int64 `json:"under_replicated_chunks"`
	LostChunks            int64 `json:"lost_chunks"`
	Chunks                int64 `json:"chunks"`
	RepairedSegments      int64 `json:"repaired_segments"`
	AuditsPassed          int64 `json:"audits_passed"`
	AuditsFailed          int64 `json:"audits_failed"`
	Peers                 int   `json:"peers"`
	PeerLossTolerated     int   `json:"peer_loss_tolerated"`
	raw                   string
}

func getRepairFigures(t testing.TB, home string) repairFigures {
	t.Helper()
	out, stderr, err := runOut(statusTimeout, pdBin, "--home", home, "status", "--json")
	if err != nil {
		t.Fatalf("peerdrive --home %s status --json: %v\n%s", home, err, tail(stderr, 20))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status --json: %v:\n%s", err, out)
	}
	for _, f := range []string{"repaired_segments", "audits_passed", "audits_failed", "under_replicated_chunks", "lost_chunks"} {
		if _, ok := m[f]; !ok {
			t.Fatalf("status --json lacks %s:\n%s", f, out)
		}
	}
	var f repairFigures
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatal(err)
	}
	f.raw = strings.Join(strings.Fields(out), " ")
	return f
}

// waitFigures polls the status of home until cond holds, failing the test after timeout.
func waitFigures(t testing.TB, home, what string, timeout time.Duration, cond func(repairFigures) bool) (repairFigures, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		f := getRepairFigures(t, home)
		if cond(f) {
			took := time.Since(start)
			t.Logf("%s after %v", what, took.Round(100*time.Millisecond))
			return f, took
		}
		if time.Since(start) > timeout {
			t.Fatalf("waited %v for %s; last status: %s", timeout, what, f.raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// repairFlags make audits and repair fast enough for a test.
func repairFlags(grace string) []string {
	return []string{"--repair-grace", grace, "--audit-interval", "500ms", "--repair-bandwidth", "256MiB"}
}

// alive returns the nodes still running, ordered by the shard bytes they hold, most first.
func aliveByHeld(t testing.TB, nodes []*ServeNode, skip ...*ServeNode) []*ServeNode {
	var live []*ServeNode
	for _, n := range nodes {
		if n.Alive() && !slices.Contains(skip, n) {
			live = append(live, n)
		}
	}
	return byHeldBytes(t, live)
}

// TestRepairAfterDeparture: 8 storage nodes, a drive with 4+2 and a 3 s repair grace. Two
// nodes are SIGKILLed for good: status must show under_replicated_chunks back at 0 once the
// repair is done; then two more are SIGKILLed and every file must read back identical from
// the remaining four.
func TestRepairAfterDeparture(t *testing.T) {
	const mb = 20
	dir := t.TempDir()
	nodes := startServes(t, dir, 8, serveOpts{})
	home := initHome(t, filepath.Join(dir, "home"))
	mnt := t.TempDir()
	flags := slices.Concat(shardFlags, []string{"--cache-size", "4MiB"}, repairFlags("3s"), bootstrapFlags(nodes))
	d := startMount(t, home, mnt, flags...)
	waitStatus(t, home, "8 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 8 })
	want := writeMixedTree(t, mnt, mixedSizes(mb<<20))
	syncDrive(t, d, 2*time.Minute)

	victims := aliveByHeld(t, nodes)[:2]
	var lost int64 // shard bytes to rebuild: what the victims held
	for _, n := range victims {
		lost += mustStatus(t, n.Home).HeldForPeersBytes
	}
	for _, n := range victims {
		t.Logf("SIGKILL %s for good", n.Name)
		n.Kill(t)
	}
	killedAt := time.Now()
	waitFigures(t, home, "under-replicated chunks seen", 15*time.Second, func(f repairFigures) bool {
		return f.UnderReplicatedChunks > 0 || f.RepairedSegments > 0
	})
	f, _ := waitFigures(t, home, "repair done: under_replicated_chunks and lost_chunks 0", 60*time.Second, func(f repairFigures) bool {
		return f.UnderReplicatedChunks == 0 && f.LostChunks == 0 && f.RepairedSegments > 0
	})
	if f.PeerLossTolerated < 2 {
		t.Errorf("after repair: peer_loss_tolerated %d, want 2 (every segment on 6 distinct live peers); status: %s", f.PeerLossTolerated, f.raw)
	}
	t.Logf("repaired %d segments (%s of shards rebuilt, of %.0f MB written) %v after the kill (the 3 s grace runs from when they were last seen, up to one repair pass before); status: %s",
		f.RepairedSegments, humanBytes(lost), float64(mb<<20)/1e6, time.Since(killedAt).Round(100*time.Millisecond), f.raw)

	more := aliveByHeld(t, nodes)[:2]
	for _, n := range more {
		t.Logf("SIGKILL %s", n.Name)
		n.Kill(t)
	}
	dropCaches(t)
	res := readBack(t, mnt, want, time.Minute)
	requireAllBack(t, "4 of 8 storage nodes killed, 2 of them after repair", res, want)
	d.Stop(t)
}

// TestRepairAfterFailedAudit: a storage node is stopped, half of the shard holds in its store
// are deleted with the store package, and it is started again, claiming nothing. The drive's
// audits must catch it (audits_failed > 0) and repair must move its shards to other nodes;
// then it and two more nodes are SIGKILLed and every file must read back identical.
func TestRepairAfterFailedAudit(t *testing.T) {
	const mb = 8
	dir := t.TempDir()
	nodes := startServes(t, dir, 8, serveOpts{})
	home := initHome(t, filepath.Join(dir, "home"))
	mnt := t.TempDir()
	// A grace far longer than the cheat is away: only audits can trigger repair. (A repair pass
	// runs every quarter of it, 5 s, or at once after a failed audit.)
	flags := slices.Concat(shardFlags, []string{"--cache-size", "4MiB"}, repairFlags("20s"), bootstrapFlags(nodes))
	d := startMount(t, home, mnt, flags...)
	waitStatus(t, home, "8 storage peers connected", 30*time.Second, func(st nodeStatus) bool { return st.Peers >= 8 })
	want := writeMixedTree(t, mnt, mixedSizes(mb<<20))
	syncDrive(t, d, 2*time.Minute)
	waitFigures(t, home, "audits passing", 15*time.Second, func(f repairFigures) bool { return f.AuditsPassed > 0 })

	cheat := aliveByHeld(t, nodes)[0]
	cheat.StopSignal(t, syscall.SIGTERM)
	dropped, kept := dropHalfTheShards(t, filepath.Join(cheat.Home, "store"))
	t.Logf("%s: deleted %d shard holds, kept %d", cheat.Name, dropped, kept)
	if dropped == 0 {
		t.Fatalf("%s held no shards", cheat.Name)
	}
	// Back on the network, bootstrapping from the mount so that it is a storage peer again at once.
	mountAddr := loopbackAddrOf(t, home)
	before := getRepairFigures(t, home)
	restarted, err := launchServe(t, cheat.Name+" (restarted)", cheat.Home, serveOpts{Bootstrap: []string{mountAddr, nodes[0].Addr}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFigures(t, home, "a failed audit", 30*time.Second, func(f repairFigures) bool { return f.AuditsFailed > before.AuditsFailed })
	f, _ := waitFigures(t, home, "the cheat's shards repaired elsewhere", 60*time.Second, func(f repairFigures) bool {
		return f.RepairedSegments > 0 && f.UnderReplicatedChunks == 0 && f.LostChunks == 0
	})
	t.Logf("caught and repaired %v after the cheat came back; status: %s", time.Since(start).Round(100*time.Millisecond), f.raw)
	waitStatus(t, restarted.Home, "the cheat told to delete the shards moved away", 30*time.Second, func(st nodeStatus) bool {
		return st.HeldForPeersBytes == 0
	})

	t.Logf("SIGKILL %s", restarted.Name)
	restarted.Kill(t)
	for _, n := range aliveByHeld(t, nodes, cheat)[:2] {
		t.Logf("SIGKILL %s", n.Name)
		n.Kill(t)
	}
	dropCaches(t)
	res := readBack(t, mnt, want, time.Minute)
	requireAllBack(t, "the cheat and 2 more storage nodes killed after repair", res, want)
	d.Stop(t)
}

// dropHalfTheShards opens a stopped storage node's store and deletes every other shard hold,
// as a peer that silently throws data away would.
func dropHalfTheShards(t testing.TB, dir string) (dropped, kept int) {
	t.Helper()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer db.Close()
	shards, err := store.NewShards(db, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	type hold struct {
		id    peerdrive.ShardID
		owner string
	}
	var holds []hold
	err = db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{'Q'}, nil, false, func(k, _ []byte) (bool, error) {
			var h hold
			if len(k) <= 1+len(h.id) {
				return true, nil
			}
			copy(h.id[:], k[1:])
			h.owner = string(bytes.Clone(k[1+len(h.id):]))
			holds = append(holds, h)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, h := range holds {
		if i%2 == 1 {
			kept++
			continue
		}
		if err := shards.Delete(ctx, h.owner, h.id); err != nil {
			t.Fatalf("delete shard %s: %v", h.id.Short(), err)
		}
		dropped++
	}
	return dropped, kept
}

// loopbackAddrOf returns the 127.0.0.1 TCP address in HOME/addrs.
func loopbackAddrOf(t testing.TB, home string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, "addrs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(b)) {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatalf("no /ip4/127.0.0.1/tcp address in %s/addrs: %q", home, b)
	return ""
}
