package net

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	coredisc "github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	circuitproto "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peerdrive/peerdrive"
)

// Discovery parameters (docs/protocol.md §4).
const (
	// DHTPrefix is the DHT's protocol prefix: PeerDrive's DHT speaks
	// /peerdrive/kad/1.0.0 and never joins the public IPFS DHT.
	DHTPrefix = "/peerdrive"
	// StorageNamespace is what storage nodes advertise in the DHT.
	StorageNamespace = "peerdrive/storage/v1"
	// MDNSService is the mDNS service name.
	MDNSService = "peerdrive"

	discoverEvery   = 30 * time.Second // find-peers rounds without a trigger
	readvertise     = 10 * time.Minute
	roundGap        = time.Second            // least time between two rounds
	debounce        = 200 * time.Millisecond // gather triggers into one round
	dialTimeout     = 10 * time.Second
	roundTimeout    = 20 * time.Second
	maxFound        = 100 // providers asked for per round
	maxParallelDial = 8
	bootstrapTag    = "peerdrive-bootstrap"
)

// bootstrapEvery is how often unconnected bootstrap peers are dialled again
// (a variable for tests).
var bootstrapEvery = 30 * time.Second

// dhtProtocol is the DHT protocol ID with our prefix.
const dhtProtocol = protocol.ID(DHTPrefix + "/kad/1.0.0")

// discovery is the node's DHT, routing discovery and mDNS.
type discovery struct {
	n         *Node
	bootstrap []peer.AddrInfo
	dht       *dht.IpfsDHT
	rd        *drouting.RoutingDiscovery
	mdns      mdns.Service
	sub       event.Subscription
	trigger   chan struct{}
	dialing   chan struct{} // semaphore for discovered-peer dials

	lastAdvert time.Time
	advertRT   int // routing table size at the last advertisement

	mu     sync.Mutex
	closed bool // no new dials (mDNS calls back from goroutines of its own)
}

// parseBootstrap parses full multiaddrs with /p2p/ID, merging addresses of
// the same peer.
func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		s = strings.TrimSpace(s)
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("net: bad bootstrap address %q: %w", s, err)
		}
		if _, err := a.ValueForProtocol(ma.P_P2P); err != nil {
			return nil, fmt.Errorf("net: bootstrap address %q lacks /p2p/ID", s)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("net: bad bootstrap address: %w", err)
	}
	slices.SortFunc(infos, func(a, b peer.AddrInfo) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return infos, nil
}

// startDiscovery starts the DHT, the bootstrap and discovery loops and,
// if asked, mDNS.
func (n *Node) startDiscovery(bootstrap []peer.AddrInfo, withMDNS bool) error {
	self := n.h.ID()
	bootstrap = slices.DeleteFunc(bootstrap, func(ai peer.AddrInfo) bool { return ai.ID == self })
	kdht, err := dht.New(n.h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(DHTPrefix),
		// Only ours: without this option the DHT has no bootstrappers, and
		// it never falls back to libp2p's public ones.
		dht.BootstrapPeers(bootstrap...),
		// Values: drives' root records, under "/peerdrive-root/<owner>"
		// (docs/protocol.md §5.5). The libp2p defaults, /pk and /ipns,
		// stay registered but PeerDrive stores nothing under them.
		dht.NamespacedValidator(peerdrive.RootNamespace, rootValidator{}),
	)
	if err != nil {
		return fmt.Errorf("net: start DHT: %w", err)
	}
	d := &discovery{
		n:         n,
		bootstrap: bootstrap,
		dht:       kdht,
		rd:        drouting.NewRoutingDiscovery(kdht),
		trigger:   make(chan struct{}, 1),
		dialing:   make(chan struct{}, maxParallelDial),
	}
	n.disc = d
	d.sub, err = n.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("net: subscribe to identify events: %w", err)
	}
	for _, ai := range bootstrap {
		n.h.ConnManager().Protect(ai.ID, bootstrapTag)
	}
	n.wg.Add(3)
	go d.watchIdentify()
	go d.bootstrapLoop()
	go d.discoverLoop()

	if withMDNS {
		d.mdns = mdns.NewMdnsService(n.h, MDNSService, mdnsNotifee{d})
		if err := d.mdns.Start(); err != nil {
			return fmt.Errorf("net: start mDNS: %w", err)
		}
	}
	return nil
}

// close stops what startDiscovery started; the node's context is already
// cancelled.
func (d *discovery) close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	var errs []error
	if d.mdns != nil {
		errs = append(errs, d.mdns.Close())
	}
	if d.sub != nil {
		errs = append(errs, d.sub.Close())
	}
	errs = append(errs, d.dht.Close())
	return errors.Join(errs...)
}

// DHT returns the node's DHT.
func (n *Node) DHT() *dht.IpfsDHT {
	if n.disc == nil {
		return nil
	}
	return n.disc.dht
}

// watchIdentify triggers a discovery round whenever a peer that speaks our
// DHT has been identified.
func (d *discovery) watchIdentify() {
	defer d.n.wg.Done()
	for {
		select {
		case <-d.n.ctx.Done():
			return
		case e, ok := <-d.sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerIdentificationCompleted)
			if slices.Contains(ev.Protocols, dhtProtocol) {
				d.kick()
			}
		}
	}
}

// kick asks for a discovery round soon.
func (d *discovery) kick() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

// bootstrapLoop dials the bootstrap peers that are not connected, at start
// and every bootstrapEvery.
func (d *discovery) bootstrapLoop() {
	defer d.n.wg.Done()
	if len(d.bootstrap) == 0 {
		return
	}
	t := time.NewTicker(bootstrapEvery)
	defer t.Stop()
	for {
		for _, ai := range d.bootstrap {
			if d.n.h.Network().Connectedness(ai.ID) == network.Connected {
				continue
			}
			// A bootstrap peer is retried on our schedule, not libp2p's
			// dial backoff (which grows to minutes).
			if sw, ok := d.n.h.Network().(*swarm.Swarm); ok {
				sw.Backoff().Clear(ai.ID)
			}
			d.connect(ai, "bootstrap")
		}
		select {
		case <-d.n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// connect dials ai in the background (at most maxParallelDial at a time).
func (d *discovery) connect(ai peer.AddrInfo, via string) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.n.wg.Add(1)
	d.mu.Unlock()
	select {
	case d.dialing <- struct{}{}:
	case <-d.n.ctx.Done():
		d.n.wg.Done()
		return
	}
	go func() {
		defer d.n.wg.Done()
		defer func() { <-d.dialing }()
		ctx, cancel := context.WithTimeout(d.n.ctx, dialTimeout)
		defer cancel()
		if err := d.n.h.Connect(ctx, ai); err != nil {
			slog.Debug("peer dial failed", "peer", ai.ID, "via", via, "err", err)
			return
		}
		slog.Debug("peer connected", "peer", ai.ID, "via", via)
	}()
}

// discoverLoop runs discovery rounds when kicked (a new DHT peer) and every
// discoverEvery.
func (d *discovery) discoverLoop() {
	defer d.n.wg.Done()
	ctx := d.n.ctx
	wait := discoverEvery
	var last time.Time
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.trigger:
			t.Stop()
			// Gather the triggers of peers identified together, and keep
			// rounds roundGap apart.
			pause := max(debounce, roundGap-time.Since(last))
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			select {
			case <-d.trigger:
			default:
			}
		case <-t.C:
		}
		last = time.Now()
		if d.round(ctx) {
			wait = discoverEvery
		} else {
			wait = 2 * time.Second // no DHT peer yet, or the lookup failed
		}
	}
}

// round advertises this node (when due, and if it serves shards) and
// connects to the storage peers the DHT knows. It reports whether the DHT could be used.
func (d *discovery) round(ctx context.Context) bool {
	rt := d.dht.RoutingTable()
	// A peer just identified enters the routing table after one DHT round
	// trip; give it a moment.
	for i := 0; rt.Size() == 0 && i < 20; i++ {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	size := rt.Size()
	if size == 0 {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	ok := true
	d.n.mu.Lock()
	serving := d.n.shards != nil
	d.n.mu.Unlock()
	if serving && (time.Since(d.lastAdvert) >= readvertise || size > d.advertRT) {
		if _, err := d.rd.Advertise(rctx, StorageNamespace); err != nil {
			slog.Debug("DHT advertise failed", "err", err)
			ok = false
		} else {
			d.lastAdvert, d.advertRT = time.Now(), size
		}
	}
	found, err := d.rd.FindPeers(rctx, StorageNamespace, coredisc.Limit(maxFound))
	if err != nil {
		slog.Debug("DHT find peers failed", "err", err)
		return false
	}
	self := d.n.h.ID()
	for ai := range found {
		if ai.ID == self || len(ai.Addrs) == 0 || d.n.h.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		d.connect(ai, "dht")
	}
	return ok
}

// mdnsNotifee dials peers found on the LAN.
type mdnsNotifee struct{ d *discovery }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.d.n.h.ID() || m.d.n.ctx.Err() != nil || m.d.n.h.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	m.d.connect(ai, "mdns")
}

// connectedRelays is AutoRelay's peer source: the connected peers that serve
// the circuit relay v2 hop protocol. AutoRelay never learns of relays any
// other way, so it dials nobody new.
func connectedRelays(hp *atomic.Pointer[host.Host]) func(context.Context, int) <-chan peer.AddrInfo {
	return func(ctx context.Context, num int) <-chan peer.AddrInfo {
		ch := make(chan peer.AddrInfo, max(num, 0))
		defer close(ch)
		p := hp.Load()
		if p == nil {
			return ch
		}
		h := *p
		for _, id := range h.Network().Peers() {
			if len(ch) == cap(ch) {
				break
			}
			if ps, err := h.Peerstore().SupportsProtocols(id, circuitproto.ProtoIDv2Hop); err == nil && len(ps) > 0 {
				ch <- peer.AddrInfo{ID: id, Addrs: h.Peerstore().Addrs(id)}
			}
		}
		return ch
	}
}

// quicFallback is how long a dial waits for TCP before trying QUIC and the
// other transports; relayDelay how much longer before relays.
const (
	quicFallback = 300 * time.Millisecond
	relayDelay   = 500 * time.Millisecond
)

// tcpFirstRanker is the swarm's dial ranker: direct TCP addresses first
// (ordered among themselves as libp2p's default ranker orders them), then,
// quicFallback later, QUIC and any other direct transport, then relays. The
// swarm stops dialling once one connection is up, so between PeerDrive nodes
// that can reach each other over TCP, connections are TCP (docs/protocol.md
// §1). libp2p's default does the opposite, preferring QUIC.
func tcpFirstRanker(addrs []ma.Multiaddr) []network.AddrDelay {
	var tcp, other, relay []ma.Multiaddr
	for _, a := range addrs {
		switch {
		case isCircuit(a):
			relay = append(relay, a)
		case hasProtocol(a, ma.P_TCP):
			tcp = append(tcp, a)
		default:
			other = append(other, a)
		}
	}
	res := swarm.DefaultDialRanker(tcp)
	res = appendAfter(res, swarm.DefaultDialRanker(other), quicFallback)
	return appendAfter(res, swarm.DefaultDialRanker(relay), relayDelay)
}

// appendAfter appends more to res, delayed to start gap after res's last
// dial (or at once if res is empty).
func appendAfter(res, more []network.AddrDelay, gap time.Duration) []network.AddrDelay {
	var offset time.Duration
	for i, d := range res {
		if i == 0 || d.Delay+gap > offset {
			offset = d.Delay + gap
		}
	}
	for _, d := range more {
		d.Delay += offset
		res = append(res, d)
	}
	return res
}

func isCircuit(a ma.Multiaddr) bool { return hasProtocol(a, ma.P_CIRCUIT) }

func hasProtocol(a ma.Multiaddr, code int) bool {
	_, err := a.ValueForProtocol(code)
	return err == nil
}
