package net

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	loopTCP  = "/ip4/127.0.0.1/tcp/0"
	loopQUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func startNode(t *testing.T, listen ...string) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := Start(ctx, Config{Key: newKey(t), Listen: listen})
	if err != nil {
		t.Fatalf("Start(%v): %v", listen, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func TestIdentityRoundTrip(t *testing.T) {
	k := newKey(t)
	priv, err := crypto.UnmarshalPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if priv.Type() != crypto.Ed25519 {
		t.Fatalf("key type %v, want Ed25519", priv.Type())
	}
	again, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(k) {
		t.Fatal("marshal(unmarshal(key)) != key")
	}

	id1, err := PeerID(k)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := PeerID(slices.Clone(k))
	if err != nil {
		t.Fatal(err)
	}
	if id1 != id2 {
		t.Fatalf("PeerID not stable: %s vs %s", id1, id2)
	}
	want, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if id1 != want.String() {
		t.Fatalf("PeerID %s, want %s", id1, want)
	}
	if _, err := peer.Decode(id1); err != nil {
		t.Fatalf("PeerID %q does not decode: %v", id1, err)
	}

	other, err := PeerID(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if other == id1 {
		t.Fatal("two new identities have the same peer ID")
	}
}

func TestPeerIDBadKey(t *testing.T) {
	for _, k := range [][]byte{nil, {}, []byte("not a key")} {
		if _, err := PeerID(k); err == nil {
			t.Errorf("PeerID(%q): no error", k)
		}
	}
	if _, err := Start(context.Background(), Config{Listen: []string{loopTCP}}); err == nil {
		t.Error("Start without key: no error")
	}
}

func TestNodeIDMatchesKey(t *testing.T) {
	k := newKey(t)
	n, err := Start(context.Background(), Config{Key: k, Listen: []string{loopTCP}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	id, err := PeerID(k)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID() != id || n.Host().ID().String() != id {
		t.Fatalf("node ID %s / host ID %s, want %s", n.ID(), n.Host().ID(), id)
	}

	// The relay client is on (a /p2p-circuit listener and the circuit stop
	// protocol), the relay service is not (it starts only once AutoNAT finds
	// the node public); ping and PeerDrive's DHT are served, not IPFS's.
	la := n.Host().Network().ListenAddresses()
	var circuit, tcp int
	for _, a := range la {
		switch {
		case a.String() == "/p2p-circuit":
			circuit++
		case strings.HasPrefix(a.String(), "/ip4/127.0.0.1/tcp/"):
			tcp++
		}
	}
	if len(la) != 2 || circuit != 1 || tcp != 1 {
		t.Errorf("listen addresses %v, want the TCP one and /p2p-circuit", la)
	}
	protos := n.Host().Mux().Protocols()
	for _, want := range []protocol.ID{ping.ID, "/peerdrive/kad/1.0.0", "/libp2p/circuit/relay/0.2.0/stop"} {
		if !slices.Contains(protos, want) {
			t.Errorf("protocol %s not served: %v", want, protos)
		}
	}
	for _, p := range protos {
		if strings.Contains(string(p), "/hop") || strings.HasPrefix(string(p), "/ipfs/kad/") {
			t.Errorf("protocol %s served", p)
		}
	}
	for _, a := range n.Addrs() {
		if strings.Contains(a, "circuit") {
			t.Errorf("Addrs() has relay address %s", a)
		}
	}
}

// connectAndPing connects a to b using b's full address for the given
// transport protocol and pings b from a.
func connectAndPing(t *testing.T, a, b *Node, proto int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var target string
	for _, s := range b.Addrs() {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatalf("Addrs() entry %q: %v", s, err)
		}
		if _, err := m.ValueForProtocol(proto); err == nil {
			target = s
			break
		}
	}
	if target == "" {
		t.Fatalf("no address with protocol %d in %v", proto, b.Addrs())
	}
	ai, err := peer.AddrInfoFromString(target)
	if err != nil {
		t.Fatalf("AddrInfoFromString(%q): %v", target, err)
	}
	if ai.ID.String() != b.ID() {
		t.Fatalf("address %s carries ID %s, want %s", target, ai.ID, b.ID())
	}
	if err := a.Host().Connect(ctx, *ai); err != nil {
		t.Fatalf("connect to %s: %v", target, err)
	}

	res := <-ping.Ping(ctx, a.Host(), ai.ID)
	if res.Error != nil {
		t.Fatalf("ping %s: %v", target, res.Error)
	}
	if res.RTT <= 0 {
		t.Fatalf("ping RTT %v", res.RTT)
	}

	// Both sides see the connection over the requested transport.
	conns := a.Host().Network().ConnsToPeer(ai.ID)
	if len(conns) == 0 {
		t.Fatal("no connection after ping")
	}
	if _, err := conns[0].RemoteMultiaddr().ValueForProtocol(proto); err != nil {
		t.Fatalf("connection is over %s, want protocol %d", conns[0].RemoteMultiaddr(), proto)
	}
}

func TestTCPConnectAndPing(t *testing.T) {
	a := startNode(t, loopTCP)
	b := startNode(t, loopTCP)
	connectAndPing(t, a, b, ma.P_TCP)
	connectAndPing(t, b, a, ma.P_TCP) // reuses the existing connection
}

func TestQUICConnectAndPing(t *testing.T) {
	a := startNode(t, loopQUIC)
	b := startNode(t, loopQUIC)
	connectAndPing(t, a, b, ma.P_QUIC_V1)
}

func TestAddrs(t *testing.T) {
	n := startNode(t, loopTCP, loopQUIC)
	addrs := n.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs() = %v, want one TCP and one QUIC address", addrs)
	}
	if !slices.IsSorted(addrs) {
		t.Errorf("Addrs() not sorted: %v", addrs)
	}
	suffix := "/p2p/" + n.ID()
	for _, s := range addrs {
		if !strings.HasPrefix(s, "/ip4/127.0.0.1/") {
			t.Errorf("address %s is not on 127.0.0.1", s)
		}
		if !strings.HasSuffix(s, suffix) {
			t.Errorf("address %s lacks %s", s, suffix)
		}
		if strings.Contains(s, "/tcp/0/") || strings.Contains(s, "/udp/0/") {
			t.Errorf("address %s has an unresolved port 0", s)
		}
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			t.Errorf("AddrInfoFromString(%q): %v", s, err)
		} else if ai.ID.String() != n.ID() {
			t.Errorf("address %s: ID %s, want %s", s, ai.ID, n.ID())
		}
	}

	path := filepath.Join(t.TempDir(), "addrs")
	if err := os.WriteFile(path, []byte("stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.WriteAddrs(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(addrs, "\n") + "\n"; string(b) != want {
		t.Fatalf("addrs file = %q, want %q", b, want)
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
	if err := n.WriteAddrs(filepath.Join(t.TempDir(), "missing", "addrs")); err == nil {
		t.Fatal("WriteAddrs into a missing directory: no error")
	}
}

func TestBadMultiaddr(t *testing.T) {
	k := newKey(t)
	for _, addr := range []string{
		"not-a-multiaddr",
		"/ip4/999.0.0.1/tcp/0",
		"/ip4/127.0.0.1/tcp/notaport",
		"/ip4/127.0.0.1/udp/0/ws-nonsense",
	} {
		n, err := Start(context.Background(), Config{Key: k, Listen: []string{loopTCP, addr}})
		if err == nil {
			n.Close()
			t.Errorf("Start with %q: no error", addr)
			continue
		}
		if !strings.Contains(err.Error(), "bad listen address") {
			t.Errorf("Start with %q: error %q does not say bad listen address", addr, err)
		}
	}
	// Well-formed, but no transport for it: must fail, not be skipped.
	n, err := Start(context.Background(), Config{Key: k, Listen: []string{loopTCP, "/ip4/127.0.0.1/tcp/0/ws"}})
	if err == nil {
		n.Close()
		t.Fatal("Start with a WebSocket address: no error")
	}
	if !strings.Contains(err.Error(), "listen on /ip4/127.0.0.1/tcp/0/ws") {
		t.Errorf("unsupported transport error %q does not name the address", err)
	}
}

func TestPortInUse(t *testing.T) {
	for _, listen := range []string{loopTCP, loopQUIC} {
		a := startNode(t, listen)
		used := strings.TrimSuffix(a.Addrs()[0], "/p2p/"+a.ID())
		n, err := Start(context.Background(), Config{Key: newKey(t), Listen: []string{used}})
		if err == nil {
			n.Close()
			t.Errorf("second node on %s: no error", used)
			continue
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("second node on %s: error %v is not EADDRINUSE", used, err)
		}
		if !strings.Contains(err.Error(), used) {
			t.Errorf("error %q does not name %s", err, used)
		}
	}
}

func TestStartCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := Start(ctx, Config{Key: newKey(t), Listen: []string{loopTCP}})
	if err == nil {
		n.Close()
		t.Fatal("Start with canceled context: no error")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v is not context.Canceled", err)
	}
}

func TestCloseTwice(t *testing.T) {
	n, err := Start(context.Background(), Config{Key: newKey(t), Listen: []string{loopTCP}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}
