package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/node"
)

// Private networks, the coordinator and the ledger (docs/ledger.md).

// ledgerCommands are network, join and coordinator.
func ledgerCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{networkCmd(g), joinCmd(g), coordinatorCmd(g)}
}

// ledgerFlags are the node flags of the ledger and private networks.
func ledgerFlags(f *pflag.FlagSet, cfg *node.Config) {
	f.StringVar(&cfg.Network, "network", "", "private network to run in: a key file or an invite (default: the home's, from 'peerdrive join')")
	f.Var(sizeValue{&cfg.LedgerAllowance}, "ledger-allowance", "what a peer may store here before it gives back (default 256MiB)")
}

func networkCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "network",
		Short: "Create a private network or print an invite to it",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var boot []string
	var force bool
	create := &cobra.Command{
		Use:   "create [FILE]",
		Short: "Write a new network key (default HOME/network.key) and print an invite on one line",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := filepath.Join(g.home, node.NetworkKeyFile)
			if len(args) == 1 {
				path = args[0]
			}
			if _, err := os.Stat(path); err == nil && !force {
				return fmt.Errorf("%s exists: a new key would lock out every node that has the old one (--force to replace it)", path)
			}
			key, err := pnet.NewPSK()
			if err != nil {
				return err
			}
			if err := node.WriteNetworkKey(path, key); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "peerdrive: network key written to %s; nodes without it cannot connect to nodes that have it\n", path)
			fmt.Println(node.FormatInvite(key, inviteAddrs(g.home, boot)))
			return nil
		},
	}
	create.Flags().StringArrayVar(&boot, "bootstrap", nil, "address to put in the invite (default: this home's running node's TCP addresses)")
	create.Flags().BoolVar(&force, "force", false, "replace an existing key file")
	var keyFile string
	invite := &cobra.Command{
		Use:   "invite",
		Short: "Print an invite to the home's private network on one line: key and bootstrap addresses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				keyFile = filepath.Join(g.home, node.NetworkKeyFile)
			}
			key, err := node.ReadNetworkKey(keyFile)
			if err != nil {
				return err
			}
			fmt.Println(node.FormatInvite(key, inviteAddrs(g.home, boot)))
			return nil
		},
	}
	invite.Flags().StringArrayVar(&boot, "bootstrap", nil, "address to put in the invite (default: this home's running node's TCP addresses)")
	invite.Flags().StringVar(&keyFile, "key", "", "network key file (default HOME/network.key)")
	c.AddCommand(create, invite)
	return c
}

// inviteAddrs are the given addresses, or the TCP addresses of the home's
// running node (HOME/addrs): a private network has no QUIC.
func inviteAddrs(home string, given []string) []string {
	if len(given) > 0 {
		return given
	}
	b, err := os.ReadFile(filepath.Join(home, node.AddrsFile))
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range strings.Fields(string(b)) {
		if strings.Contains(a, "/tcp/") && !strings.Contains(a, "/p2p-circuit") {
			out = append(out, a)
		}
	}
	return out
}

func joinCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "join INVITE",
		Short: "Join a private network: keep the invite's key and bootstrap addresses in the home",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := node.Join(g.home, args[0]); err != nil {
				if errors.Is(err, node.ErrBadInvite) {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				return err
			}
			_, addrs, _ := node.ParseInvite(args[0])
			fmt.Printf("Joined the private network: key in %s, %d bootstrap addresses in %s\n",
				filepath.Join(g.home, node.NetworkKeyFile), len(addrs), filepath.Join(g.home, node.BootstrapFile))
			return nil
		},
	}
}

func coordinatorCmd(g *globals) *cobra.Command {
	var cfg node.Config
	c := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a network's coordinator: bootstrap, circuit relay and ledger of record (storage-only node)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Home = g.home
			cfg.StorageOnly = true
			cfg.Coordinator = true
			return runStorageNode(cfg, func(*node.Node) string {
				return "coordinator for " + networkName(g.home, cfg.Network)
			})
		},
	}
	nodeFlags(c, &cfg)
	return c
}

func networkName(home, flag string) string {
	if flag != "" || fileExists(filepath.Join(home, node.NetworkKeyFile)) {
		return "a private network (peerdrive network invite prints the invite)"
	}
	return "an open network (no network key: anyone may connect)"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// printLedger prints the ledger part of `peerdrive status`.
func printLedger(st node.Status) {
	if len(st.Ledger) > 0 {
		fmt.Printf("ledger (per peer: held for it / held by it, audits passed/failed, CPU given/taken):\n")
		for _, r := range st.Ledger {
			fmt.Printf("  %s  %s / %s  audits %d/%d  cpu %.1fs/%.1fs\n", r.Peer,
				humanize.IBytes(uint64(max(r.HeldFor, 0))), humanize.IBytes(uint64(max(r.HeldBy+r.ProbeBytes, 0))),
				r.AuditsPassed, r.AuditsFailed, r.CPUGiven, r.CPUTaken)
		}
	}
	if len(st.NetworkLedger) > 0 {
		fmt.Printf("network ledger (coordinator; per peer: takes / gives, reporters):\n")
		for _, t := range st.NetworkLedger {
			fmt.Printf("  %s  %s / %s  %d\n", t.Peer, humanize.IBytes(uint64(max(t.Taken, 0))), humanize.IBytes(uint64(max(t.Given, 0))), t.Reporters)
		}
	}
}
