package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fair exchange, private networks and the coordinator (docs/ledger.md).

// ledgerView is the ledger part of `peerdrive status --json`.
type ledgerView struct {
	Ledger []struct {
		Peer         string `json:"peer"`
		HeldFor      int64  `json:"held_for_bytes"`
		HeldBy       int64  `json:"held_by_bytes"`
		ProbeBytes   int64  `json:"probe_bytes"`
		AuditsPassed uint64 `json:"audits_passed"`
		AuditsFailed uint64 `json:"audits_failed"`
	} `json:"ledger"`
	NetworkLedger []struct {
		Peer      string `json:"peer"`
		Taken     int64  `json:"taken_bytes"`
		Given     int64  `json:"given_bytes"`
		Reporters int    `json:"reporters"`
	} `json:"network_ledger"`
	LastUploadError string `json:"last_upload_error"`
}

func ledgerOf(t testing.TB, home string) ledgerView {
	t.Helper()
	st := mustStatus(t, home)
	var v ledgerView
	if err := json.Unmarshal([]byte(st.raw), &v); err != nil {
		t.Fatalf("status of %s: %v", home, err)
	}
	return v
}

// heldFor is what home's ledger says it holds for peer id.
func (v ledgerView) heldFor(id string) int64 {
	for _, r := range v.Ledger {
		if r.Peer == id {
			return r.HeldFor
		}
	}
	return 0
}

// probes is the bytes of probes home placed on peer id.
func (v ledgerView) probes(id string) int64 {
	for _, r := range v.Ledger {
		if r.Peer == id {
			return r.ProbeBytes
		}
	}
	return 0
}

// buildTagged builds ./cmd/peerdrive with a build tag into dir.
func buildTagged(tag, dir string) (string, error) {
	out, err := tryRun(cmdOpts{Timeout: time.Minute}, "go", "env", "GOMOD")
	gomod := strings.TrimSpace(out)
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: %v %q", err, out)
	}
	bin := filepath.Join(dir, "peerdrive-"+tag)
	out, err = tryRun(cmdOpts{Dir: filepath.Dir(gomod), Timeout: 5 * time.Minute}, "go", "build", "-tags", tag, "-o", bin, "./cmd/peerdrive")
	if err != nil {
		return "", fmt.Errorf("go build -tags %s: %v\n%s", tag, err, out)
	}
	return bin, nil
}

var freeloader struct {
	once sync.Once
	bin  string
	err  error
}

// freeloaderBinary builds ./cmd/peerdrive with -tags freeloader once for the test binary.
func freeloaderBinary() (string, error) {
	freeloader.once.Do(func() {
		dir, err := os.MkdirTemp("", "peerdrive-freeloader-")
		if err != nil {
			freeloader.err = err
			return
		}
		freeloader.bin, freeloader.err = buildTagged("freeloader", dir)
	})
	return freeloader.bin, freeloader.err
}

// ledgerNode starts `peerdrive serve` or `coordinator` (cmd) from bin with args and returns
// it with its peer ID and loopback address.
func ledgerNode(t testing.TB, name, bin, home, cmd string, args ...string) *ServeNode {
	t.Helper()
	if _, err := os.Stat(filepath.Join(home, "recovery-key.txt")); err != nil {
		mustRun(t, cmdOpts{}, bin, "--home", home, "init")
	}
	id := strings.TrimSpace(mustRun(t, cmdOpts{}, bin, "--home", home, "id"))
	argv := append([]string{bin, "--home", home, cmd, "--listen", loopbackAddr, "--contribute", "256MiB"}, args...)
	p, err := launchProc(t, name, serveReadyLine, argv, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &ServeNode{Proc: p, Home: home, ID: id}
	for _, a := range printedAddrs(p.log) {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			n.Addr = a
		}
	}
	if n.Addr == "" {
		t.Fatalf("%s printed no loopback TCP address:\n%s", name, p.log)
	}
	return n
}

func ledgerMount(t testing.TB, bin, home, dir string, args ...string) *Daemon {
	t.Helper()
	argv := append([]string{bin, "--home", home, "mount", dir, "--listen", loopbackAddr}, args...)
	d, err := launchDaemon(t, home, dir, argv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFreeloader runs a mount node built with -tags freeloader (its shard server refuses
// every PUT) among three honest storage nodes and an honest mount node, all with an 8 MiB
// allowance. The freeloader's shards are taken up to the allowance, then refused with
// give-back-first, so its data stays pending; the honest mount, whose peers hold probes on
// it, syncs more than the allowance on the same peers.
func TestFreeloader(t *testing.T) {
	// The freeloader builds while the honest nodes start.
	start := time.Now()
	type build struct {
		bin string
		err error
	}
	built := make(chan build, 1)
	go func() {
		bin, err := freeloaderBinary()
		built <- build{bin, err}
	}()
	dir := t.TempDir()
	const allowance = 8 << 20
	flags := []string{"--ledger-allowance", "8MiB"}
	s1 := ledgerNode(t, "serve s1", pdBin, filepath.Join(dir, "s1"), "serve", flags...)
	serves := []*ServeNode{s1}
	for _, name := range []string{"s2", "s3"} {
		serves = append(serves, ledgerNode(t, "serve "+name, pdBin, filepath.Join(dir, name), "serve", append(slices.Clone(flags), "--bootstrap", s1.Addr)...))
	}
	mountFlags := append([]string{"--data-shards", "2", "--parity-shards", "1", "--cache-size", "256MiB"}, flags...)
	mountFlags = append(mountFlags, bootstrapFlags(serves)...)
	hHome, fHome := filepath.Join(dir, "honest"), filepath.Join(dir, "free")
	hMnt, fMnt := newDir(t, dir, "honest-mnt"), newDir(t, dir, "free-mnt")
	h := ledgerMount(t, pdBin, hHome, hMnt, mountFlags...)
	b := <-built
	if b.err != nil {
		t.Fatal(b.err)
	}
	free := b.bin
	t.Logf("built the freeloader in %v (the honest nodes started meanwhile)", time.Since(start).Round(time.Millisecond))
	f := ledgerMount(t, free, fHome, fMnt, mountFlags...)
	for _, home := range []string{hHome, fHome} {
		waitStatus(t, home, "4 storage peers", 20*time.Second, func(st nodeStatus) bool { return st.Peers >= 4 })
	}
	fID := mustStatus(t, fHome).PeerID
	hID := mustStatus(t, hHome).PeerID

	// Both write more than the allowance of every peer: 40 MiB is 60 MiB of 2+1 shards, 24 MiB is 36.
	if err := writeSynced(filepath.Join(fMnt, "taken"), randBytes(40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSynced(filepath.Join(hMnt, "given"), randBytes(24<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	freeSync := make(chan cmdResult, 1)
	go func() { freeSync <- runSplit(t, 40*time.Second, free, "--home", fHome, "sync", "--timeout", "6s") }()
	if res := runSplit(t, 70*time.Second, pdBin, "--home", hHome, "sync", "--timeout", "40s"); res.state == nil || !res.state.Success() {
		for _, s := range append(serves, &ServeNode{Home: hHome, Proc: &Proc{Name: "honest"}}) {
			t.Logf("%s: %s", s.Name, mustStatus(t, s.Home).raw)
		}
		t.Fatalf("the honest mount's sync failed after %v:\n%s\nmount output:\n%s", res.elapsed, tail(res.stderr, 3), h.log)
	} else {
		t.Logf("the honest mount synced in %v", res.elapsed.Round(time.Millisecond))
	}

	res := <-freeSync
	if res.state != nil && res.state.Success() {
		t.Fatalf("the freeloader's sync succeeded; its peers should refuse it past the allowance.\nledger of s1: %s", mustStatus(t, s1.Home).raw)
	}
	st := ledgerOf(t, fHome)
	if !strings.Contains(st.LastUploadError, "give back first") && !strings.Contains(st.LastUploadError, "give-back-first") {
		t.Errorf("freeloader's last upload error %q does not name the refusal (give back first); sync said:\n%s", st.LastUploadError, tail(res.stderr, 5))
	}
	if p := mustStatus(t, fHome).PendingUploadBytes; p == 0 {
		t.Errorf("the freeloader has nothing pending, want its refused data still queued")
	}
	var took int64
	for _, s := range serves {
		v := ledgerOf(t, s.Home)
		held := v.heldFor(fID)
		took += held
		// One PUT may be in flight per stream when the allowance is reached: 8 streams of
		// at most one 2 MiB shard.
		if held > allowance+8*(2<<20) {
			t.Errorf("%s holds %s for the freeloader, over the allowance %s", s.Name, humanBytes(held), humanBytes(allowance))
		}
		if v.probes(hID) == 0 {
			t.Errorf("%s placed no probe on the honest mount", s.Name)
		}
		if v.probes(fID) != 0 {
			t.Errorf("%s credits the freeloader with %s of probes", s.Name, humanBytes(v.probes(fID)))
		}
		if v.heldFor(hID) <= allowance {
			t.Errorf("%s holds only %s for the honest mount: it should hold more than the allowance once it holds probes there", s.Name, humanBytes(v.heldFor(hID)))
		}
		if !strings.Contains(s.log.String(), "refusing shards from a peer that does not give back") {
			t.Errorf("%s logged no refusal of the freeloader:\n%s", s.Name, tail(s.log.String(), 20))
		}
	}
	if took == 0 {
		t.Errorf("no storage node took any of the freeloader's shards: the allowance should let a newcomer start")
	}
	t.Logf("storage nodes hold %s for the freeloader, its sync: %s", humanBytes(took), strings.TrimSpace(tail(res.stderr, 1)))
	_ = f
}

// TestPrivateNetworkCoordinator creates a private network, runs its coordinator, and joins a
// storage node and a mount through the coordinator's invite: they connect and store, the
// coordinator's network ledger lists them, and a node without the key cannot connect.
func TestPrivateNetworkCoordinator(t *testing.T) {
	dir := t.TempDir()
	cHome := filepath.Join(dir, "coord")
	mustRun(t, cmdOpts{}, pdBin, "--home", cHome, "init")
	created, stderr, err := runOut(time.Minute, pdBin, "--home", cHome, "network", "create")
	if err != nil {
		t.Fatalf("network create: %v\n%s", err, stderr)
	}
	if created = strings.TrimSpace(created); !strings.HasPrefix(created, "pdnet1:") || strings.Contains(created, "\n") {
		t.Fatalf("network create printed %q, want an invite", created)
	}
	key, err := os.ReadFile(filepath.Join(cHome, "network.key"))
	if err != nil || !strings.HasPrefix(string(key), "/key/swarm/psk/1.0.0/\n") {
		t.Fatalf("network.key: %v %q, want libp2p's pre-shared key format", err, key)
	}
	c := ledgerNode(t, "coordinator", pdBin, cHome, "coordinator")
	if strings.Contains(c.log.String(), "quic") {
		t.Errorf("the coordinator of a private network listens on QUIC:\n%s", c.log)
	}
	invite, _, err := runOut(time.Minute, pdBin, "--home", cHome, "network", "invite")
	if err != nil {
		t.Fatalf("network invite: %v", err)
	}
	invite = strings.TrimSpace(invite)
	if !strings.Contains(invite, "@"+c.Addr) && !strings.Contains(invite, ","+c.Addr) {
		t.Fatalf("invite %q does not hold the coordinator's address %s", invite, c.Addr)
	}

	aHome, bHome := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	// a runs with the invite on its command line, b joins it into its home.
	mustRun(t, cmdOpts{}, pdBin, "--home", bHome, "join", invite)
	a := ledgerNode(t, "serve a", pdBin, aHome, "serve", "--network", invite)
	bMnt := newDir(t, dir, "b-mnt")
	b := ledgerMount(t, pdBin, bHome, bMnt, "--data-shards", "1", "--parity-shards", "1")
	// The outsider knows the coordinator's address but not the key.
	x := ledgerNode(t, "outsider", pdBin, filepath.Join(dir, "x"), "serve", "--bootstrap", c.Addr)

	waitStatus(t, bHome, "the mount finds both nodes of the network through the coordinator", 20*time.Second,
		func(st nodeStatus) bool { return st.Peers >= 2 })
	data := randBytes(3 << 20)
	if err := writeSynced(filepath.Join(bMnt, "file"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	syncDrive(t, b, 30*time.Second)
	if st := mustStatus(t, aHome); st.HeldForPeersBytes == 0 {
		t.Errorf("storage node a holds nothing after the mount synced: %s", st.raw)
	}

	bID, aID := mustStatus(t, bHome).PeerID, mustStatus(t, aHome).PeerID
	waitStatus(t, cHome, "the coordinator's network ledger lists a and b, and what b takes", 20*time.Second, func(st nodeStatus) bool {
		var v ledgerView
		_ = json.Unmarshal([]byte(st.raw), &v)
		seen := map[string]bool{}
		var bTakes int64
		for _, r := range v.NetworkLedger {
			seen[r.Peer] = true
			if r.Peer == bID {
				bTakes = r.Taken
			}
		}
		return seen[aID] && seen[bID] && bTakes > 0
	})

	// By now the outsider has dialled the coordinator for seconds: it must have no peer,
	// and nobody in the network may list it.
	if st := mustStatus(t, x.Home); st.Peers != 0 {
		t.Errorf("the node without the network key has %d peers: %s", st.Peers, st.raw)
	}
	xID := mustStatus(t, x.Home).PeerID
	for _, home := range []string{cHome, aHome, bHome} {
		if st := mustStatus(t, home); strings.Contains(st.raw, xID) {
			t.Errorf("%s knows the outsider %s: %s", home, xID, st.raw)
		}
	}
	_ = a
}

// TestCoordinatorCatchesFreeloader: with a coordinator, a freeloader that took from some
// nodes is refused by a node it never dealt with, on the network's account.
func TestCoordinatorCatchesFreeloader(t *testing.T) {
	built := make(chan error, 1)
	go func() { _, err := freeloaderBinary(); built <- err }()
	dir := t.TempDir()
	const allowance = 4 << 20
	flags := []string{"--ledger-allowance", "4MiB"}
	c := ledgerNode(t, "coordinator", pdBin, filepath.Join(dir, "coord"), "coordinator", flags...)
	boot := append(slices.Clone(flags), "--bootstrap", c.Addr)
	s1 := ledgerNode(t, "serve s1", pdBin, filepath.Join(dir, "s1"), "serve", boot...)
	s2 := ledgerNode(t, "serve s2", pdBin, filepath.Join(dir, "s2"), "serve", boot...)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	free, _ := freeloaderBinary()
	fHome, fMnt := filepath.Join(dir, "free"), newDir(t, dir, "free-mnt")
	ledgerMount(t, free, fHome, fMnt, append([]string{"--data-shards", "2", "--parity-shards", "1"}, boot...)...)
	waitStatus(t, fHome, "3 storage peers", 20*time.Second, func(st nodeStatus) bool { return st.Peers >= 3 })
	fID := mustStatus(t, fHome).PeerID
	if err := writeSynced(filepath.Join(fMnt, "taken"), randBytes(24<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = runSplit(t, 30*time.Second, free, "--home", fHome, "sync", "--timeout", "4s")

	networkTakes := func(home, id string) (int64, bool) {
		var v ledgerView
		_ = json.Unmarshal([]byte(mustStatus(t, home).raw), &v)
		for _, r := range v.NetworkLedger {
			if r.Peer == id {
				return r.Taken - r.Given, true
			}
		}
		return 0, false
	}
	waitStatus(t, c.Home, "the coordinator sees the freeloader owe more than the allowance", 20*time.Second, func(nodeStatus) bool {
		debt, _ := networkTakes(c.Home, fID)
		return debt >= 2*allowance
	})

	// A fresh node joins; once it has reported, the freeloader tries again.
	s3 := ledgerNode(t, "serve s3", pdBin, filepath.Join(dir, "s3"), "serve", boot...)
	waitStatus(t, c.Home, "the new node reports to the coordinator", 20*time.Second, func(nodeStatus) bool {
		_, ok := networkTakes(c.Home, s3.ID)
		return ok
	})
	res := runSplit(t, 30*time.Second, free, "--home", fHome, "sync", "--timeout", "5s")
	if res.state != nil && res.state.Success() {
		t.Fatalf("the freeloader's sync succeeded")
	}
	held := ledgerOf(t, s3.Home).heldFor(fID)
	if held >= allowance {
		t.Errorf("the new node took %s from the freeloader: its own allowance, as if it knew nothing of the network", humanBytes(held))
	}
	if !strings.Contains(s3.log.String(), "coordinator; allowance") {
		t.Errorf("the new node did not refuse the freeloader on the network's account:\n%s", tail(s3.log.String(), 20))
	}
	t.Logf("the new node holds %s for the freeloader; s1 %s, s2 %s", humanBytes(held),
		humanBytes(ledgerOf(t, s1.Home).heldFor(fID)), humanBytes(ledgerOf(t, s2.Home).heldFor(fID)))
}
