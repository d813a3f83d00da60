// Package churn simulates a PeerDrive network of thousands of virtual nodes
// over a virtual year, to choose the erasure code (k+m), the repair grace
// period and the repair bandwidth. It drives the real repair planner
// (replica.Plan) with a virtual clock and virtual peers; placement follows
// the real rule (shards of a segment on distinct usable peers, in random
// order); audits follow the real auditor's rhythm (one random shard per
// holder per audit interval), and a failed audit distrusts the peer as the
// real auditor does.
//
// The model (docs/churn.md):
//   - Every node contributes the same space, filled to Fill. The network's
//     segments are too many to simulate one by one, so the simulator follows
//     a uniform sample of them and scales repair traffic up by the sample's
//     share of all segments. Losses are reported per million segments.
//   - A node is online or offline; outages are exponential with mean
//     MeanOutage, and availability sets how often they start. An offline
//     node keeps its shards. A node leaves for good with probability
//     DeparturesPerMonth per month; a newcomer takes its slot at once.
//   - A fraction of nodes are bad: they stay online and answer, but have
//     silently dropped a fraction of their shards.
//   - Each segment's owner repairs it (only while online), within a repair
//     budget of min(Bandwidth×RepairShare, replica.DefaultRepairBytesPerSec)
//     per online owner; the network's budget is shared in Plan's order
//     (closest to loss first). A repair fetches k shards and puts the
//     missing ones.
//   - A segment is lost once fewer than k of its shards survive anywhere.
package churn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/segment"
)

// Config of one simulation run.
type Config struct {
	Nodes    int // virtual nodes
	Segments int // segments followed (a sample of the network's)
	K, M     int // erasure code

	Duration time.Duration // virtual time simulated (default 365 days)
	Step     time.Duration // clock tick (default 15 minutes)

	Availability       float64       // fraction of time a node is online (default 0.9)
	MeanOutage         time.Duration // mean length of an outage (default 8 h)
	DeparturesPerMonth float64       // fraction of nodes leaving for good each month (default 0.03)
	BadFraction        float64       // nodes that silently drop shards (default 0.01)
	BadDrop            float64       // fraction of its shards a bad node drops (default 0.5)

	Contributed  int64   // bytes each node gives (default 100 GB)
	Fill         float64 // fraction of it in use (default 0.7)
	SegmentBytes int64   // plaintext bytes per segment (default 4 MiB)
	Bandwidth    int64   // upstream bytes/s of a node (default 2.5 MB/s, 20 Mbit/s)
	RepairShare  float64 // fraction of Bandwidth repair may use (default 0.25)

	Grace         time.Duration // repair grace period (default replica.DefaultRepairGrace)
	Threshold     int           // replica.Policy.Threshold (0: replica.DefaultThreshold)
	AuditInterval time.Duration // default replica.DefaultAuditInterval

	Seed uint64
}

func (c *Config) defaults() {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Duration == 0 {
		c.Duration = 365 * 24 * time.Hour
	}
	if c.Step == 0 {
		c.Step = 15 * time.Minute
	}
	def(&c.Availability, 0.9)
	if c.MeanOutage == 0 {
		c.MeanOutage = 8 * time.Hour
	}
	def(&c.DeparturesPerMonth, 0.03)
	def(&c.BadFraction, 0.01)
	def(&c.BadDrop, 0.5)
	if c.Contributed == 0 {
		c.Contributed = 100e9
	}
	def(&c.Fill, 0.7)
	if c.SegmentBytes == 0 {
		c.SegmentBytes = 4 << 20
	}
	if c.Bandwidth == 0 {
		c.Bandwidth = 2_500_000
	}
	def(&c.RepairShare, 0.25)
	if c.Grace == 0 {
		c.Grace = replica.DefaultRepairGrace
	}
	if c.AuditInterval == 0 {
		c.AuditInterval = replica.DefaultAuditInterval
	}
	if c.Threshold <= 0 {
		c.Threshold = replica.DefaultThreshold(c.K, c.M)
	}
	if c.Segments == 0 {
		c.Segments = 5000
	}
}

// Result of one run.
type Result struct {
	Config Config
	// Total is how many segments the whole network holds; the run
	// followed Config.Segments of them.
	Total float64
	Lost  int // segments of the sample lost
	// LostPerMillion is segments lost per million per year.
	LostPerMillion float64
	// RepairPerNodeDay is repair traffic (bytes fetched plus put) per node
	// per day, over the whole network.
	RepairPerNodeDay float64
	Repairs          int     // segment repairs in the sample
	Backlog          int     // segments Plan chose that still wait for repair at the end
	Usable           float64 // drive bytes per contributed byte: k/n × (1 − admin share)
	Departures       int
	Caught           int // bad nodes distrusted after an audit
}

type vnode struct {
	id           peer.ID
	online       bool
	offlineSince time.Time
	outage       int // counts outages, to match grace checks to them
	bad          bool
	distrusted   bool
	segs         []int // sample segments with a shard here (some replaced since)
}

type vseg struct {
	owner  int       // node index of the owner (owners stay; see docs)
	holder []int     // node index per shard
	alive  []bool    // shard bytes still exist
	peers  []peer.ID // holder IDs in shard order (for Plan)
	lost   bool
}

// graceCheck is a node whose outage may have outlasted the grace period.
type graceCheck struct {
	node   int
	outage int // -1: the node left for good
	id     peer.ID
	segs   []int // of a node that left
}

// Run simulates the network and returns its figures.
func Run(c Config) (Result, error) {
	c.defaults()
	n := c.K + c.M
	if c.K < 1 || c.M < 0 || n > 256 {
		return Result{}, fmt.Errorf("churn: bad code %d+%d", c.K, c.M)
	}
	if c.Nodes < 2*n {
		return Result{}, fmt.Errorf("churn: %d nodes are too few for %d shards a segment and their repair", c.Nodes, n)
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nextID := 0
	newID := func() peer.ID { nextID++; return peer.ID(fmt.Sprintf("v%07d", nextID)) }

	// Plan's view of every peer, current and departed, kept up to date on
	// each change (Plan reads LastSeen only of unconnected peers).
	peers := map[peer.ID]replica.PeerState{}
	nodes := make([]*vnode, c.Nodes)
	for i := range nodes {
		nd := &vnode{id: newID(), online: rng.Float64() < c.Availability, bad: rng.Float64() < c.BadFraction}
		nd.offlineSince = now
		nodes[i] = nd
		peers[nd.id] = replica.PeerState{Connected: nd.online, LastSeen: now}
	}

	// Placement: n distinct random nodes, as replica places a segment on
	// usable peers in random order.
	segs := make([]*vseg, c.Segments)
	for s := range segs {
		sg := &vseg{owner: rng.IntN(c.Nodes), holder: make([]int, n), alive: make([]bool, n), peers: make([]peer.ID, n)}
		for i, h := range sampleDistinct(rng, c.Nodes, n) {
			sg.holder[i], sg.alive[i], sg.peers[i] = h, true, nodes[h].id
			nodes[h].segs = append(nodes[h].segs, s)
		}
		segs[s] = sg
	}

	params := segment.Params{K: c.K, M: c.M}
	shardBytes := float64(c.SegmentBytes) / float64(c.K)
	total := float64(c.Nodes) * float64(c.Contributed) * c.Fill / (shardBytes * float64(n))
	scale := total / float64(c.Segments) // network segments per simulated one
	perOwner := math.Min(float64(c.Bandwidth)*c.RepairShare, float64(replica.DefaultRepairBytesPerSec))
	steps := int(c.Duration / c.Step)
	pOnline := math.Min(1, float64(c.Step)/float64(c.MeanOutage))      // offline → online
	pOffline := math.Min(1, pOnline*(1-c.Availability)/c.Availability) // online → offline
	pDepart := c.DeparturesPerMonth * float64(c.Step) / float64(30*24*time.Hour)
	auditsPerStep := max(1, int(math.Round(float64(c.Step)/float64(c.AuditInterval))))
	graceSteps := int(c.Grace/c.Step) + 1 // the first tick past the grace

	var res Result
	res.Config, res.Total = c, total
	res.Usable = float64(c.K) / float64(n) * (1 - 0.03)
	var repairBytes, budget float64

	// Segments with a shard to rebuild (candidates); those that became one
	// or changed this tick (fresh); those Plan chose but the budget or an
	// offline owner left for later (pending). Plan looks at fresh and
	// pending each tick and at all candidates once a virtual day: a segment
	// below the threshold only changes when one of its holders does, but
	// one waiting for k holders online to rebuild from is not told.
	candidates, fresh, pending := map[int]bool{}, map[int]bool{}, map[int]bool{}
	mark := func(s int) { candidates[s], fresh[s] = true, true }
	sweepEvery := max(1, int(24*time.Hour/c.Step))
	checks := map[int][]graceCheck{}
	gone := func(sg *vseg, i int) bool { // the shard is to be rebuilt, as Plan judges
		nd := nodes[sg.holder[i]]
		if nd.id != sg.peers[i] {
			return now.Sub(peers[sg.peers[i]].LastSeen) > c.Grace // departed
		}
		return nd.distrusted || (!nd.online && now.Sub(nd.offlineSince) > c.Grace)
	}
	checkLost := func(s int) {
		sg := segs[s]
		if sg.lost {
			return
		}
		alive := 0
		for i, h := range sg.holder {
			if sg.alive[i] && nodes[h].id == sg.peers[i] {
				alive++
			}
		}
		if alive < c.K {
			sg.lost = true
			res.Lost++
		}
	}
	// Bad nodes have dropped shards silently.
	for idx, nd := range nodes {
		if nd.bad {
			dropShards(rng, nd, idx, segs, c.BadDrop)
		}
	}
	for s := range segs {
		checkLost(s)
	}

	for step := 1; step <= steps; step++ {
		now = now.Add(c.Step)
		online := 0
		for idx, nd := range nodes {
			switch {
			case rng.Float64() < pDepart:
				// Leaves for good with its shards; a newcomer takes the slot.
				res.Departures++
				peers[nd.id] = replica.PeerState{LastSeen: now}
				for _, s := range nd.segs {
					sg := segs[s]
					for i, h := range sg.holder {
						if h == idx && sg.peers[i] == nd.id {
							sg.alive[i] = false
						}
					}
					checkLost(s)
				}
				checks[step+graceSteps] = append(checks[step+graceSteps], graceCheck{node: idx, id: nd.id, outage: -1, segs: nd.segs})
				for _, s := range nd.segs {
					mark(s)
				}
				*nd = vnode{id: newID(), online: true, bad: rng.Float64() < c.BadFraction}
				peers[nd.id] = replica.PeerState{Connected: true, LastSeen: now}
			case nd.online && rng.Float64() < pOffline:
				nd.online, nd.offlineSince = false, now
				nd.outage++
				peers[nd.id] = replica.PeerState{LastSeen: now, Distrusted: nd.distrusted}
				checks[step+graceSteps] = append(checks[step+graceSteps], graceCheck{node: idx, id: nd.id, outage: nd.outage})
			case !nd.online && rng.Float64() < pOnline:
				nd.online = true
				peers[nd.id] = replica.PeerState{Connected: true, LastSeen: now, Distrusted: nd.distrusted}
			}
			if nd.online {
				online++
			}
			// Audits: owners check one random shard of theirs per holder
			// per audit interval; a missing one distrusts the holder.
			if nd.bad && nd.online && !nd.distrusted && len(nd.segs) > 0 {
				for a := 0; a < auditsPerStep && !nd.distrusted; a++ {
					sg := segs[nd.segs[rng.IntN(len(nd.segs))]]
					for i, h := range sg.holder {
						if h == idx && sg.peers[i] == nd.id && !sg.alive[i] {
							nd.distrusted = true
						}
					}
				}
				if nd.distrusted {
					res.Caught++
					peers[nd.id] = replica.PeerState{Connected: true, LastSeen: now, Distrusted: true}
					for _, s := range nd.segs {
						mark(s)
					}
				}
			}
		}
		// Outages and departures that outlasted the grace period.
		for _, g := range checks[step] {
			nd := nodes[g.node]
			if g.outage < 0 {
				for _, s := range g.segs {
					mark(s)
				}
				continue
			}
			if nd.id != g.id || nd.online || nd.outage != g.outage {
				continue
			}
			for _, s := range nd.segs {
				mark(s)
			}
		}
		delete(checks, step)

		// Repair: the real planner over the segments that may need it.
		look := fresh
		if step%sweepEvery == 0 {
			look = candidates
		}
		for s := range pending {
			look[s] = true
		}
		states := make([]replica.SegmentState, 0, len(look))
		for s := range look {
			if segs[s].lost {
				delete(candidates, s)
				continue
			}
			states = append(states, replica.SegmentState{Num: uint64(s), Params: params, Peers: slices.Clone(segs[s].peers)})
		}
		clear(pending)
		stepBudget := float64(online) * perOwner * c.Step.Seconds() / scale
		budget = math.Min(budget+stepBudget, 4*stepBudget)
		for _, t := range replica.Plan(states, peers, replica.Policy{Grace: c.Grace, Threshold: c.Threshold}, now) {
			sg := segs[int(t.Seg)]
			cost := float64(c.K+len(t.Missing)) * shardBytes
			if !nodes[sg.owner].online || cost > budget {
				pending[int(t.Seg)] = true
				continue
			}
			// The owner rebuilds only from shards that still exist.
			readable := 0
			for i, h := range sg.holder {
				if sg.alive[i] && nodes[h].id == sg.peers[i] && nodes[h].online && !nodes[h].distrusted {
					readable++
				}
			}
			if readable < c.K {
				continue
			}
			budget -= cost
			repairBytes += cost
			res.Repairs++
			exclude := map[int]bool{}
			for _, h := range sg.holder {
				exclude[h] = true
			}
			for _, i := range t.Missing {
				h := pickTarget(rng, nodes, exclude)
				if h < 0 {
					break
				}
				exclude[h] = true
				sg.holder[i], sg.alive[i], sg.peers[i] = h, true, nodes[h].id
				if nodes[h].bad && rng.Float64() < c.BadDrop {
					sg.alive[i] = false
				}
				nodes[h].segs = append(nodes[h].segs, int(t.Seg))
			}
		}
		// Segments leave the candidates once no shard is to be rebuilt.
		for s := range look {
			sg, keep := segs[s], false
			for i := range sg.holder {
				if gone(sg, i) {
					keep = true
					break
				}
			}
			if !keep || sg.lost {
				delete(candidates, s)
			}
		}
		clear(fresh)
	}
	years := c.Duration.Hours() / (365 * 24)
	res.LostPerMillion = float64(res.Lost) / float64(c.Segments) * 1e6 / years
	res.RepairPerNodeDay = repairBytes * scale / float64(c.Nodes) / c.Duration.Hours() * 24
	res.Backlog = len(pending)
	return res, nil
}

// dropShards makes a bad node lose a fraction of the shards it holds.
func dropShards(rng *rand.Rand, nd *vnode, idx int, segs []*vseg, frac float64) {
	for _, s := range nd.segs {
		for i, h := range segs[s].holder {
			if h == idx && segs[s].peers[i] == nd.id && rng.Float64() < frac {
				segs[s].alive[i] = false
			}
		}
	}
}

// pickTarget chooses a usable node outside exclude, at random, as repair
// does: online, trusted, holding no shard of the segment. -1 if none after
// a bounded search.
func pickTarget(rng *rand.Rand, nodes []*vnode, exclude map[int]bool) int {
	for try := 0; try < 64; try++ {
		h := rng.IntN(len(nodes))
		if !exclude[h] && nodes[h].online && !nodes[h].distrusted {
			return h
		}
	}
	return -1
}

// sampleDistinct picks n distinct indexes below max.
func sampleDistinct(rng *rand.Rand, max, n int) []int {
	out := make([]int, 0, n)
	seen := map[int]bool{}
	for len(out) < n {
		h := rng.IntN(max)
		if seen[h] {
			continue
		}
		seen[h] = true
		out = append(out, h)
	}
	return out
}
