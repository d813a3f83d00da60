package net

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestPlacementOrder: usable peers come first, fast ones and roomy ones
// more often near the front, slow and nearly full ones seldom, and every
// usable one sometimes; unhealthy and full peers come last, ranked.
func TestPlacementOrder(t *testing.T) {
	s := NewScores()
	p := func(name string) peer.ID { return peer.ID(name) }
	set := func(name string, f func(*PeerScore)) { s.update(p(name), f) }
	const gib = int64(1) << 30
	set("fast", func(ps *PeerScore) { ps.Latency = 5 * time.Millisecond })
	set("slow", func(ps *PeerScore) { ps.Latency = 800 * time.Millisecond })
	set("roomy", func(ps *PeerScore) { ps.Used, ps.Capacity = 0, 40*gib })
	set("cramped", func(ps *PeerScore) { ps.Used, ps.Capacity = 10*gib-(16<<20), 10*gib })
	for _, name := range []string{"a", "b", "c"} {
		set(name, func(ps *PeerScore) { ps.Used, ps.Capacity = 5*gib, 10*gib })
	}
	set("sick", func(ps *PeerScore) { ps.InARow = unhealthyFailures })
	s.SetFull(p("full"), true)
	peers := []peer.ID{p("sick"), p("full"), p("a"), p("b"), p("c"), p("fast"), p("slow"), p("roomy"), p("cramped"), p("unknown")}

	const rounds, front = 4000, 4 // how often each peer is among the first 4
	rng := rand.New(rand.NewPCG(1, 2))
	count := map[peer.ID]int{}
	for range rounds {
		o := s.placementOrder(peers, time.Now(), rng.ExpFloat64)
		if len(o) != len(peers) {
			t.Fatalf("order has %d peers, want %d", len(o), len(peers))
		}
		if o[len(o)-2] != p("full") || o[len(o)-1] != p("sick") {
			t.Fatalf("order ends %v, want the full peer, then the unhealthy one", o[len(o)-2:])
		}
		for _, q := range o[:front] {
			count[q]++
		}
	}
	share := func(name string) float64 { return float64(count[p(name)]) / rounds }
	for _, c := range []struct {
		name   string
		lo, hi float64
	}{
		{"fast", 0.9, 1}, {"roomy", 0.9, 1}, // weights 10 and 8
		{"a", 0.15, 0.6}, {"unknown", 0.15, 0.6}, // weight 1 (the median)
		{"slow", 0.005, 0.1}, {"cramped", 0.001, 0.06}, // 1/16, 1/64
	} {
		if got := share(c.name); got < c.lo || got > c.hi {
			t.Errorf("peer %s among the first %d in %.3f of orders, want %.3f to %.3f", c.name, front, got, c.lo, c.hi)
		}
	}
	if t.Failed() {
		t.Log(fmt.Sprint(count))
	}
}

func TestSetSpace(t *testing.T) {
	s := NewScores()
	p := peer.ID("p")
	s.SetSpace(p, 10, 100)
	if f, ok := s.Get(p).Free(); !ok || f != 90 {
		t.Fatalf("free = %d, %v; want 90", f, ok)
	}
	// An older peer's reply carries no space; an absurd one is ignored.
	s.SetSpace(p, 0, 0)
	s.SetSpace(p, 1<<63, 1<<63)
	if f, ok := s.Get(p).Free(); !ok || f != 90 {
		t.Fatalf("free after replies without space = %d, %v; want 90", f, ok)
	}
	s.SetSpace(p, 200, 100) // over capacity: no room
	if f, ok := s.Get(p).Free(); !ok || f != 0 {
		t.Fatalf("free when used exceeds capacity = %d, %v; want 0", f, ok)
	}
	if _, ok := s.Get(peer.ID("q")).Free(); ok {
		t.Fatal("free space of a peer never heard from is known")
	}
}
