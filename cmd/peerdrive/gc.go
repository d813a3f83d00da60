package main

import (
	"github.com/spf13/pflag"

	"github.com/peerdrive/peerdrive/node"
)

// gcFlags are the lease and garbage-collection knobs (docs/gc.md §3). The
// defaults (30-day leases renewed daily, hourly passes) suit real use; the
// flags are hidden and exist for tests that cannot wait a month.
func gcFlags(f *pflag.FlagSet, cfg *node.Config) {
	f.DurationVar(&cfg.ShardLease, "shard-lease", 0, "lifetime of holds this node grants without renewal (default 720h)")
	f.DurationVar(&cfg.LeaseRenew, "lease-renew", 0, "how often the drive renews its holds on peers (default 24h)")
	f.DurationVar(&cfg.GCEvery, "gc-every", 0, "how often the drive collects dead segments besides after each sync (default 1h)")
	for _, n := range []string{"shard-lease", "lease-renew", "gc-every"} {
		_ = f.MarkHidden(n)
	}
}
