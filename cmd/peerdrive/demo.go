package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/peerdrive/peerdrive/node"
)

const demoContribution = 1 << 30

func demoCmd(g *globals) *cobra.Command {
	var peers int
	var k, m int
	c := &cobra.Command{
		Use:   "demo MOUNTPOINT",
		Short: "Zero-setup demo: start storage peers in-process on 127.0.0.1 and mount a drive backed by them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if peers < 1 || peers > 64 {
				return fmt.Errorf("%w: --peers must be 1 to 64", errUsage)
			}
			if k == 0 {
				k, m = demoShards(peers)
			}
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := node.CheckMountpoint(dir); err != nil {
				return err
			}
			tmp, err := os.MkdirTemp("", "peerdrive-demo-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			ctx, stop := signalContext()
			defer stop()
			log := slog.Default()

			var nodes []*node.Node
			var mu sync.Mutex
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				for _, n := range nodes {
					n.Close(context.Background())
				}
			}()
			var boot []string
			for i := range peers {
				n, err := node.Start(ctx, node.Config{
					Home:        filepath.Join(tmp, fmt.Sprintf("peer-%d", i+1)),
					Listen:      []string{"/ip4/127.0.0.1/tcp/0"},
					Contribute:  demoContribution,
					StorageOnly: true,
					Log:         log,
				})
				if err != nil {
					return fmt.Errorf("storage peer %d: %w", i+1, err)
				}
				mu.Lock()
				nodes = append(nodes, n)
				mu.Unlock()
				boot = append(boot, loopbackAddr(n.Addrs()))
				go func(i int) { // peerdrive shutdown stops one peer
					<-n.Stopped()
					n.Close(context.Background())
					fmt.Fprintf(os.Stderr, "peerdrive: storage peer %d stopped\n", i+1)
				}(i)
			}
			home := filepath.Join(tmp, "drive")
			drive, err := node.Start(ctx, node.Config{
				Home:         home,
				Listen:       []string{"/ip4/127.0.0.1/tcp/0"},
				Bootstrap:    boot,
				Contribute:   demoContribution,
				DataShards:   k,
				ParityShards: m,
				CacheSize:    256 << 20,
				Log:          log,
			})
			if err != nil {
				return err
			}
			mu.Lock()
			nodes = append(nodes, drive)
			mu.Unlock()
			if err := drive.Mount(dir); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "peerdrive: mounted %s\n", dir)
			fmt.Printf(`PeerDrive demo: %d storage peers on 127.0.0.1, erasure coding %d+%d (any %d of %d shards rebuild a chunk).
The drive is mounted on %s. Things to try, in another terminal:

  cp -r /usr/share/doc %s/                    # copy files in
  %s --home %s sync      # wait until they are on the peers
  %s --home %s status    # peers, quota, redundancy
  %s --home %s/peer-1 shutdown   # stop a peer: the data stays readable

Press Ctrl-C to unmount and clean everything up.
`, peers, k, m, k, k+m, dir, dir, os.Args[0], home, os.Args[0], home, os.Args[0], tmp)
			go func() {
				select {
				case <-ctx.Done():
				case <-drive.Stopped():
				}
				drive.Unmount()
			}()
			drive.Wait()
			fmt.Fprintf(os.Stderr, "peerdrive: unmounted %s, cleaning up\n", dir)
			return nil
		},
	}
	c.Flags().IntVar(&peers, "peers", 6, "number of in-process storage peers")
	c.Flags().IntVar(&k, "data-shards", 0, "data shards per chunk (default: fit the peers, e.g. 4 of 6)")
	c.Flags().IntVar(&m, "parity-shards", 0, "parity shards per chunk (with --data-shards)")
	return c
}

// demoShards fits erasure coding to the number of peers: a third of them
// may fail.
func demoShards(peers int) (k, m int) {
	if peers < 2 {
		return 1, 0
	}
	m = max(1, peers/3)
	return peers - m, m
}

// loopbackAddr picks the 127.0.0.1 TCP address.
func loopbackAddr(addrs []string) string {
	for _, a := range addrs {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	if len(addrs) > 0 {
		return addrs[0]
	}
	return ""
}
