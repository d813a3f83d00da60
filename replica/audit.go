package replica

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/audit"
	"github.com/peerdrive/peerdrive/store"
)

// The auditor: docs/audit.md §4.

// AuditSink receives the outcome of every audit of a peer (the ledger
// implements it). It must not block.
type AuditSink interface {
	AuditResult(p peer.ID, ok bool)
}

// PeerAudits counts the audits of one peer.
type PeerAudits struct {
	Passed, Failed int64
}

// AuditStats are the figures of audits and repair for status.
type AuditStats struct {
	Passed, Failed   int64
	RepairedSegments int64
	Peers            map[peer.ID]PeerAudits
}

// AuditStats returns the audit and repair counters since Start.
func (r *Replica) AuditStats() AuditStats {
	m := r.maint
	if m == nil {
		return AuditStats{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := AuditStats{Passed: m.passed, Failed: m.failed, RepairedSegments: m.repaired, Peers: map[peer.ID]PeerAudits{}}
	for p, a := range m.audits {
		st.Peers[p] = *a
	}
	return st
}

// HeldBy returns the bytes of this drive's shards that each peer holds, as
// of the last health check (every few seconds).
func (r *Replica) HeldBy() map[peer.ID]int64 {
	m := r.maint
	if m == nil {
		return map[peer.ID]int64{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.held)
}

// auditTarget is a shard chosen for an audit.
type auditTarget struct {
	id   peerdrive.ShardID
	size int64
}

// auditor runs an audit round every AuditInterval.
func (r *Replica) auditor() {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.AuditInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.auditRound(r.ctx)
	}
}

// auditRound audits one random shard on each connected holder.
func (r *Replica) auditRound(ctx context.Context) {
	connected := map[peer.ID]bool{}
	for _, p := range r.net.StoragePeers() {
		connected[p] = true
	}
	picks, err := r.pickAudits(connected)
	if err != nil {
		r.log.Warn("audit: segment records unreadable", "err", err)
		return
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for p, tg := range picks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.auditOne(ctx, p, tg)
		}()
	}
	wg.Wait()
}

// pickAudits chooses one shard per connected holder, uniformly at random
// (reservoir sampling over the segment records).
func (r *Replica) pickAudits(connected map[peer.ID]bool) (map[peer.ID]auditTarget, error) {
	picks := map[peer.ID]auditTarget{}
	seen := map[peer.ID]int{}
	err := r.db.View(func(tx *store.Txn) error {
		return tx.Iterate([]byte{tagSegment}, nil, true, func(k, v []byte) (bool, error) {
			var rec Segment
			if err := peerdrive.Unmarshal(v, &rec); err != nil {
				return false, err
			}
			size := int64(rec.Params.ShardSize(int(rec.Size)))
			for _, sh := range rec.Shards {
				p := peer.ID(sh.Peer)
				if !connected[p] {
					continue
				}
				seen[p]++
				if rand.IntN(seen[p]) == 0 {
					picks[p] = auditTarget{id: sh.ID, size: size}
				}
			}
			return true, nil
		})
	})
	return picks, err
}

// randomLeaves draws n distinct leaf indexes below count (all of them if
// count ≤ n). The runtime's generator is seeded from the OS: a peer cannot
// predict the draw.
func randomLeaves(n int, count int64) []int {
	if count <= int64(n) {
		out := make([]int, count)
		for i := range out {
			out[i] = i
		}
		return out
	}
	set := map[int]bool{}
	out := make([]int, 0, n)
	for len(out) < n {
		i := int(rand.Int64N(count))
		if !set[i] {
			set[i] = true
			out = append(out, i)
		}
	}
	return out
}

// auditOne challenges p for tg and records the outcome.
func (r *Replica) auditOne(ctx context.Context, p peer.ID, tg auditTarget) {
	an := r.net.(shardAuditor)
	leaves := randomLeaves(r.opts.AuditLeaves, audit.Leaves(tg.size))
	actx, cancel := context.WithTimeout(ctx, r.opts.ShardTimeout)
	answers, err := an.AuditShard(actx, p, tg.id, leaves)
	cancel()
	if ctx.Err() != nil {
		return // closing
	}
	lying := false
	switch {
	case err == nil:
		err = audit.CheckV2(tg.id, tg.size, answers)
		if errors.Is(err, audit.ErrVersion) {
			// A peer older than audit version 2 proves leaves against a
			// root of its own tree, which the owner no longer keeps: it
			// shows the whole shard instead (GetShard verifies it).
			actx, cancel := context.WithTimeout(ctx, r.opts.ShardTimeout)
			_, err = r.net.GetShard(actx, p, tg.id)
			cancel()
			if ctx.Err() != nil {
				return
			}
			j, judged := r.net.(peerJudge)
			lying = errors.Is(err, fs.ErrNotExist) || (err != nil && judged && j.Distrusted(p))
			break
		}
		lying = err != nil
	case errors.Is(err, fs.ErrNotExist):
		lying = true
	}
	ok := err == nil
	m := r.maint
	m.mu.Lock()
	a := m.audits[p]
	if a == nil {
		a = &PeerAudits{}
		m.audits[p] = a
	}
	if ok {
		m.passed++
		a.Passed++
	} else {
		m.failed++
		a.Failed++
	}
	if lying {
		m.marked[markKey{tg.id, p}] = true
	}
	m.mu.Unlock()
	if !ok {
		r.log.Warn("audit failed", "peer", p, "shard", tg.id.Short(), "marked_for_repair", lying, "err", err)
	}
	if lying {
		if j, ok := r.net.(peerJudge); ok {
			j.AuditFailed(p)
		}
		m.kick()
	}
	if r.opts.Audit != nil {
		r.opts.Audit.AuditResult(p, ok)
	}
}

// setHeld records the bytes each peer holds (checkHealth calls it).
func (r *Replica) setHeld(held map[peer.ID]int64) {
	if m := r.maint; m != nil {
		m.mu.Lock()
		m.held = held
		m.mu.Unlock()
	}
}
