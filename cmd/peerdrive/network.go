package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/peerdrive/peerdrive/node"
)

func serveCmd(g *globals) *cobra.Command {
	var cfg node.Config
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run a storage-only node: contribute disk to the network, mount nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Home = g.home
			cfg.StorageOnly = true
			return runStorageNode(cfg, func(n *node.Node) string {
				return fmt.Sprintf("serving %s of storage", humanize.IBytes(uint64(n.Status().ContributedBytes)))
			})
		},
	}
	nodeFlags(c, &cfg)
	return c
}

// runStorageNode runs a node that mounts nothing (serve, coordinator) until
// SIGINT, SIGTERM or `peerdrive shutdown`, saying what it does on stderr.
func runStorageNode(cfg node.Config, banner func(*node.Node) string) error {
	ctx, stop := signalContext()
	defer stop()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	for _, a := range n.Addrs() {
		fmt.Fprintf(os.Stderr, "peerdrive: listening on %s\n", a)
	}
	fmt.Fprintf(os.Stderr, "peerdrive: %s\n", banner(n))
	select {
	case <-ctx.Done():
	case <-n.Stopped():
	}
	return n.Close(context.Background())
}

func syncCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var quiet bool
	c := &cobra.Command{
		Use:   "sync",
		Short: "Wait until every byte written so far is on peers at full redundancy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
			defer cancel()
			start := time.Now()
			last := time.Time{}
			var rate uploadRate
			err := node.Dial(g.home).Sync(ctx, timeout, func(pending int64) {
				now := time.Now()
				rate.see(now, pending)
				if quiet || now.Sub(last) < time.Second && pending != 0 {
					return
				}
				last = now
				fmt.Fprintf(os.Stderr, "peerdrive: %s waiting for upload%s\n", humanize.IBytes(uint64(pending)), rate.String(pending))
			})
			if err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			if !quiet {
				fmt.Fprintf(os.Stderr, "peerdrive: synced in %s\n", time.Since(start).Round(time.Millisecond))
			}
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long (exit non-zero)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print no progress")
	return c
}

func shutdownCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "shutdown",
		Short: "Ask the running node of the home to stop (a mount unmounts, flushing first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return node.Dial(g.home).Shutdown(ctx)
		},
	}
}

// uploadRate is how fast a sync's pending bytes go down, measured from the
// most pending bytes seen (a writer may still be adding some).
type uploadRate struct {
	top   int64
	topAt time.Time
	bps   float64 // bytes per second since top; 0 until measurable
}

func (r *uploadRate) see(now time.Time, pending int64) {
	if r.topAt.IsZero() || pending > r.top {
		r.top, r.topAt, r.bps = pending, now, 0
		return
	}
	if d := now.Sub(r.topAt).Seconds(); d >= 1 {
		r.bps = float64(r.top-pending) / d
	}
}

// String is " (RATE, about ETA left)" once a rate is known, else "".
func (r *uploadRate) String(pending int64) string {
	if r.bps <= 0 || pending <= 0 {
		return ""
	}
	left := time.Duration(float64(pending) / r.bps * float64(time.Second)).Round(time.Second)
	return fmt.Sprintf(" (%s/s, about %s left)", humanize.IBytes(uint64(r.bps)), left)
}
