package node

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	pnet "github.com/peerdrive/peerdrive/net"
)

func TestInvite(t *testing.T) {
	key, err := pnet.NewPSK()
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{
		"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf",
		"/ip6/::1/tcp/4001/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf",
	}
	for _, as := range [][]string{nil, addrs} {
		inv := FormatInvite(key, as)
		k, a, err := ParseInvite(inv + "\n")
		if err != nil || string(k) != string(key) || !slices.Equal(a, as) {
			t.Errorf("ParseInvite(%q) = %x, %q, %v", inv, k, a, err)
		}
	}
	for _, bad := range []string{"", "pdnet1:", "pdnet2:" + FormatInvite(key, nil)[7:], "pdnet1:AAAA", FormatInvite(key, []string{"/ip4/1.2.3.4/tcp/1"})} {
		if _, _, err := ParseInvite(bad); !errors.Is(err, ErrBadInvite) {
			t.Errorf("ParseInvite(%q) = %v, want ErrBadInvite", bad, err)
		}
	}

	home := t.TempDir()
	if err := Join(home, FormatInvite(key, addrs)); err != nil {
		t.Fatal(err)
	}
	got, err := NetworkKey(home)
	if err != nil || string(got) != string(key) {
		t.Fatalf("NetworkKey after Join = %x, %v", got, err)
	}
	if st, err := os.Stat(filepath.Join(home, NetworkKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("network key file: %v, %v; want mode 0600", st, err)
	}
	n := &Node{cfg: Config{Home: home}, log: slog.New(slog.DiscardHandler)}
	cfg := Config{Home: home, Bootstrap: []string{addrs[0]}}
	if err := n.privateNetwork(&cfg); err != nil {
		t.Fatal(err)
	}
	if string(n.led.private.PSK) != string(key) || len(cfg.Bootstrap) != 2 {
		t.Errorf("private network from the home: key %x, bootstrap %q", n.led.private.PSK, cfg.Bootstrap)
	}
	if none, err := NetworkKey(t.TempDir()); none != nil || err != nil {
		t.Errorf("a home without a key: %x, %v", none, err)
	}
}
