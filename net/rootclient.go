package net

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
)

// Root client parameters.
const (
	// maxParallelRoot bounds the peers PublishRoot and FindRoot talk to
	// at once.
	maxParallelRoot = 16
	// findRootPoll is how often FindRoot looks for new peers while it has
	// found nothing.
	findRootPoll = 200 * time.Millisecond
	// findRootDHTGrace is how long FindRoot, having found a record on a
	// peer, waits for the DHT's routing table to fill so that the DHT is
	// asked too.
	findRootDHTGrace = 2 * time.Second
)

// checkRoot verifies rec and encodes it, before anything is sent.
func checkRoot(rec *peerdrive.RootRecord) ([]byte, error) {
	if rec == nil {
		return nil, errors.New("nil root record")
	}
	if err := rec.Verify(); err != nil {
		return nil, err
	}
	return peerdrive.MarshalRoot(rec)
}

// dialRoot opens a root stream to p for a request of type t, with the
// protocol's deadline (or the caller's, if earlier). When ctx ends the
// stream is reset.
func (n *Node) dialRoot(ctx context.Context, p peer.ID, t msgType) (*call, error) {
	cctx, cancel := context.WithTimeout(ctx, shortTimeout)
	s, err := n.h.NewStream(cctx, p, RootProtocol)
	if err != nil {
		if cctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", cctx.Err(), err)
		}
		cancel()
		return nil, err
	}
	if dl, ok := cctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	c := &call{n: n, p: p, typ: t, ctx: cctx, cancel: cancel, s: s, br: bufio.NewReaderSize(s, 4096)}
	c.stop = context.AfterFunc(cctx, func() { s.Reset() })
	return c, nil
}

// finishRoot scores the outcome of a root request (as finish does for
// shards) and gives the error its context.
func (n *Node) finishRoot(p peer.ID, op string, owner ed25519.PublicKey, err error, latency time.Duration) error {
	var se *StatusError
	switch {
	case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, ErrStale), errors.Is(err, ErrFull),
		errors.As(err, &se) && se.Status == StatusBadSignature:
		// The peer answered correctly.
		n.scores.Success(p, latency)
	case errors.Is(err, ErrBusy), errors.Is(err, context.Canceled):
	default:
		n.scores.Failure(p)
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("net: %s %s on %s: %w", op, shortOwner(owner), p, err)
}

// PutRoot stores rec on peer p. rec must verify (else an error wrapping
// peerdrive.ErrBadSignature, and nothing is sent) and encode to at most
// peerdrive.MaxRootSize bytes (else peerdrive.ErrTooLarge). The peer keeps
// it if it is newer than the record it holds for the owner; if it holds a
// newer one (or a different one of the same Seq), the error wraps ErrStale.
// A repeated PutRoot of the record the peer holds is nil.
func (n *Node) PutRoot(ctx context.Context, p peer.ID, rec *peerdrive.RootRecord) error {
	b, err := checkRoot(rec)
	if err != nil {
		var owner ed25519.PublicKey
		if rec != nil {
			owner = rec.Owner
		}
		return fmt.Errorf("net: put root %s: %w", shortOwner(owner), err)
	}
	lat, err := n.putRoot(ctx, p, b)
	return n.finishRoot(p, "put root", rec.Owner, err, lat)
}

func (n *Node) putRoot(ctx context.Context, p peer.ID, b []byte) (time.Duration, error) {
	msg, err := encodeRequest(request{typ: typePutRoot, size: len(b)})
	if err != nil {
		return 0, err
	}
	c, err := n.dialRoot(ctx, p, typePutRoot)
	if err != nil {
		return 0, err
	}
	_, lat, err := c.upload(msg, b)
	return lat, err
}

// GetRoot fetches owner's root record from peer p. The record is verified:
// one that does not verify, or is not owner's, is never returned (an error
// wrapping both peerdrive.ErrBadSignature and ErrProtocol, and the peer's
// score drops). ErrNotFound if the peer holds none.
func (n *Node) GetRoot(ctx context.Context, p peer.ID, owner ed25519.PublicKey) (*peerdrive.RootRecord, error) {
	if len(owner) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("net: get root: %d-byte owner key", len(owner))
	}
	rec, lat, err := n.getRoot(ctx, p, owner)
	return rec, n.finishRoot(p, "get root", owner, err, lat)
}

func (n *Node) getRoot(ctx context.Context, p peer.ID, owner ed25519.PublicKey) (*peerdrive.RootRecord, time.Duration, error) {
	c, err := n.dialRoot(ctx, p, typeGetRoot)
	if err != nil {
		return nil, 0, err
	}
	var id peerdrive.ShardID
	copy(id[:], owner)
	w, sentAt, err := c.smallRequest(request{typ: typeGetRoot, id: id})
	if err != nil {
		return nil, 0, c.done(err)
	}
	lat := c.replyAt.Sub(sentAt)
	data := make([]byte, w.Size)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return nil, 0, c.done(fmt.Errorf("root record body: %w", noEOF(err)))
	}
	rec, err := peerdrive.UnmarshalRoot(data)
	if err == nil {
		err = rec.VerifyFor(owner)
	}
	if err != nil {
		return nil, 0, c.done(fmt.Errorf("%w: %w", ErrProtocol, err))
	}
	c.done(nil)
	return rec, lat, nil
}

// PublishRoot stores rec on every connected peer that serves the root
// protocol (RootPeers), in parallel, and in the DHT under
// peerdrive.RootKeyFor(rec.Owner). It returns how many peers accepted it
// (stored it, or held it already).
//
// It is best effort: a peer that fails does not stop the others, and the
// error is nil if rec was stored anywhere (a peer or the DHT). It is an
// error wrapping ErrStale if any peer holds a newer record of the owner (the
// caller is not the latest writer), and rec must verify, as for PutRoot.
func (n *Node) PublishRoot(ctx context.Context, rec *peerdrive.RootRecord) (int, error) {
	b, err := checkRoot(rec)
	if err != nil {
		var owner ed25519.PublicKey
		if rec != nil {
			owner = rec.Owner
		}
		return 0, fmt.Errorf("net: publish root %s: %w", shortOwner(owner), err)
	}
	peers := n.RootPeers()
	var (
		mu       sync.Mutex
		accepted int
		errs     []error
		stale    []error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, maxParallelRoot)
		dhtErr   error
	)
	wg.Go(func() { dhtErr = n.putRootDHT(ctx, rec.Owner, b) })
	for _, p := range peers {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := n.PutRoot(ctx, p, rec)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, ErrStale):
				stale = append(stale, err)
			default:
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	owner := shortOwner(rec.Owner)
	if len(stale) > 0 {
		return accepted, fmt.Errorf("net: publish root %s seq %d: %w", owner, rec.Seq, errors.Join(stale...))
	}
	if dhtErr != nil {
		if accepted == 0 {
			return 0, fmt.Errorf("net: publish root %s seq %d: stored nowhere: %w", owner, rec.Seq, errors.Join(append(errs, dhtErr)...))
		}
		slog.Debug("root record not stored in the DHT", "owner", owner, "seq", rec.Seq, "err", dhtErr)
	}
	for _, err := range errs {
		slog.Debug("root record not stored on peer", "owner", owner, "seq", rec.Seq, "err", err)
	}
	return accepted, nil
}

// putRootDHT stores an encoded, verified record in the DHT.
func (n *Node) putRootDHT(ctx context.Context, owner ed25519.PublicKey, b []byte) error {
	d := n.DHT()
	if d == nil {
		return errors.New("no DHT")
	}
	if err := d.PutValue(ctx, peerdrive.RootKeyFor(owner), b); err != nil {
		return fmt.Errorf("DHT: %w", err)
	}
	return nil
}

// findRootDHT looks owner's record up in the DHT: the best value the
// lookup finds (the DHT's validator has checked it), or nil.
func (n *Node) findRootDHT(ctx context.Context, owner ed25519.PublicKey) *peerdrive.RootRecord {
	d := n.DHT()
	if d == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	ch, err := d.SearchValue(ctx, peerdrive.RootKeyFor(owner))
	if err != nil {
		slog.Debug("DHT root lookup failed", "owner", shortOwner(owner), "err", err)
		return nil
	}
	var last []byte
	for v := range ch {
		last = v
	}
	if last == nil {
		return nil
	}
	// The validator accepted it; check again rather than trust that.
	rec, err := peerdrive.UnmarshalRoot(last)
	if err == nil {
		err = rec.VerifyFor(owner)
	}
	if err != nil {
		slog.Warn("DHT returned an invalid root record", "owner", shortOwner(owner), "err", err)
		return nil
	}
	return rec
}

// FindRoot finds owner's latest root record: it asks every connected peer
// that serves the root protocol and the DHT, and returns the valid record
// with the highest Seq (peerdrive.CompareRoots) once all have answered.
// Records that do not verify, or are another owner's, are ignored. While
// nothing is found it keeps asking peers as they connect, and the DHT again
// when its routing table changes, until ctx ends: then the error wraps
// ErrNotFound. A record found on a peer before the DHT could be asked (its
// routing table still empty) is returned once the DHT has been asked, or
// after findRootDHTGrace, or when ctx ends.
func (n *Node) FindRoot(ctx context.Context, owner ed25519.PublicKey) (*peerdrive.RootRecord, error) {
	if len(owner) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("net: find root: %d-byte owner key", len(owner))
	}
	var (
		mu      sync.Mutex
		best    *peerdrive.RootRecord
		asked   = map[peer.ID]bool{}
		rtLen   = 0 // routing table size at the last DHT lookup
		foundAt time.Time
		sem     = make(chan struct{}, maxParallelRoot)
	)
	offer := func(rec *peerdrive.RootRecord) {
		if rec == nil {
			return
		}
		mu.Lock()
		if best == nil || peerdrive.CompareRoots(rec, best) > 0 {
			best = rec
		}
		mu.Unlock()
	}
	t := time.NewTicker(findRootPoll)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		if d := n.DHT(); d != nil {
			if size := d.RoutingTable().Size(); size > 0 && size != rtLen {
				rtLen = size
				wg.Go(func() { offer(n.findRootDHT(ctx, owner)) })
			}
		}
		for _, p := range n.RootPeers() {
			if asked[p] {
				continue
			}
			asked[p] = true
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-sem }()
				rec, err := n.GetRoot(ctx, p, owner)
				if err != nil {
					if !errors.Is(err, ErrNotFound) {
						slog.Debug("root lookup on peer failed", "owner", shortOwner(owner), "err", err)
					}
					return
				}
				offer(rec)
			})
		}
		wg.Wait()
		mu.Lock()
		found := best
		mu.Unlock()
		if found != nil {
			if foundAt.IsZero() {
				foundAt = time.Now()
			}
			// A peer may hold an old record: return once the DHT has
			// been asked too, or has had findRootDHTGrace to fill.
			if rtLen > 0 || time.Since(foundAt) >= findRootDHTGrace {
				return found, nil
			}
		}
		select {
		case <-ctx.Done():
			if found != nil {
				return found, nil
			}
			return nil, fmt.Errorf("net: find root %s: asked %d peers and the DHT: %w (%v)",
				shortOwner(owner), len(asked), ErrNotFound, ctx.Err())
		case <-t.C:
		}
	}
}
