package net

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/peerdrive/peerdrive"
)

// memStore is a ShardStore in memory (no owners' holds, no capacity).
type memStore struct {
	mu sync.Mutex
	m  map[peerdrive.ShardID][]byte
}

func newMemStore() *memStore { return &memStore{m: map[peerdrive.ShardID][]byte{}} }

func (s *memStore) Put(_ context.Context, _ string, id peerdrive.ShardID, data []byte) error {
	s.mu.Lock()
	s.m[id] = bytes.Clone(data) // the server reuses data
	s.mu.Unlock()
	return nil
}

func (s *memStore) Get(_ context.Context, id peerdrive.ShardID) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[id]
	if !ok {
		return nil, fmt.Errorf("shard %s: %w", id.Short(), fs.ErrNotExist)
	}
	return b, nil
}

func (s *memStore) Has(_ context.Context, id peerdrive.ShardID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[id]
	return ok, nil
}

func (s *memStore) Delete(_ context.Context, _ string, id peerdrive.ShardID) error {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
	return nil
}

func (s *memStore) Usage() (used, capacity, count int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.m {
		used += int64(len(b))
	}
	return used, 1 << 40, int64(len(s.m))
}

func startCfg(t *testing.T, cfg Config) *Node {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = newKey(t)
	}
	if cfg.Listen == nil {
		cfg.Listen = []string{loopTCP}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// watchDials records every address any node dials until the test ends.
func watchDials(t *testing.T) func() []ma.Multiaddr {
	var mu sync.Mutex
	var dials []ma.Multiaddr
	f := func(_ peer.ID, a ma.Multiaddr) {
		mu.Lock()
		dials = append(dials, a)
		mu.Unlock()
	}
	dialObserver.Store(&f)
	t.Cleanup(func() { dialObserver.Store(nil) })
	return func() []ma.Multiaddr {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(dials)
	}
}

func isLoopback(a ma.Multiaddr) bool {
	ip, err := manet.ToIP(a)
	if err != nil {
		return false
	}
	addr, ok := netip.AddrFromSlice(ip)
	return ok && addr.IsLoopback()
}

// A bootstraps to B, C bootstraps to B: A and C find each other through the
// DHT, and nothing is dialled outside loopback.
func TestDiscoveryViaDHT(t *testing.T) {
	dials := watchDials(t)
	b := startCfg(t, Config{Listen: []string{loopTCP, loopQUIC}})
	b.ServeShards(newMemStore())
	a := startCfg(t, Config{Listen: []string{loopTCP, loopQUIC}, Bootstrap: b.Addrs()})
	a.ServeShards(newMemStore())
	c := startCfg(t, Config{Listen: []string{loopTCP, loopQUIC}, Bootstrap: b.Addrs()})
	c.ServeShards(newMemStore())

	start := time.Now()
	waitFor(t, 10*time.Second, "A and C find each other", func() bool {
		return slices.Contains(a.StoragePeers(), c.Host().ID()) && slices.Contains(c.StoragePeers(), a.Host().ID())
	})
	t.Logf("A and C connected %v after start", time.Since(start))
	want := []peer.ID{b.Host().ID(), c.Host().ID()}
	slices.Sort(want)
	if got := a.StoragePeers(); !slices.Equal(got, want) {
		t.Fatalf("A's storage peers = %v, want %v", got, want)
	}
	// Both advertise themselves as storage nodes: A's lookup of the
	// namespace finds C (and B).
	waitFor(t, 5*time.Second, "C advertised in the DHT", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ch, err := a.disc.rd.FindPeers(ctx, StorageNamespace)
		if err != nil {
			return false
		}
		var found []peer.ID
		for ai := range ch {
			found = append(found, ai.ID)
		}
		return slices.Contains(found, c.Host().ID()) && slices.Contains(found, b.Host().ID())
	})
	// Bootstrap connections are protected from trimming.
	if !a.Host().ConnManager().IsProtected(b.Host().ID(), bootstrapTag) {
		t.Error("bootstrap peer not protected")
	}
	// Every connection is TCP: the dial ranker tried it first.
	for _, n := range []*Node{a, b, c} {
		for _, conn := range n.Host().Network().Conns() {
			if !isTCP(conn) {
				t.Errorf("connection over %s", conn.RemoteMultiaddr())
			}
		}
	}
	// The DHT is PeerDrive's own.
	if a.DHT() == nil || a.DHT().RoutingTable().Size() == 0 {
		t.Error("A's DHT routing table is empty")
	}
	for _, p := range a.Host().Mux().Protocols() {
		if strings.HasPrefix(string(p), "/ipfs/kad") {
			t.Errorf("serving %s", p)
		}
	}
	d := dials()
	if len(d) == 0 {
		t.Fatal("no dials observed")
	}
	for _, addr := range d {
		if !isLoopback(addr) {
			t.Errorf("dialled %s, outside loopback", addr)
		}
	}
}

// A node with no bootstrap peers dials nobody.
func TestNoBootstrapDialsNobody(t *testing.T) {
	dials := watchDials(t)
	n := startCfg(t, Config{Listen: []string{loopTCP, loopQUIC}})
	n.ServeShards(newMemStore())
	time.Sleep(1500 * time.Millisecond) // nothing to wait for: proving an absence
	if d := dials(); len(d) != 0 {
		t.Fatalf("dialled %v", d)
	}
	if len(n.Host().Network().Peers()) != 0 {
		t.Fatal("connected to someone")
	}
}

// An unreachable bootstrap peer is dialled again until it comes up.
func TestBootstrapRedial(t *testing.T) {
	old := bootstrapEvery
	bootstrapEvery = 200 * time.Millisecond
	t.Cleanup(func() { bootstrapEvery = old })

	key := newKey(t)
	first := startCfg(t, Config{Key: key})
	addr := first.Addrs()[0]
	listen := strings.TrimSuffix(addr, "/p2p/"+first.ID())
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	a := startCfg(t, Config{Bootstrap: []string{addr}})
	bid, err := peer.Decode(first.ID())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a few failed rounds
	if a.Host().Network().Connectedness(bid) == network.Connected {
		t.Fatal("connected to a closed node")
	}
	startCfg(t, Config{Key: key, Listen: []string{listen}})
	waitFor(t, 5*time.Second, "bootstrap peer reconnected", func() bool {
		return a.Host().Network().Connectedness(bid) == network.Connected
	})
	// Dropped connections are re-dialled too.
	a.Host().Network().ClosePeer(bid)
	waitFor(t, 5*time.Second, "bootstrap peer reconnected after a drop", func() bool {
		return a.Host().Network().Connectedness(bid) == network.Connected
	})
}

func TestBadBootstrap(t *testing.T) {
	id, err := PeerID(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{
		"not-a-multiaddr",
		"/ip4/127.0.0.1/tcp/4001",        // no /p2p/ID
		"/ip4/127.0.0.1/tcp/4001/p2p/Qm", // bad ID
	} {
		n, err := Start(context.Background(), Config{Key: newKey(t), Listen: []string{loopTCP}, Bootstrap: []string{addr}})
		if err == nil {
			n.Close()
			t.Errorf("bootstrap %q: no error", addr)
		} else if !strings.Contains(err.Error(), "bootstrap") {
			t.Errorf("bootstrap %q: error %q does not say bootstrap", addr, err)
		}
	}
	// Two addresses of one peer are one bootstrap peer; our own is dropped.
	infos, err := parseBootstrap([]string{
		"/ip4/127.0.0.1/tcp/1/p2p/" + id,
		"/ip4/127.0.0.1/udp/1/quic-v1/p2p/" + id,
	})
	if err != nil || len(infos) != 1 || len(infos[0].Addrs) != 2 {
		t.Fatalf("parseBootstrap = %v, %v", infos, err)
	}
}

func TestTCPFirstRanker(t *testing.T) {
	parse := func(s string) ma.Multiaddr { return ma.StringCast(s) }
	relay := "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWGzBzKxtpHx9Ksy3GwMQVtXxsSxKvEZJCTVZbDP3oTXbc/p2p-circuit"
	addrs := []ma.Multiaddr{
		parse("/ip4/127.0.0.1/udp/1/quic-v1"),
		parse("/ip4/192.0.2.1/udp/2/quic-v1"),
		parse(relay),
		parse("/ip4/127.0.0.1/tcp/3"),
		parse("/ip4/192.0.2.1/tcp/4"),
	}
	got := tcpFirstRanker(addrs)
	if len(got) != len(addrs) {
		t.Fatalf("ranked %d of %d addresses", len(got), len(addrs))
	}
	var lastTCP, firstQUIC, lastQUIC, relayAt time.Duration = -1, time.Hour, -1, -1
	for _, d := range got {
		switch {
		case isCircuit(d.Addr):
			relayAt = d.Delay
		case hasProtocol(d.Addr, ma.P_TCP):
			lastTCP = max(lastTCP, d.Delay)
		default:
			firstQUIC = min(firstQUIC, d.Delay)
			lastQUIC = max(lastQUIC, d.Delay)
		}
	}
	if firstQUIC < lastTCP+quicFallback {
		t.Errorf("QUIC at %v, last TCP at %v: want QUIC %v after", firstQUIC, lastTCP, quicFallback)
	}
	if relayAt < lastQUIC+relayDelay {
		t.Errorf("relay at %v, last QUIC at %v", relayAt, lastQUIC)
	}
	for _, d := range got {
		if hasProtocol(d.Addr, ma.P_TCP) && !isCircuit(d.Addr) && d.Delay == 0 {
			return
		}
	}
	t.Errorf("no TCP address dialled at once: %v", got)
}

func TestRankPeers(t *testing.T) {
	ids := make([]peer.ID, 6)
	for i := range ids {
		id, err := PeerID(newKey(t))
		if err != nil {
			t.Fatal(err)
		}
		ids[i], _ = peer.Decode(id)
	}
	s := NewScores()
	fast, slow, unknown, flaky, liar, full := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]
	s.Success(fast, 5*time.Millisecond)
	s.Success(slow, 200*time.Millisecond)
	for range 3 {
		s.Failure(flaky)
	}
	s.Success(liar, time.Millisecond)
	s.BadShard(liar)
	s.Success(full, time.Millisecond)
	s.SetFull(full, true)

	in := []peer.ID{liar, full, flaky, slow, unknown, fast}
	orig := slices.Clone(in)
	got := s.Rank(in)
	want := []peer.ID{fast, unknown, slow, full}
	if !slices.Equal(got[:4], want) {
		t.Errorf("Rank = %v, want %v then the unhealthy", got, want)
	}
	if !slices.Contains(got[4:], liar) || !slices.Contains(got[4:], flaky) {
		t.Errorf("unhealthy peers not last: %v", got)
	}
	if !slices.Equal(in, orig) {
		t.Error("Rank modified its input")
	}
	// A success heals a flaky peer; a liar stays unhealthy.
	s.Success(flaky, time.Millisecond)
	s.Success(liar, time.Millisecond)
	if !s.Get(flaky).Healthy() || s.Get(liar).Healthy() {
		t.Errorf("flaky %+v, liar %+v", s.Get(flaky), s.Get(liar))
	}
	// The latency is an EWMA.
	s.Success(slow, 100*time.Millisecond)
	if l := s.Get(slow).Latency; l < 169*time.Millisecond || l > 171*time.Millisecond {
		t.Errorf("EWMA latency = %v, want 170ms", l)
	}
	if s.Get(ids[2]) != (PeerScore{}) {
		t.Error("unknown peer has a score")
	}
}
