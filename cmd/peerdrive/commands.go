package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/node"
	"github.com/peerdrive/peerdrive/replica"
)

func initCmd(g *globals) *cobra.Command {
	var fromKey string
	c := &cobra.Command{
		Use:   "init",
		Short: "Create this node's identity and recovery key in the home",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := node.Init(g.home, fromKey); err != nil {
				return err
			}
			rk := filepath.Join(g.home, node.RecoveryKeyFile)
			fmt.Printf("Initialized PeerDrive home %s\n", g.home)
			if fromKey != "" {
				fmt.Printf("Recovery key adopted from %s into %s\n", fromKey, rk)
			} else {
				fmt.Printf("Your recovery key is in %s\n", rk)
				fmt.Println("Keep a copy off this machine (print it, or store it in a password manager):")
				fmt.Println("it is the only way to get your drive back if this machine is lost.")
			}
			return nil
		},
	}
	c.Flags().StringVar(&fromKey, "from-key", "", "adopt an existing recovery key (restore on a new machine)")
	return c
}

func idCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print this node's peer ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(filepath.Join(g.home, node.NodeKeyFile))
			if err != nil {
				return fmt.Errorf("no node key in %s (run 'peerdrive init'): %w", g.home, err)
			}
			id, err := pnet.PeerID(b)
			if err != nil {
				return err
			}
			fmt.Println(id)
			return nil
		},
	}
}

// sizeValue is a pflag.Value for sizes like 512MiB, 100GB or 1T.
type sizeValue struct{ v *int64 }

func (s sizeValue) String() string {
	if s.v == nil || *s.v == 0 {
		return "0"
	}
	return humanize.IBytes(uint64(*s.v))
}

func (s sizeValue) Set(str string) error {
	n, err := humanize.ParseBytes(str)
	if err != nil {
		return fmt.Errorf("size %q: want a number with an optional unit such as 512MiB, 100GB or 1T", str)
	}
	*s.v = int64(n)
	return nil
}

func (sizeValue) Type() string { return "size" }

var _ pflag.Value = sizeValue{}

// nodeFlags are the flags shared by mount, serve and demo.
func nodeFlags(c *cobra.Command, cfg *node.Config) {
	f := c.Flags()
	f.StringArrayVar(&cfg.Listen, "listen", nil, "listen multiaddr (repeatable; default /ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1)")
	f.StringArrayVar(&cfg.Bootstrap, "bootstrap", nil, "peer to join through, a full multiaddr with /p2p/ID (repeatable)")
	f.Var(sizeValue{&cfg.Contribute}, "contribute", "disk space given to the network, e.g. 100GB (default 10GiB)")
	f.Var(sizeValue{&cfg.CacheSize}, "cache-size", "bound of the local chunk cache, e.g. 2GiB (default 2GiB)")
	f.BoolVar(&cfg.MDNS, "mdns", false, "discover peers on the LAN with multicast DNS")
	f.IntVar(&cfg.DataShards, "data-shards", node.DefaultDataShards, "erasure coding: data shards per chunk (k)")
	f.IntVar(&cfg.ParityShards, "parity-shards", node.DefaultParityShards, "erasure coding: parity shards per chunk (m)")
	ledgerFlags(f, cfg) // ledger.go: --network, --ledger-allowance
	gcFlags(f, cfg)     // gc.go: --shard-lease, --lease-renew, --gc-every (hidden)
	f.IntVar(&cfg.ComputeSlots, "compute-slots", 0, "run up to N compute units for peers at a time (0: supply no compute)")
	f.Var(computeWindows{&cfg.ComputeWindows}, "compute-window", "hours compute units may run, e.g. 'Mon-Fri 22:00-07:00' (repeatable; default always)")
	f.BoolVar(&cfg.ComputeWhenIdle, "compute-when-idle", false, "suspend compute units while this machine's own load is high")
	f.Var(sizeValue{&cfg.ComputeMemory}, "compute-memory", "memory all compute units may use together, e.g. 2GiB (default 1GiB a slot)")
}

func mountCmd(g *globals) *cobra.Command {
	var cfg node.Config
	c := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Run the node and mount the drive in the foreground until SIGINT, SIGTERM or umount",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Home = g.home
			if cfg.DataShards < 1 || cfg.ParityShards < 0 || cfg.DataShards+cfg.ParityShards > 256 {
				return fmt.Errorf("%w: --data-shards must be ≥ 1, --parity-shards ≥ 0, and their sum ≤ 256", errUsage)
			}
			dir := args[0]
			// Check the mountpoint before touching the home: a bad one
			// changes nothing.
			if abs, err := filepath.Abs(dir); err == nil {
				if err := node.CheckMountpoint(abs); err != nil {
					return err
				}
			}
			ctx, stop := signalContext()
			defer stop()
			cfg.Progress = func(msg string) { fmt.Fprintf(os.Stderr, "peerdrive: %s\n", msg) }
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			for _, a := range n.Addrs() {
				fmt.Fprintf(os.Stderr, "peerdrive: listening on %s\n", a)
			}
			if why := n.ReadOnlyReason(); why != "" {
				fmt.Fprintf(os.Stderr, "peerdrive: %s\n", why)
			}
			if err := n.Mount(dir); err != nil {
				n.Close(context.Background())
				return err
			}
			fmt.Fprintf(os.Stderr, "peerdrive: mounted %s\n", dir)
			go func() {
				select {
				case <-ctx.Done():
				case <-n.Stopped():
				}
				if err := n.Unmount(); err != nil {
					fmt.Fprintf(os.Stderr, "peerdrive: %v\n", err)
				}
			}()
			n.Wait()
			fmt.Fprintf(os.Stderr, "peerdrive: unmounted %s, flushing\n", dir)
			return n.Close(context.Background())
		},
	}
	nodeFlags(c, &cfg)
	c.Flags().BoolVar(&cfg.ReadOnly, "read-only", false, "mount read-only")
	c.Flags().Uint64Var(&cfg.Snapshot, "snapshot", 0, "mount this snapshot (an ID from 'peerdrive snapshots') read-only")
	c.Flags().BoolVar(&cfg.Takeover, "takeover", false, "become the drive's writer although another node's lease has not run out (that machine is gone)")
	c.Flags().DurationVar(&cfg.RestoreTimeout, "restore-timeout", 2*time.Minute, "how long to look for the drive on the network when the home has none yet")
	c.Flags().IntVar(&cfg.Retention.Last, "keep-last", 10, "snapshots: keep the newest N")
	c.Flags().IntVar(&cfg.Retention.Hourly, "keep-hourly", 24, "snapshots: keep one per hour for the last N hours")
	c.Flags().IntVar(&cfg.Retention.Daily, "keep-daily", 30, "snapshots: keep one per day for the last N days")
	c.Flags().BoolVar(&cfg.AllowOther, "allow-other", false, "let other local users use the mount (permissions still apply)")
	c.Flags().DurationVar(&cfg.Repair.RepairGrace, "repair-grace", replica.DefaultRepairGrace, "rebuild the shards of a peer unreachable this long on other peers")
	c.Flags().DurationVar(&cfg.Repair.AuditInterval, "audit-interval", replica.DefaultAuditInterval, "audit one random shard on each peer this often (negative: never)")
	c.Flags().Var(sizeValue{&cfg.Repair.RepairBytesPerSec}, "repair-bandwidth", "bound of repair traffic per second, e.g. 4MiB (default 4MiB)")
	return c
}

func statusCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the running node's peers, quota, usage and redundancy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := node.Dial(g.home).Status(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				e := json.NewEncoder(os.Stdout)
				e.SetIndent("", "  ")
				return e.Encode(st)
			}
			fmt.Printf("peer id:        %s\n", st.PeerID)
			if st.Mountpoint != "" {
				fmt.Printf("mounted on:     %s\n", st.Mountpoint)
			}
			fmt.Printf("peers:          %d\n", st.Peers)
			fmt.Printf("erasure coding: %d data + %d parity shards\n", st.DataShards, st.ParityShards)
			fmt.Printf("contributed:    %s\n", humanize.IBytes(uint64(st.ContributedBytes)))
			if st.QuotaBytes > 0 {
				fmt.Printf("quota:          %s\n", humanize.IBytes(st.QuotaBytes))
			}
			fmt.Printf("used:           %s in %d chunks (%s stored), %d inodes\n", humanize.IBytes(st.UsedBytes), st.Chunks, humanize.IBytes(st.StoredBytes), st.Inodes)
			fmt.Printf("pending upload: %s\n", humanize.IBytes(st.PendingUploadBytes))
			if st.LastUploadError != "" {
				fmt.Printf("upload error:   %s\n", st.LastUploadError)
			}
			fmt.Printf("under-replicated chunks: %d, lost chunks: %d\n", st.UnderReplicatedChunks, st.LostChunks)
			if st.Chunks > 0 {
				fmt.Printf("peers that may be lost now without losing data: %d\n", st.PeerLossTolerated)
			}
			if st.CacheBytes > 0 || st.CachedBytes > 0 {
				fmt.Printf("cache:          %s of %s\n", humanize.IBytes(uint64(max(st.CachedBytes, 0))), humanize.IBytes(uint64(max(st.CacheBytes, 0))))
			}
			fmt.Printf("held for peers: %s in %d shards\n", humanize.IBytes(uint64(max(st.HeldBytes, 0))), st.HeldShards)
			if st.Snapshots > 0 {
				fmt.Printf("snapshots:      %d (root %d, written by %s)\n", st.Snapshots, st.RootSeq, st.Writer)
			}
			if st.ReadOnlyReason != "" {
				fmt.Printf("read-only:      %s\n", st.ReadOnlyReason)
			}
			fmt.Printf("audits: %d passed, %d failed; segments repaired: %d\n", st.AuditsPassed, st.AuditsFailed, st.RepairedSegments)
			printPeers(st)
			printLedger(st) // ledger.go
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}

func snapshotsCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "snapshots",
		Short: "List the drive's snapshots (ID, time, files, bytes), newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			list, err := node.Dial(g.home).Snapshots(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(list)
			}
			fmt.Printf("%-8s %-25s %10s %12s\n", "ID", "TIME", "FILES", "BYTES")
			for _, s := range list {
				fmt.Printf("%-8d %-25s %10d %12s\n", s.Seq, time.Unix(0, s.Time).Format(time.RFC3339), s.Files, humanize.IBytes(s.Bytes))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}

// printPeers prints the storage peers' table of `status`.
func printPeers(st node.Status) {
	if len(st.StoragePeers) == 0 {
		return
	}
	fmt.Printf("storage peers (latency, free of contributed, requests ok/failed):\n")
	for _, r := range st.StoragePeers {
		lat := "-"
		if r.LatencyMS > 0 {
			lat = fmt.Sprintf("%.1f ms", r.LatencyMS)
		}
		space := "space unknown"
		if r.CapacityBytes > 0 {
			space = fmt.Sprintf("%s free of %s", humanize.IBytes(uint64(max(r.CapacityBytes-r.UsedBytes, 0))), humanize.IBytes(uint64(r.CapacityBytes)))
		}
		state := ""
		switch {
		case !r.Healthy:
			state = "  unhealthy"
		case r.Full:
			state = "  full"
		}
		fmt.Printf("  %s  %s  %s  %d/%d%s\n", r.Peer, lat, space, r.Successes, r.Failures, state)
	}
}
