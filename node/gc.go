package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/snapshot"
	"github.com/peerdrive/peerdrive/store"
)

// Garbage collection, shard leases and owner delegation (docs/gc.md),
// wired into the node.

// DelegationTime is how long a delegation this node signs for itself is
// valid; it is signed anew every lease renewal period and at start.
const DelegationTime = 7 * 24 * time.Hour

// GCConfig are the node's knobs for GC and leases (zero: the defaults of
// docs/gc.md §3). Config embeds it.
type GCConfig struct {
	// ShardLease is the lifetime of holds this node grants (0: store.LeaseTime).
	ShardLease time.Duration
	// LeaseRenew is how often the drive renews its holds (0: store.RenewEvery).
	LeaseRenew time.Duration
	// GCEvery is the period of collection passes (0: replica.DefaultGCEvery).
	GCEvery time.Duration
}

// gcState is the node's collector and sweeper.
type gcState struct {
	gc *replica.GC

	mu        sync.Mutex
	manifests map[uint64]*snapshot.Manifest // retained manifests read so far
}

// startSweeper makes the shard store grant leases of the configured length
// and drops expired holds periodically (every node serves shards).
func (n *Node) startSweeper() {
	if n.cfg.ShardLease > 0 {
		n.shards.SetLease(n.cfg.ShardLease)
	}
	every := store.SweepEvery
	if n.cfg.ShardLease > 0 {
		every = min(every, max(n.cfg.ShardLease/4, 100*time.Millisecond))
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			ctx, cancel := context.WithCancel(context.Background())
			freed, holds, err := n.shards.Sweep(ctx, time.Now())
			cancel()
			switch {
			case err != nil:
				n.log.Warn("sweep of expired holds failed", "err", err)
			case holds > 0:
				n.log.Info("expired holds dropped", "holds", holds, "freed_bytes", freed)
			}
			select {
			case <-n.bgStop:
				return
			case <-t.C:
			}
		}
	}()
}

// startGC starts the drive's collector and presents the owner delegation
// to peers. Called from startDrive once the replica runs.
func (n *Node) startGC(keys *Keys) {
	owner := crypto.OwnerKey(keys.Recovery)
	renew := n.cfg.LeaseRenew
	if renew == 0 {
		renew = store.RenewEvery
	}
	n.delegate(owner)
	n.gcs = &gcState{manifests: map[uint64]*snapshot.Manifest{}}
	if n.cfg.ReadOnly || n.cfg.Snapshot != 0 {
		return // a read-only mount collects nothing
	}
	n.gcs.gc = replica.NewGC(n.rep, replica.GCOptions{
		Every:      n.cfg.GCEvery,
		RenewEvery: renew,
		Retained:   n.retained,
		Delete:     n.deleteHold,
		Renew:      n.net.RenewShards,
		OnMissing:  n.shardsMissing,
		Lock:       &n.pubMu,
		Log:        n.log,
	})
	n.gcs.gc.Start()
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		t := time.NewTicker(renew)
		defer t.Stop()
		for {
			select {
			case <-n.bgStop:
				return
			case <-t.C:
				n.delegate(owner)
			}
		}
	}()
}

// delegate signs a fresh delegation of the drive's owner key to this node.
func (n *Node) delegate(owner []byte) {
	p, err := peer.Decode(n.net.ID())
	if err == nil {
		var d []byte
		if d, err = pnet.SignDelegation(owner, p, time.Now().Add(DelegationTime)); err == nil {
			err = n.net.SetDelegation(d)
		}
	}
	if err != nil {
		n.log.Warn("owner delegation not set; holds stay keyed by peer ID", "err", err)
	}
}

// stopGC stops the collector (before the replica closes).
func (n *Node) stopGC() {
	if n.gcs != nil && n.gcs.gc != nil {
		n.gcs.gc.Close()
	}
}

// gcKick asks for a collection pass (after a publish).
func (n *Node) gcKick() {
	if n.gcs != nil && n.gcs.gc != nil {
		n.gcs.gc.Kick()
	}
}

// gcStatus fills the collector's status fields.
func (n *Node) gcStatus(st *Status) {
	if n.gcs == nil || n.gcs.gc == nil {
		return
	}
	s := n.gcs.gc.Stats()
	st.GCPendingBytes, st.GCFreedBytes = s.PendingBytes, s.FreedBytes
}

// deleteHold deletes this drive's hold on a shard; a peer that no longer
// has it for us counts as done.
func (n *Node) deleteHold(ctx context.Context, p peer.ID, id peerdrive.ShardID) error {
	err := n.net.DeleteShard(ctx, p, id)
	if errors.Is(err, pnet.ErrNotFound) || errors.Is(err, pnet.ErrNotOwner) {
		return nil
	}
	return err
}

// shardsMissing hands shards a peer no longer holds to repair, if the
// replica has it (the audits helper's ShardsMissing).
func (n *Node) shardsMissing(seg uint64, shards []replica.ShardLoc) {
	if rp, ok := any(n.rep).(interface {
		ShardsMissing(seg uint64, shards []replica.ShardLoc)
	}); ok {
		rp.ShardsMissing(seg, shards)
	}
}

// retained reads what the retained snapshots need: the oldest one's time
// and the objects (manifests and pieces) they name. Manifests other than
// the newest are fetched once and kept in memory.
func (n *Node) retained(ctx context.Context) (replica.Retained, error) {
	rec, body := n.pub.Known()
	if rec == nil || body == nil || len(body.History) == 0 || n.pub.Keys == nil {
		return replica.Retained{}, nil
	}
	r := replica.Retained{OK: true, Objects: map[peerdrive.ChunkID]bool{}}
	n.gcs.mu.Lock()
	defer n.gcs.mu.Unlock()
	keep := map[uint64]*snapshot.Manifest{}
	for i, info := range body.History {
		if t := time.Unix(0, info.Time); i == 0 || t.Before(r.Oldest) {
			r.Oldest = t
		}
		r.Objects[info.Manifest.ID] = true
		r.Segments = append(r.Segments, info.Manifest.Seg)
		m := n.gcs.manifests[info.Seq]
		switch {
		case m != nil:
		case info.Seq == body.Current.Seq:
			m = &body.Current
		default:
			fctx, cancel := context.WithTimeout(ctx, time.Minute)
			var err error
			m, err = snapshot.FetchManifest(fctx, n.rep, n.pub.Keys, info)
			cancel()
			if err != nil {
				return replica.Retained{}, err
			}
		}
		keep[info.Seq] = m
		for _, pc := range m.Pieces {
			r.Objects[pc.ID] = true
			r.Segments = append(r.Segments, pc.Seg)
		}
	}
	n.gcs.manifests = keep
	return r, nil
}
