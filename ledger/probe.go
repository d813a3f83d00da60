package ledger

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/store"
)

// Probes (docs/ledger.md §3): a node that holds more for a peer than that
// peer holds for it places random probe shards on the peer, up to the
// difference, and audits them. A peer that stores them gives back; one that
// refuses them, or loses them, does not.
const (
	MinProbe = 64 << 10 // smallest probe shard
	MaxProbe = 8 << 20  // largest probe shard
	// probeBackoff is how long a peer that refused a probe is left alone.
	probeBackoff = 5 * time.Second
	probeTimeout = 30 * time.Second
	// probeDelay is how long a deficit below the allowance may last before
	// the peer is probed.
	probeDelay = 5 * time.Second
)

// Network is what the ledger needs of the shard client (net.Node).
type Network interface {
	PutShard(ctx context.Context, p peer.ID, id peerdrive.ShardID, data []byte) error
	GetShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) ([]byte, error)
	DeleteShard(ctx context.Context, p peer.ID, id peerdrive.ShardID) error
}

var _ Network = (*pnet.Node)(nil)

// addProbeLocked records a probe in memory; l.mu held.
func (l *Ledger) addProbeLocked(p peer.ID, id peerdrive.ShardID, size int64) {
	m := l.probes[p]
	if m == nil {
		m = map[peerdrive.ShardID]int64{}
		l.probes[p] = m
	}
	if _, ok := m[id]; !ok {
		m[id] = size
		l.entry(p).Probes += size
	}
}

func (l *Ledger) dropProbeLocked(p peer.ID, id peerdrive.ShardID) {
	if size, ok := l.probes[p][id]; ok {
		delete(l.probes[p], id)
		l.entry(p).Probes -= size
	}
}

// Probe runs one probing round over peers (the connected ones): for each
// peer that takes more than it gives by half the allowance or more, it
// places probe shards of up to MaxProbe, up to probesPerRound of them, to
// bring the difference to zero; for each that gives more than it takes by
// over the allowance, it deletes one probe. It returns the bytes placed. A
// peer that refuses a probe is left alone for probeBackoff and gets no
// credit.
//
// Half the allowance, not less: our count of what a peer holds for us may
// lag behind the peer's (a shard it took whose reply we lost), and two
// nodes that both probed over such a difference would probe each other
// back and forth.
func (l *Ledger) Probe(ctx context.Context, nw Network, peers []peer.ID) int64 {
	var placed int64
	for _, p := range peers {
		for range probesPerRound {
			n, again := l.probeOnce(ctx, nw, p)
			placed += n
			if !again || ctx.Err() != nil {
				break
			}
		}
	}
	return placed
}

// probesPerRound bounds the probes placed on one peer in one round.
const probesPerRound = 4

// probeOnce places or removes at most one probe on p; again says whether
// another may be due.
func (l *Ledger) probeOnce(ctx context.Context, nw Network, p peer.ID) (placed int64, again bool) {
	l.mu.Lock()
	e := *l.entry(p)
	wait := time.Now().Before(l.backoff[p])
	var surplusProbe peerdrive.ShardID
	var surplusSize int64
	excess := e.Gives() - e.HeldFor - l.opts.Allowance
	for id, size := range l.probes[p] {
		if size <= excess && size > surplusSize {
			surplusProbe, surplusSize = id, size
		}
	}
	l.mu.Unlock()
	deficit := e.HeldFor - e.Gives()
	threshold := max(l.opts.Allowance/2, MinProbe)
	// A burst within the allowance costs the peer nothing while it lasts:
	// probe once the deficit has lasted probeDelay, or at once when it
	// reaches the allowance (the peer is being refused).
	l.mu.Lock()
	since, ok := l.deficitSince[p]
	switch {
	case deficit < threshold:
		delete(l.deficitSince, p)
	case !ok:
		since = time.Now()
		l.deficitSince[p] = since
	}
	l.mu.Unlock()
	due := deficit >= l.opts.Allowance || time.Since(since) >= probeDelay
	switch {
	case wait:
		return 0, false
	case deficit >= threshold && !due:
		return 0, false
	case deficit >= threshold:
		size := min(deficit, MaxProbe)
		if err := l.placeProbe(ctx, nw, p, size); err != nil {
			l.mu.Lock()
			l.backoff[p] = time.Now().Add(probeBackoff)
			l.mu.Unlock()
			l.log.Warn("peer did not take a probe shard: it gets no credit", "peer", p, "size", size, "err", err)
			return 0, false
		}
		// Keep going while the rest is still over half the allowance.
		return size, deficit-size >= max(l.opts.Allowance/2, MinProbe)
	case surplusSize > 0:
		l.removeProbe(ctx, nw, p, surplusProbe)
	}
	return 0, false
}

func (l *Ledger) placeProbe(ctx context.Context, nw Network, p peer.ID, size int64) error {
	// The peer must not be able to make the bytes without keeping them: a
	// ChaCha8 stream from a secret seed, twice as fast as crypto/rand's
	// reads for megabytes (probes are up to MaxProbe, many per round).
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return err
	}
	data := make([]byte, size)
	mrand.NewChaCha8(seed).Read(data)
	id := peerdrive.ShardID(crypto.ContentID(data))
	v, err := peerdrive.Marshal(size)
	if err != nil {
		return err
	}
	// Recorded before it is sent: a probe placed but not recorded would
	// take the peer's space for nothing until its lease runs out.
	if err := l.db.Update(int64(len(v)), func(tx *store.Txn) error { return tx.Set(probeKey(p, id), v) }); err != nil {
		return fmt.Errorf("ledger: record probe: %w", err)
	}
	l.mu.Lock()
	l.sending[id] = true
	l.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err = nw.PutShard(pctx, p, id, data)
	cancel()
	l.mu.Lock()
	delete(l.sending, id)
	l.mu.Unlock()
	if err != nil {
		l.forgetProbe(p, id)
		return err
	}
	l.mu.Lock()
	l.addProbeLocked(p, id, size)
	l.mu.Unlock()
	return nil
}

// forgetProbe removes a probe's record.
func (l *Ledger) forgetProbe(p peer.ID, id peerdrive.ShardID) {
	l.mu.Lock()
	l.dropProbeLocked(p, id)
	l.mu.Unlock()
	if err := l.db.Update(0, func(tx *store.Txn) error { return tx.Delete(probeKey(p, id)) }); err != nil {
		l.log.Warn("ledger: probe record not removed", "peer", p, "shard", id.Short(), "err", err)
	}
}

func (l *Ledger) removeProbe(ctx context.Context, nw Network, p peer.ID, id peerdrive.ShardID) {
	dctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err := nw.DeleteShard(dctx, p, id)
	cancel()
	if err != nil && !errors.Is(err, pnet.ErrNotFound) {
		return // try again next round
	}
	l.forgetProbe(p, id)
}

// Audit checks one random probe on each of peers: the peer must return its
// bytes (the client verifies them against the ID). A peer that has lost or
// altered it fails the audit and loses that probe's credit; one that is
// unreachable is not judged.
func (l *Ledger) Audit(ctx context.Context, nw Network, peers []peer.ID) {
	for _, p := range peers {
		l.mu.Lock()
		var pick peerdrive.ShardID
		n := 0
		for id := range l.probes[p] {
			n++
			if mrand.IntN(n) == 0 {
				pick = id
			}
		}
		l.mu.Unlock()
		if n == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := nw.GetShard(actx, p, pick)
		cancel()
		switch {
		case err == nil:
			l.AuditResult(p, true)
		case errors.Is(err, pnet.ErrNotFound), errors.Is(err, pnet.ErrBadShard):
			l.AuditResult(p, false)
			l.log.Warn("peer failed a probe audit: it lost a shard it accepted", "peer", p, "shard", pick.Short(), "err", err)
			l.forgetProbe(p, pick)
		}
	}
}

// IsProbe reports whether id is one of the ledger's probes (placed, or
// being placed) on p.
func (l *Ledger) IsProbe(p peer.ID, id peerdrive.ShardID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, placed := l.probes[p][id]
	return placed || l.sending[id]
}

// ProbeBytes is the bytes of probes placed on p.
func (l *Ledger) ProbeBytes(p peer.ID) int64 { return l.Get(p).Probes }
