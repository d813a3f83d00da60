package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerdrive/peerdrive/churn"
)

func simulateCmd() *cobra.Command {
	var (
		nodes, codes []string
		days         int
		base         churn.Config
		svg          string
	)
	c := &cobra.Command{
		Use:   "simulate",
		Short: "Simulate churn in a network of virtual nodes: durability, repair traffic and usable space per erasure code",
		Long: `simulate drives the real repair planner with thousands of virtual nodes and a
virtual clock (see docs/churn.md for the model) and prints, for each erasure
code and network size, segments lost per million per year, repair traffic per
node per day and the usable fraction of contributed space.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			base.Duration = time.Duration(days) * 24 * time.Hour
			var cfgs []churn.Config
			for _, ns := range nodes {
				n, err := strconv.Atoi(ns)
				if err != nil || n < 1 {
					return fmt.Errorf("%w: --nodes %q", errUsage, ns)
				}
				for _, code := range codes {
					k, m, ok := parseCode(code)
					if !ok {
						return fmt.Errorf("%w: --codes %q: want K+M, e.g. 12+4", errUsage, code)
					}
					c := base
					c.Nodes, c.K, c.M = n, k, m
					cfgs = append(cfgs, c)
				}
			}
			rs := make([]churn.Result, len(cfgs))
			errs := make([]error, len(cfgs))
			var wg sync.WaitGroup
			sem := make(chan struct{}, 2)
			for i, c := range cfgs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					start := time.Now()
					rs[i], errs[i] = churn.Run(c)
					fmt.Fprintf(os.Stderr, "peerdrive: simulated %d+%d on %d nodes in %s\n", c.K, c.M, c.Nodes, time.Since(start).Round(time.Second))
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					return err
				}
			}
			if err := churn.Table(os.Stdout, rs); err != nil {
				return err
			}
			if svg != "" {
				f, err := os.Create(svg)
				if err != nil {
					return err
				}
				title := fmt.Sprintf("PeerDrive churn simulation: %d days, availability %.0f%%, %.0f%% leave per month, grace %s",
					days, 100*rs[0].Config.Availability, 100*rs[0].Config.DeparturesPerMonth, strings.TrimSuffix(strings.TrimSuffix(rs[0].Config.Grace.String(), "0s"), "0m"))
				if err := churn.SVG(f, title, rs); err != nil {
					f.Close()
					return err
				}
				return f.Close()
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringSliceVar(&nodes, "nodes", []string{"1000", "10000"}, "network sizes to simulate")
	f.StringSliceVar(&codes, "codes", []string{"4+2", "12+4", "29+51", "3+7"}, "erasure codes K+M to compare")
	f.IntVar(&days, "days", 365, "virtual days to simulate")
	f.IntVar(&base.Segments, "segments", 5000, "segments followed (a uniform sample of the network's)")
	f.Float64Var(&base.Availability, "availability", 0.9, "fraction of time a node is online")
	f.DurationVar(&base.MeanOutage, "outage", 8*time.Hour, "mean length of an outage")
	f.Float64Var(&base.DeparturesPerMonth, "departures", 0.03, "fraction of nodes leaving for good per month")
	f.Float64Var(&base.BadFraction, "bad", 0.01, "fraction of nodes that silently drop half their shards")
	f.DurationVar(&base.Grace, "grace", 0, "repair grace period (default: the node's default)")
	f.IntVar(&base.Threshold, "threshold", 0, "repair a segment once fewer than this many of its shards are left (default: the node's default for the code)")
	f.DurationVar(&base.Step, "step", 15*time.Minute, "clock tick")
	f.Uint64Var(&base.Seed, "seed", 1, "random seed")
	f.StringVar(&svg, "svg", "", "also write a bar chart to this SVG file")
	return c
}

func parseCode(s string) (k, m int, ok bool) {
	a, b, found := strings.Cut(s, "+")
	if !found {
		return 0, 0, false
	}
	k, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	return k, m, err1 == nil && err2 == nil && k >= 1 && m >= 0 && k+m <= 256
}
