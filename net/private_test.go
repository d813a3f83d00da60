package net

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
)

func startPrivate(t *testing.T, psk []byte, listen ...string) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := Start(ctx, Config{Key: newKey(t), Listen: listen, Private: Private{PSK: psk}})
	if err != nil {
		t.Fatalf("Start(%v): %v", listen, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func pskConnect(a, b *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()})
}

// TestPrivateNetwork: nodes with the key connect and move shards over TCP; a node without
// it, or with another key, cannot connect either way; QUIC listen addresses are dropped.
func TestPrivateNetwork(t *testing.T) {
	psk, err := NewPSK()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewPSK()
	a := startPrivate(t, psk, "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")
	b := startPrivate(t, psk, "/ip4/127.0.0.1/tcp/0")
	for _, ad := range a.h.Addrs() {
		if strings.Contains(ad.String(), "quic") {
			t.Errorf("private node listens on %s", ad)
		}
	}
	if err := pskConnect(b, a); err != nil {
		t.Fatalf("nodes with the same key: %v", err)
	}
	a.ServeShards(newMemStore())
	data := []byte("private shard")
	id := peerdrive.ShardID(crypto.ContentID(data))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.PutShard(ctx, a.h.ID(), id, data); err != nil {
		t.Fatalf("put over the private network: %v", err)
	}

	outsider := startNode(t, "/ip4/127.0.0.1/tcp/0")
	stranger := startPrivate(t, other, "/ip4/127.0.0.1/tcp/0")
	for name, n := range map[string]*Node{"no key": outsider, "another key": stranger} {
		if err := pskConnect(n, a); err == nil {
			t.Errorf("node with %s connected to the private network", name)
		}
		if err := pskConnect(a, n); err == nil {
			t.Errorf("private node connected to a node with %s", name)
		}
	}

	if _, err := Start(ctx, Config{Key: newKey(t), Listen: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, Private: Private{PSK: psk}}); err == nil {
		t.Errorf("a private node with only a QUIC listen address started")
	}
}

func TestPSKFormat(t *testing.T) {
	k, _ := NewPSK()
	got, err := DecodePSK(bytes.NewReader(EncodePSK(k)))
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("round trip: %x, %v; want %x", got, err, k)
	}
	for _, bad := range []string{"", "/key/swarm/psk/1.0.0/\n/base16/\nzz\n", "/key/swarm/psk/1.0.0/\n/base16/\n0011\n"} {
		if _, err := DecodePSK(strings.NewReader(bad)); !errors.Is(err, ErrBadPSK) {
			t.Errorf("DecodePSK(%q) = %v, want ErrBadPSK", bad, err)
		}
	}
}

// TestRelayService: a coordinator (Relay) serves the circuit relay v2 hop protocol without
// waiting for AutoNAT; an ordinary node on loopback does not.
func TestRelayService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	relay, err := Start(ctx, Config{Key: newKey(t), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Private: Private{Relay: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	plain := startNode(t, "/ip4/127.0.0.1/tcp/0")
	const hop = "/libp2p/circuit/relay/0.2.0/hop"
	has := func(n *Node) bool {
		for _, p := range n.h.Mux().Protocols() {
			if p == hop {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !has(relay); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the relay node does not serve %s", hop)
		}
	}
	if has(plain) {
		t.Errorf("a node on loopback serves %s", hop)
	}
}
