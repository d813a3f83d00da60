package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestDegradedNetwork runs the peer network across hosts made of network namespaces, joined
// by veth pairs to a bridge in a namespace of their own, on a /24 that exists only inside
// them. Storage node s1 loses 5% of its incoming packets (nftables numgen random), s2 sits
// behind a 20 Mbit/s token bucket both ways (tc tbf), s3 is clean, and s4 is reachable only
// through a user-space TCP proxy that holds every piece of data 50 ms in each direction (the
// kernel has no netem). The mount runs in a fifth namespace with 2+2 erasure coding, so every
// segment needs all four nodes, writes ~30 MB of mixed files and syncs; after a restart with a
// 1 MiB cache and dropped page caches everything must read back identical.
//
// The mount's process joins only the network namespace (nsenter --net), not a mount
// namespace of its own: `ip netns exec` would put its FUSE mount in a private mount namespace,
// invisible to the test. Control commands (status, sync) reach it through its socket in the
// home, a path, which network namespaces do not separate.
func TestDegradedNetwork(t *testing.T) {
	requireCommands(t, map[string]string{"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "nsenter": "util-linux"})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rootBefore := rootNetState(t)
	lab := newNetLab(t)
	mNS, mAddr := lab.addHost("m", 10)
	var sNS, sAddr [3]string
	for i := range sNS {
		sNS[i], sAddr[i] = lab.addHost(fmt.Sprintf("s%d", i+1), 11+i)
	}
	pxNS, pxAddr := lab.addHost("px", 20)
	s4NS, pxInner, s4Addr := lab.addBehind(pxNS, "s4")

	lab.dropInput(sNS[0], 5)
	lab.shape(lab.hub, "v-s2") // toward s2
	lab.shape(sNS[1], "eth0")  // from s2

	dir := t.TempDir()
	var nodes []*ServeNode
	for i := range sNS {
		o := serveOpts{Listen: "/ip4/" + sAddr[i] + "/tcp/0", Wrap: []string{"ip", "netns", "exec", sNS[i]}}
		if i > 0 {
			o.Bootstrap = []string{nodes[0].Addr}
		}
		n, err := launchServe(t, fmt.Sprintf("serve s%d", i+1), filepath.Join(dir, fmt.Sprintf("s%d", i+1)), o)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	s4, err := launchServe(t, "serve s4 (behind the proxy)", filepath.Join(dir, "s4"),
		serveOpts{Listen: "/ip4/" + s4Addr + "/tcp/0", Wrap: []string{"ip", "netns", "exec", s4NS}})
	if err != nil {
		t.Fatal(err)
	}
	s4Port := multiaddrPort(t, s4.Addr)
	proxy, err := launchProc(t, "tcpdelay", tcpDelayReady,
		[]string{"ip", "netns", "exec", pxNS, exe, pxAddr + ":0", net.JoinHostPort(s4Addr, s4Port), "50ms"},
		[]string{helperEnv + "=tcpdelay"})
	if err != nil {
		t.Fatal(err)
	}
	proxyAddr := lastField(proxy.log, tcpDelayReady)
	host, port, err := net.SplitHostPort(proxyAddr)
	if err != nil || host != pxAddr {
		t.Fatalf("tcpdelay printed %q, want %s:PORT (%v)", proxyAddr, pxAddr, err)
	}
	t.Logf("s4 %s behind the proxy %s (its own side %s)", s4.Addr, proxyAddr, pxInner)
	if out, err := tryRun(cmdOpts{Timeout: 10 * time.Second}, "ip", "-n", mNS, "route", "get", s4Addr); err == nil {
		t.Fatalf("s4's own address %s is routable from the mount's namespace, want it reachable only through the proxy:\n%s", s4Addr, out)
	}
	boot := bootstrapFlags(nodes)
	boot = append(boot, "--bootstrap", fmt.Sprintf("/ip4/%s/tcp/%s/p2p/%s", pxAddr, port, s4.ID))

	home := initHome(t, filepath.Join(dir, "home"))
	mnt := t.TempDir()
	mountArgv := func(extra ...string) []string {
		return slices.Concat([]string{"nsenter", "--net=/run/netns/" + mNS, pdBin, "--home", home, "mount", mnt,
			"--listen", "/ip4/" + mAddr + "/tcp/0", "--data-shards", "2", "--parity-shards", "2"}, boot, extra)
	}
	// launchDaemon returns once the FUSE mount answers in the test's own mount namespace.
	d, err := launchDaemon(t, home, mnt, mountArgv(), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, home, "4 storage peers connected across the namespaces", time.Minute, func(st nodeStatus) bool { return st.Peers >= 4 })

	sizes := mixedSizes(30 << 20)
	want := writeMixedTree(t, mnt, sizes)
	syncDrive(t, d, 4*time.Minute)
	var total int64
	for _, s := range sizes {
		total += s
	}
	// With 2+2 over 4 nodes every segment has a shard on s4: about half the data went through
	// the proxy.
	if up := proxyUp(t, proxy); up < total/4 {
		t.Errorf("the proxy to s4 forwarded %d bytes, want at least %d: s4 holds a shard of every segment", up, total/4)
	}
	d.Stop(t)

	d, err = launchDaemon(t, home, mnt, mountArgv("--cache-size", "1MiB"), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, home, "cached_bytes ≤ 1 MiB + slack with --cache-size 1MiB", time.Minute,
		func(st nodeStatus) bool { return st.CachedBytes <= 1<<20+cacheSlack })
	waitStatus(t, home, "4 storage peers connected after the restart", time.Minute, func(st nodeStatus) bool { return st.Peers >= 4 })
	dropCaches(t)
	res := readBack(t, mnt, want, 2*time.Minute)
	requireAllBack(t, "degraded network, 1 MiB cache", res, want)
	d.Stop(t)

	// The degradations were in the path.
	if n := lab.dropped(sNS[0]); n == 0 {
		t.Errorf("the nftables rule in %s dropped no packets", sNS[0])
	} else {
		t.Logf("nftables dropped %d packets on their way into s1", n)
	}
	for _, q := range [][2]string{{lab.hub, "v-s2"}, {sNS[1], "eth0"}} {
		t.Logf("tbf on %s %s: %s", q[0], q[1], lab.qdiscStats(q[0], q[1]))
	}
	t.Logf("proxy: %s", lastLine(proxy.log, tcpDelayStats))
	proxy.StopSignal(t, syscall.SIGTERM)
	for _, n := range append(nodes, s4) {
		n.StopSignal(t, syscall.SIGTERM)
	}

	lab.destroy()
	if after := rootNetState(t); after != rootBefore {
		t.Errorf("the root network namespace changed:\nbefore:\n%s\nafter:\n%s", rootBefore, after)
	}
}

// requireCommands fails the test, naming the Debian package to install, when a command it
// runs is missing.
func requireCommands(t testing.TB, pkgOf map[string]string) {
	t.Helper()
	for _, cmd := range slices.Sorted(maps.Keys(pkgOf)) {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("install %s: the test runs %s (%v)", pkgOf[cmd], cmd, err)
		}
	}
}

// netLab is a set of network namespaces made by one test: a hub with a bridge and hosts
// joined to it by veth pairs on 10.199.N.0/24, plus hosts behind a host on 10.199.N+1.0/24.
// Nothing is created in the root namespace; destroy removes it all.
type netLab struct {
	t         testing.TB
	tag       string // random, in every namespace's name
	subnet    int    // N
	hub       string
	spaces    []string
	tables    []string    // namespaces with our nftables table
	qdiscs    [][2]string // namespace, device
	destroyed bool
}

const nftTable = "pdtest"

func newNetLab(t testing.TB) *netLab {
	t.Helper()
	var r [3]byte
	_, _ = rand.Read(r[:])
	l := &netLab{t: t, tag: hex.EncodeToString(r[:]), subnet: 2 * (10 + mrand.IntN(110))}
	t.Cleanup(l.destroy)
	l.hub = l.addNS("hub")
	l.ip(l.hub, "link", "add", "br0", "type", "bridge")
	l.ip(l.hub, "link", "set", "br0", "up")
	return l
}

func (l *netLab) addNS(name string) string {
	l.t.Helper()
	ns := "pdtest-" + l.tag + "-" + name
	mustRun(l.t, cmdOpts{Timeout: 10 * time.Second}, "ip", "netns", "add", ns)
	l.spaces = append(l.spaces, ns)
	l.ip(ns, "link", "set", "lo", "up")
	return ns
}

func (l *netLab) ip(ns string, args ...string) {
	l.t.Helper()
	mustRun(l.t, cmdOpts{Timeout: 10 * time.Second}, "ip", append([]string{"-n", ns}, args...)...)
}

// addHost makes a namespace joined to the hub's bridge, with address 10.199.N.host on eth0.
func (l *netLab) addHost(name string, host int) (ns, addr string) {
	l.t.Helper()
	ns = l.addNS(name)
	veth := "v-" + name
	l.ip(l.hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip(l.hub, "link", "set", veth, "master", "br0")
	l.ip(l.hub, "link", "set", veth, "up")
	addr = fmt.Sprintf("10.199.%d.%d", l.subnet, host)
	l.ip(ns, "addr", "add", addr+"/24", "dev", "eth0")
	l.ip(ns, "link", "set", "eth0", "up")
	return ns, addr
}

// addBehind makes a namespace reachable only from gw, over a veth pair of their own on
// 10.199.N+1.0/24; gw does not forward (a new namespace's default), so nothing else reaches it.
func (l *netLab) addBehind(gw, name string) (ns, gwAddr, addr string) {
	l.t.Helper()
	ns = l.addNS(name)
	veth := "p-" + name
	l.ip(gw, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	gwAddr = fmt.Sprintf("10.199.%d.1", l.subnet+1)
	addr = fmt.Sprintf("10.199.%d.2", l.subnet+1)
	l.ip(gw, "addr", "add", gwAddr+"/24", "dev", veth)
	l.ip(gw, "link", "set", veth, "up")
	l.ip(ns, "addr", "add", addr+"/24", "dev", "eth0")
	l.ip(ns, "link", "set", "eth0", "up")
	return ns, gwAddr, addr
}

// dropInput drops pct% of the packets entering ns, at random.
func (l *netLab) dropInput(ns string, pct int) {
	l.t.Helper()
	nft := func(args ...string) {
		l.t.Helper()
		mustRun(l.t, cmdOpts{Timeout: 10 * time.Second}, "ip", slices.Concat([]string{"netns", "exec", ns, "nft"}, args)...)
	}
	nft("add", "table", "inet", nftTable)
	l.tables = append(l.tables, ns)
	nft("add", "chain", "inet", nftTable, "drops", "{ type filter hook input priority 0; }")
	nft("add", "rule", "inet", nftTable, "drops", "numgen", "random", "mod", "100", "<", strconv.Itoa(pct), "counter", "drop")
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

// dropped is the number of packets the rule of dropInput dropped in ns.
func (l *netLab) dropped(ns string) int64 {
	l.t.Helper()
	out := mustRun(l.t, cmdOpts{Timeout: 10 * time.Second}, "ip", "netns", "exec", ns, "nft", "list", "chain", "inet", nftTable, "drops")
	m := nftCounter.FindStringSubmatch(out)
	if m == nil {
		l.t.Errorf("no counter in the nftables chain of %s:\n%s", ns, out)
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// shape caps what leaves dev in ns at 20 Mbit/s with a token bucket.
func (l *netLab) shape(ns, dev string) {
	l.t.Helper()
	mustRun(l.t, cmdOpts{Timeout: 10 * time.Second}, "tc", "-n", ns, "qdisc", "add", "dev", dev, "root",
		"tbf", "rate", "20mbit", "burst", "32kbit", "latency", "400ms")
	l.qdiscs = append(l.qdiscs, [2]string{ns, dev})
}

func (l *netLab) qdiscStats(ns, dev string) string {
	out, err := tryRun(cmdOpts{Timeout: 10 * time.Second}, "tc", "-s", "-n", ns, "qdisc", "show", "dev", dev)
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return strings.Join(strings.Fields(out), " ")
}

// destroy removes the nftables tables, the qdiscs and the namespaces (and with them their
// veth pairs), each step bounded, and fails the test if a namespace is left.
func (l *netLab) destroy() {
	if l.destroyed {
		return
	}
	l.destroyed = true
	o := cmdOpts{Timeout: 10 * time.Second}
	for _, ns := range l.tables {
		if out, err := tryRun(o, "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", nftTable); err != nil {
			l.t.Errorf("delete the nftables table in %s: %v\n%s", ns, err, out)
		}
	}
	for _, q := range l.qdiscs {
		if out, err := tryRun(o, "tc", "-n", q[0], "qdisc", "del", "dev", q[1], "root"); err != nil {
			l.t.Errorf("delete the qdisc on %s in %s: %v\n%s", q[1], q[0], err, out)
		}
	}
	for _, ns := range slices.Backward(l.spaces) {
		if out, err := tryRun(o, "ip", "netns", "del", ns); err != nil {
			l.t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	}
	out, _ := tryRun(o, "ip", "netns", "list")
	if strings.Contains(out, l.tag) {
		l.t.Errorf("network namespaces left behind:\n%s", out)
	}
}

// rootNetState lists the root network namespace's links, addresses and routes.
func rootNetState(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link", "show"}, {"-o", "addr", "show"}, {"route", "show", "table", "all"}} {
		out := mustRun(t, cmdOpts{Timeout: 10 * time.Second}, "ip", args...)
		// Counters and timers change by themselves; keep names, addresses and routes.
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, "valid_lft"); i >= 0 {
				line = line[:i]
			}
			if strings.Contains(line, "link/") && strings.Contains(args[1], "link") {
				line = line[:strings.Index(line, "link/")]
			}
			b.WriteString(strings.TrimSpace(line) + "\n")
		}
	}
	return b.String()
}

// multiaddrPort is the TCP port of a /ip4/A/tcp/PORT/... multiaddr.
func multiaddrPort(t testing.TB, ma string) string {
	t.Helper()
	f := strings.Split(ma, "/")
	if i := slices.Index(f, "tcp"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	t.Fatalf("no TCP port in %q", ma)
	return ""
}

// lastLine returns the last line of l's stderr containing s, from s on.
func lastLine(l *logTail, s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range slices.Backward(l.lines) {
		if i := strings.Index(line, s); i >= 0 && !strings.HasPrefix(line, "[stdout]") {
			return line[i:]
		}
	}
	return ""
}

// lastField is the first word after s on the last line containing it.
func lastField(l *logTail, s string) string {
	f := strings.Fields(strings.TrimPrefix(lastLine(l, s), s))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// The TCP delay proxy: the test binary re-executed with helperEnv=tcpdelay.

const (
	helperEnv     = "PEERDRIVE_TEST_HELPER"
	tcpDelayReady = "tcpdelay: listening on"
	tcpDelayStats = "tcpdelay: forwarded"
)

// runHelper runs the test binary as a helper process when helperEnv asks for one; TestMain
// calls it first.
func runHelper() (int, bool) {
	switch h := os.Getenv(helperEnv); h {
	case "":
		return 0, false
	case "tcpdelay":
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: tcpdelay LISTEN TARGET DELAY")
			return 2, true
		}
		delay, err := time.ParseDuration(os.Args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcpdelay:", err)
			return 2, true
		}
		return tcpDelay(os.Args[1], os.Args[2], delay), true
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: no such helper\n", helperEnv, h)
		return 2, true
	}
}

// tcpDelay accepts TCP connections on listen and forwards each to target, holding every
// piece of data for delay in each direction without limiting throughput. It prints its
// address once listening, its counters every second, and exits 0 on SIGTERM or SIGINT.
func tcpDelay(listen, target string, delay time.Duration) int {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpdelay:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "%s %s\n", tcpDelayReady, ln.Addr())
	var up, down, conns, seq atomic.Int64
	stats := func() {
		fmt.Fprintf(os.Stderr, "%s %d bytes to %s and %d back over %d connections #%d\n",
			tcpDelayStats, up.Load(), target, down.Load(), conns.Load(), seq.Add(1))
	}
	go func() {
		for range time.Tick(time.Second) {
			stats()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		stats()
		os.Exit(0)
	}()
	err = proxyDelayed(ln, target, delay, &up, &down, &conns)
	fmt.Fprintln(os.Stderr, "tcpdelay:", err)
	return 1
}

// proxyDelayed serves ln until it fails, forwarding each connection to target with delay.
func proxyDelayed(ln net.Listener, target string, delay time.Duration, up, down, conns *atomic.Int64) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		conns.Add(1)
		go func() {
			defer c.Close()
			s, err := net.DialTimeout("tcp", target, 10*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, "tcpdelay:", err)
				return
			}
			defer s.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); pipeDelayed(s.(*net.TCPConn), c.(*net.TCPConn), delay, up) }()
			go func() { defer wg.Done(); pipeDelayed(c.(*net.TCPConn), s.(*net.TCPConn), delay, down) }()
			wg.Wait()
		}()
	}
}

// pipeDelayed copies src to dst, writing each piece read delay after it was read. At EOF it
// half-closes dst; on an error it closes both, which ends the other direction too.
func pipeDelayed(dst, src *net.TCPConn, delay time.Duration, n *atomic.Int64) {
	type piece struct {
		b   []byte
		due time.Time
	}
	q := make(chan piece, 256)
	var readErr error
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			k, err := src.Read(b)
			if k > 0 {
				q <- piece{b[:k], time.Now().Add(delay)}
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		if _, err := dst.Write(p.b); err != nil {
			dst.Close()
			src.Close()
			for range q { // let the reader finish
			}
			return
		}
		n.Add(int64(len(p.b)))
	}
	if !errors.Is(readErr, io.EOF) {
		dst.Close()
		src.Close()
		return
	}
	_ = dst.CloseWrite()
}

// proxyUp is the number of bytes the proxy has forwarded to its target, from its last
// counters line.
func proxyUp(t testing.TB, p *Proc) int64 {
	t.Helper()
	seq := func() int {
		f := strings.Fields(lastLine(p.log, tcpDelayStats))
		if len(f) == 0 {
			return -1
		}
		n, _ := strconv.Atoi(strings.Trim(f[len(f)-1], "#"))
		return n
	}
	// The counters are printed every second: wait for a line printed after now.
	for first, end := seq(), time.Now().Add(5*time.Second); seq() <= first+1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("tcpdelay printed no counters for 5 s; output:\n%s", p.log)
		}
	}
	line := lastLine(p.log, tcpDelayStats)
	n, err := strconv.ParseInt(lastField(p.log, tcpDelayStats), 10, 64)
	if err != nil {
		t.Fatalf("tcpdelay counters: %q: %v", line, err)
	}
	t.Logf("proxy: %s", line)
	return n
}

// TestTCPDelay checks the proxy itself: bytes pass unchanged both ways, a round trip takes
// twice the delay, and a half-close reaches the other side.
func TestTCPDelay(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var up, down, conns atomic.Int64
	go func() { _ = proxyDelayed(ln, echo.Addr().String(), 50*time.Millisecond, &up, &down, &conns) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 100*time.Millisecond || rtt > time.Second {
		t.Errorf("round trip through the proxy took %v, want 100 ms and a little", rtt)
	}
	data := randBytes(16 << 20)
	got := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(c)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	start = time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b := <-got
	if !bytes.Equal(b, data) {
		t.Fatalf("16 MiB echoed through the proxy: got %d bytes, sha256 %s, want %s", len(b), hashBytes(b)[:16], hashBytes(data)[:16])
	}
	t.Logf("16 MiB echoed through the proxy in %v; %d bytes up, %d down", time.Since(start).Round(time.Millisecond), up.Load(), down.Load())
}
