// Package net runs PeerDrive's libp2p node: identity, host, peer discovery,
// the shard protocol and the root protocol (docs/protocol.md). It moves
// opaque bytes and signed root records and imports none of PeerDrive's
// storage or filesystem packages.
package net

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	goyamux "github.com/libp2p/go-yamux/v5"
	ma "github.com/multiformats/go-multiaddr"
)

// Connection manager watermarks: above connHigh connections the node trims
// back down to connLow.
const (
	connLow  = 64
	connHigh = 256
)

// userAgent is the agent string the node announces via identify.
const userAgent = "peerdrive"

// DefaultListen is used when Config.Listen is empty: any IPv4 interface,
// kernel-chosen ports, TCP and QUIC.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}

// NewIdentity makes a new Ed25519 libp2p private key and returns it
// marshalled (crypto.MarshalPrivateKey) for storing in the home.
func NewIdentity() ([]byte, error) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("net: generate identity: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("net: marshal identity: %w", err)
	}
	return b, nil
}

// PeerID returns the peer ID string of a marshalled private key (used by
// `peerdrive id`, works offline).
func PeerID(key []byte) (string, error) {
	priv, err := unmarshalKey(key)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("net: peer ID from identity: %w", err)
	}
	return id.String(), nil
}

func unmarshalKey(key []byte) (crypto.PrivKey, error) {
	if len(key) == 0 {
		return nil, errors.New("net: empty identity key")
	}
	priv, err := crypto.UnmarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("net: bad identity key: %w", err)
	}
	return priv, nil
}

// Config configures Start.
type Config struct {
	Key    []byte   // marshalled private key
	Listen []string // multiaddrs; if empty, DefaultListen
	// Bootstrap peers: full multiaddrs with /p2p/ID. Dialled at start and
	// every 30 s while not connected; the DHT's only bootstrappers.
	Bootstrap []string
	// MDNS turns on LAN discovery (multicast DNS).
	MDNS bool

	Private // private network and relay settings (private.go)
}

// Node is a running libp2p host.
type Node struct {
	h         host.Host
	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // background goroutines
	scores    *Scores
	disc      *discovery // nil until started
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	shards *shardServer // nil until ServeShards
	roots  *rootServer  // nil until ServeRoots

	admitter atomic.Pointer[Admitter]    // the ledger's admission rule (admission.go)
	puts     atomic.Pointer[PutObserver] // told of our PUTs (admission.go)
	lease    leaseState                  // delegations and claims (lease.go)
}

// Start builds a libp2p host for cfg and listens on every address in
// cfg.Listen (or DefaultListen). It fails, with nothing left running, if any
// single address is malformed or cannot be listened on (for example, a port
// already in use; errors.Is(err, syscall.EADDRINUSE) holds then).
//
// The host has TCP and QUIC (v1) transports (new connections try TCP first),
// TLS and Noise security, the yamux muxer, a connection manager (low 64, high
// 256), a resource manager with libp2p's default limits, the ping service,
// the relay client, hole punching and AutoNAT, and PeerDrive's own DHT
// (docs/protocol.md §4). It has no NAT port mapping and no metrics. It dials
// only the bootstrap peers, peers learned from them and the DHT, and (with
// cfg.MDNS) peers found on the LAN. A bootstrap address that does not parse
// fails Start; one that cannot be reached is retried in the background.
//
// ctx bounds startup only; the node runs until Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("net: start: %w", err)
	}
	priv, err := unmarshalKey(cfg.Key)
	if err != nil {
		return nil, err
	}

	bootstrap, err := parseBootstrap(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}

	listen := cfg.Listen
	if len(listen) == 0 {
		listen = DefaultListen
	}
	if listen, err = tcpOnlyIfPrivate(listen, cfg.PSK); err != nil {
		return nil, err
	}
	addrs := make([]ma.Multiaddr, 0, len(listen))
	for _, s := range listen {
		a, err := ma.NewMultiaddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("net: bad listen address %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}

	cm, err := connmgr.NewConnManager(connLow, connHigh)
	if err != nil {
		return nil, fmt.Errorf("net: connection manager: %w", err)
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		cm.Close()
		return nil, fmt.Errorf("net: resource manager: %w", err)
	}

	// The relay client's peer source needs the host, which it gets once
	// libp2p.New returns (it is not called before reachability is known).
	var hostp atomic.Pointer[host.Host]

	h, err := libp2p.New(
		libp2p.Identity(priv),
		// Listening is done below, one address at a time, so that every
		// failure is reported (libp2p.New only fails if *all* addresses fail,
		// and flattens the error).
		libp2p.NoListenAddrs,
		// Only TCP and QUIC; the defaults would add WebSocket, WebTransport
		// and WebRTC. Reuseport is off for TCP, otherwise a second libp2p
		// process could bind the same port silently (SO_REUSEPORT) instead of
		// failing with "address already in use".
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		quicUnlessPrivate(cfg.PSK, libp2pquic.NewTransport),
		cfg.Private.options(),
		// TLS first: over TCP it costs ~8% less CPU per shard byte than
		// Noise here (BenchmarkShard: 1.9 vs 2.1 ms/MB, both ends); Noise
		// stays for peers that prefer it. Our TLS writes the records of a
		// frame to the socket together (batch.go).
		libp2p.Security(libp2ptls.ID, newBatchedTLS),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, bulkYamux()),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(dialWatch{}),
		libp2p.ResourceManager(rm),
		// Bulk shard traffic must go over TCP (docs/protocol.md §1).
		libp2p.SwarmOpts(swarm.WithDialRanker(tcpFirstRanker)),
		// NAT traversal for nodes behind home routers (docs/protocol.md §4):
		// the circuit relay v2 client transport (on by default) with
		// AutoRelay over relays among our connected peers only, DCUtR hole
		// punching, AutoNAT v1 and v2 (client and server; only public
		// addresses are probed), and a relay service that starts only when
		// AutoNAT finds this node publicly reachable.
		libp2p.EnableRelay(),
		libp2p.EnableAutoRelayWithPeerSource(connectedRelays(&hostp)),
		libp2p.EnableHolePunching(),
		libp2p.EnableNATService(),
		libp2p.EnableAutoNATv2(),
		libp2p.EnableRelayService(),
		// Default is to register collectors with the global Prometheus
		// registry; PeerDrive exports no metrics.
		libp2p.DisableMetrics(),
		libp2p.Ping(true),
		libp2p.UserAgent(userAgent),
		// Deliberately not added: NATPortMap (UPnP and NAT-PMP multicast on
		// the LAN). The DHT is made below, not through libp2p.Routing.
	)
	if err != nil {
		// The host did not come up; release what we created for it.
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("net: start libp2p host: %w", err)
	}
	hostp.Store(&h)
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{h: h, ctx: nctx, cancel: cancel, scores: NewScores()}

	// swarm.AddListenAddr returns the transport's error unflattened (so
	// errors.Is works); network.Network.Listen is the portable fallback.
	type addListener interface {
		AddListenAddr(ma.Multiaddr) error
	}
	for _, a := range addrs {
		var err error
		if al, ok := h.Network().(addListener); ok {
			err = al.AddListenAddr(a)
		} else {
			err = h.Network().Listen(a)
		}
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("net: listen on %s: %w", a, err)
		}
	}
	if err := ctx.Err(); err != nil {
		n.Close()
		return nil, fmt.Errorf("net: start: %w", err)
	}
	if err := n.startDiscovery(bootstrap, cfg.MDNS); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Host returns the underlying libp2p host.
func (n *Node) Host() host.Host { return n.h }

// ID returns the node's peer ID string.
func (n *Node) ID() string { return n.h.ID().String() }

// Addrs returns the full listen addresses with /p2p/ID, sorted, loopback and
// all: what `mount` prints and writes to HOME/addrs. Listeners on 0.0.0.0 are
// expanded to the interface addresses (host.Addrs does that).
func (n *Node) Addrs() []string {
	suffix := "/p2p/" + n.ID()
	var out []string
	for _, a := range n.h.Addrs() {
		s := a.String()
		if !strings.HasSuffix(s, suffix) {
			s += suffix
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// WriteAddrs writes Addrs() to path, one per line (temp file + rename).
func (n *Node) WriteAddrs(path string) error {
	var b strings.Builder
	for _, a := range n.Addrs() {
		b.WriteString(a)
		b.WriteByte('\n')
	}
	if err := writeFileAtomic(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("net: write addrs: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Close stops the host, closing all connections and listeners. It is safe to
// call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		var errs []error
		if n.disc != nil {
			errs = append(errs, n.disc.close())
		}
		errs = append(errs, n.h.Close())
		n.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("net: close: %w", err)
		}
	})
	return n.closeErr
}

// dialObserver, if set, is told of every address the node's swarm dials
// (tests check that nothing is dialled outside loopback).
var dialObserver atomic.Pointer[func(peer.ID, ma.Multiaddr)]

// dialWatch is the connection gater: it allows everything and reports dials
// to dialObserver.
type dialWatch struct{}

func (dialWatch) InterceptPeerDial(peer.ID) bool { return true }

func (dialWatch) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	if f := dialObserver.Load(); f != nil {
		(*f)(p, a)
	}
	return true
}

func (dialWatch) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (dialWatch) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}

func (dialWatch) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// bulkYamux is libp2p's yamux configuration with frames of up to 1 MiB
// instead of 64 KiB: a shard is 256 KiB to 4 MiB, and every frame costs a
// header, a read and window bookkeeping on both ends. BenchmarkShard/tcp,
// 3 runs each: put 2.10 -> 1.90, get 2.12 -> 1.93 CPU-ms per MB (medians).
// Frames are the sender's choice: peers with the default still interoperate.
func bulkYamux() *yamux.Transport {
	c := *(*goyamux.Config)(yamux.DefaultTransport)
	c.MaxMessageSize = bulkFrame
	return (*yamux.Transport)(&c)
}

const bulkFrame = 1 << 20 // bytes
