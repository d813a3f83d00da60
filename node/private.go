package node

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	pnet "github.com/peerdrive/peerdrive/net"
)

// Private networks (docs/ledger.md §4).

// Files of a home on a private network.
const (
	NetworkKeyFile = "network.key" // the network's pre-shared key, libp2p's format
	BootstrapFile  = "bootstrap"   // bootstrap addresses from an invite, one a line
)

// InvitePrefix starts every invite.
const InvitePrefix = "pdnet1:"

// ErrBadInvite reports an invite that does not parse.
var ErrBadInvite = errors.New("not a PeerDrive network invite")

// FormatInvite is the one-line invite to a private network: the key and the
// addresses to join through, `pdnet1:KEY@ADDR,ADDR` (KEY in unpadded
// base64url; no @ part without addresses).
func FormatInvite(key []byte, addrs []string) string {
	s := InvitePrefix + base64.RawURLEncoding.EncodeToString(key)
	if len(addrs) > 0 {
		s += "@" + strings.Join(addrs, ",")
	}
	return s
}

// ParseInvite reads an invite: the key and the bootstrap addresses (each a
// full multiaddr with /p2p/ID).
func ParseInvite(s string) (key []byte, addrs []string, err error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, InvitePrefix)
	if !ok {
		return nil, nil, fmt.Errorf("%w: it starts %q", ErrBadInvite, InvitePrefix)
	}
	k, as, _ := strings.Cut(rest, "@")
	key, err = base64.RawURLEncoding.DecodeString(k)
	if err != nil || len(key) != pnet.PSKSize {
		return nil, nil, fmt.Errorf("%w: the key is not %d bytes of base64url", ErrBadInvite, pnet.PSKSize)
	}
	for _, a := range strings.Split(as, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, err := peer.AddrInfoFromString(a); err != nil {
			return nil, nil, fmt.Errorf("%w: address %q: %v", ErrBadInvite, a, err)
		}
		addrs = append(addrs, a)
	}
	return key, addrs, nil
}

// ReadNetworkKey reads a key file in libp2p's pre-shared key format.
func ReadNetworkKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("network key: %w", err)
	}
	k, err := pnet.DecodePSK(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("network key %s: %w", path, err)
	}
	return k, nil
}

// WriteNetworkKey writes key to path (mode 0600, temp file and rename).
func WriteNetworkKey(path string, key []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeAtomic(path, pnet.EncodePSK(key), 0o600)
}

func writeAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// Join stores an invite in home: the network key, and the addresses to
// bootstrap from, which every later mount and serve of the home uses.
func Join(home, invite string) error {
	key, addrs, err := ParseInvite(invite)
	if err != nil {
		return err
	}
	if err := WriteNetworkKey(filepath.Join(home, NetworkKeyFile), key); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := writeAtomic(filepath.Join(home, BootstrapFile), []byte(strings.Join(addrs, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	return nil
}

// NetworkKey is the home's network key, nil if it is on no private network.
func NetworkKey(home string) ([]byte, error) {
	path := filepath.Join(home, NetworkKeyFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return ReadNetworkKey(path)
}

// privateNetwork works out the node's private network from --network (a
// key file or an invite) or the home's network key, and adds the invite's
// and the home's bootstrap addresses to cfg.Bootstrap.
func (n *Node) privateNetwork(cfg *Config) error {
	if n.led == nil {
		n.led = &ledgerState{}
	}
	var key []byte
	var err error
	switch {
	case strings.HasPrefix(cfg.Network, InvitePrefix):
		var addrs []string
		if key, addrs, err = ParseInvite(cfg.Network); err != nil {
			return err
		}
		cfg.Bootstrap = append(cfg.Bootstrap, addrs...)
	case cfg.Network != "":
		if key, err = ReadNetworkKey(cfg.Network); err != nil {
			return err
		}
	default:
		if key, err = NetworkKey(cfg.Home); err != nil {
			return err
		}
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Home, BootstrapFile)); err == nil {
		cfg.Bootstrap = append(cfg.Bootstrap, strings.Fields(string(b))...)
	}
	slices.Sort(cfg.Bootstrap)
	cfg.Bootstrap = slices.Compact(cfg.Bootstrap)
	n.cfg.Bootstrap = cfg.Bootstrap
	if n.cfg.Repair.Audit == nil {
		// The replica (made before the ledger) reports audits to it.
		n.cfg.Repair.Audit = n.led
	}
	n.led.private = pnet.Private{PSK: key, Relay: cfg.Coordinator}
	if key != nil {
		n.log.Warn("private network: listening and dialling on TCP only (libp2p QUIC cannot carry a pre-shared key)")
	}
	return nil
}
