package net

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
)

// Private networks and the coordinator's relay (docs/ledger.md §4, §5).

// PSKSize is the length of a private network's pre-shared key.
const PSKSize = 32

// ErrBadPSK reports a network key that does not decode.
var ErrBadPSK = errors.New("not a private network key")

// Private configures a private network and the relay service.
type Private struct {
	// PSK, if set, is the private network's 32-byte pre-shared key: the
	// node talks only to nodes that have it (libp2p pnet: every connection
	// is encrypted with it below the security handshake, so a node without
	// it fails to connect). QUIC cannot carry a PSK: the node listens and
	// dials on TCP only.
	PSK []byte
	// Relay makes the node a circuit relay (v2) for its peers whatever
	// AutoNAT finds: the coordinator of a private network.
	Relay bool
}

// options are the libp2p options for p.
func (p Private) options() libp2p.Option {
	var opts []libp2p.Option
	if len(p.PSK) > 0 {
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(p.PSK)))
	}
	if p.Relay {
		// The relay service (always enabled) starts once the node is
		// publicly reachable; a coordinator is, by definition.
		opts = append(opts, libp2p.ForceReachabilityPublic())
	}
	return libp2p.ChainOptions(opts...)
}

// quicUnlessPrivate adds the QUIC transport unless the node is on a
// private network: libp2p's QUIC refuses pre-shared keys.
func quicUnlessPrivate(psk []byte, tpt any) libp2p.Option {
	if len(psk) > 0 {
		return libp2p.ChainOptions()
	}
	return libp2p.Transport(tpt)
}

// tcpOnlyIfPrivate drops the QUIC (UDP) listen addresses on a private
// network; it fails if none is left.
func tcpOnlyIfPrivate(listen []string, psk []byte) ([]string, error) {
	if len(psk) == 0 {
		return listen, nil
	}
	var out []string
	for _, s := range listen {
		a, err := ma.NewMultiaddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("net: bad listen address %q: %w", s, err)
		}
		if hasProtocol(a, ma.P_UDP) {
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("net: a private network runs over TCP only (libp2p QUIC has no pre-shared keys), and no --listen address is TCP: %q", listen)
	}
	return out, nil
}

// NewPSK makes a new random private network key.
func NewPSK() ([]byte, error) {
	k := make([]byte, PSKSize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("net: new network key: %w", err)
	}
	return k, nil
}

// EncodePSK writes key in libp2p's pre-shared key file format, version 1,
// base16 (what go-ipfs calls swarm.key).
func EncodePSK(key []byte) []byte {
	return []byte("/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n")
}

// DecodePSK reads a key file in libp2p's pre-shared key format (v1, any of
// its encodings); the key must be 32 bytes.
func DecodePSK(r io.Reader) ([]byte, error) {
	k, err := pnet.DecodeV1PSK(io.LimitReader(r, 4096))
	if err != nil {
		return nil, fmt.Errorf("net: %w: %v", ErrBadPSK, err)
	}
	if len(k) != PSKSize {
		return nil, fmt.Errorf("net: %w: %d bytes, want %d", ErrBadPSK, len(k), PSKSize)
	}
	return bytes.Clone(k), nil
}
