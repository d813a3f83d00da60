package net

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
)

// RENEW and CLAIM (docs/gc.md §4, §5): leases on holds and owner
// delegations.

const (
	// MaxDelegation bounds how far ahead a delegation may expire.
	MaxDelegation = 365 * 24 * time.Hour
	// maxClaim bounds the encoded delegation in a CLAIM request.
	maxClaim = 256
	// accountPrefix starts the account string of an owner key.
	accountPrefix = "owner:"
)

// delegationContext starts the signed bytes of a delegation.
const delegationContext = "peerdrive delegation v1\x00"

// Errors of delegations.
var (
	// ErrBadDelegation: a delegation that is malformed, for another peer,
	// expired or too far ahead.
	ErrBadDelegation = errors.New("delegation refused")
)

// Delegation says: peer Peer may act for owner Owner until Expiry.
type Delegation struct {
	Owner  ed25519.PublicKey
	Peer   peer.ID
	Expiry time.Time // whole seconds
	Sig    []byte
}

type wireDelegation struct {
	Owner  []byte `cbor:"1,keyasint"`
	Peer   []byte `cbor:"2,keyasint"`
	Expiry uint64 `cbor:"3,keyasint"`
	Sig    []byte `cbor:"4,keyasint"`
}

func delegationMessage(owner []byte, p []byte, expiry uint64) []byte {
	b := append([]byte(delegationContext), owner...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	b = append(b, p...)
	return binary.BigEndian.AppendUint64(b, expiry)
}

// SignDelegation returns the encoded delegation by owner to peer p, valid
// until until (rounded down to a second).
func SignDelegation(owner ed25519.PrivateKey, p peer.ID, until time.Time) ([]byte, error) {
	pub := owner.Public().(ed25519.PublicKey)
	e := uint64(max(until.Unix(), 1))
	w := wireDelegation{Owner: pub, Peer: []byte(p), Expiry: e}
	w.Sig = ed25519.Sign(owner, delegationMessage(pub, w.Peer, e))
	b, err := wireEnc.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("net: encode delegation: %w", err)
	}
	return b, nil
}

// ParseDelegation decodes a delegation and checks its signature (not its
// peer or expiry: see Delegation.Check). A signature that does not verify
// is peerdrive.ErrBadSignature; anything else malformed is
// ErrBadDelegation.
func ParseDelegation(b []byte) (Delegation, error) {
	var w wireDelegation
	if len(b) > maxClaim {
		return Delegation{}, fmt.Errorf("%d-byte delegation: %w", len(b), ErrBadDelegation)
	}
	if err := wireDec.Unmarshal(b, &w); err != nil {
		return Delegation{}, fmt.Errorf("%w: %v", ErrBadDelegation, err)
	}
	if len(w.Owner) != ed25519.PublicKeySize || len(w.Sig) != ed25519.SignatureSize || w.Expiry == 0 || w.Expiry > 1<<40 {
		return Delegation{}, fmt.Errorf("delegation fields: %w", ErrBadDelegation)
	}
	p, err := peer.IDFromBytes(w.Peer)
	if err != nil {
		return Delegation{}, fmt.Errorf("delegation peer: %w: %v", ErrBadDelegation, err)
	}
	if !ed25519.Verify(w.Owner, delegationMessage(w.Owner, w.Peer, w.Expiry), w.Sig) {
		return Delegation{}, fmt.Errorf("delegation: %w", peerdrive.ErrBadSignature)
	}
	return Delegation{Owner: ed25519.PublicKey(w.Owner), Peer: p, Expiry: time.Unix(int64(w.Expiry), 0), Sig: w.Sig}, nil
}

// Check verifies that d is for peer p and valid at now.
func (d Delegation) Check(p peer.ID, now time.Time) error {
	switch {
	case d.Peer != p:
		return fmt.Errorf("delegation for %s, not %s: %w", d.Peer, p, ErrBadDelegation)
	case !now.Before(d.Expiry):
		return fmt.Errorf("delegation expired at %s: %w", d.Expiry.Format(time.RFC3339), ErrBadDelegation)
	case d.Expiry.Sub(now) > MaxDelegation:
		return fmt.Errorf("delegation valid until %s, too far ahead: %w", d.Expiry.Format(time.RFC3339), ErrBadDelegation)
	}
	return nil
}

// Account is the account string under which holds of owner key pub are
// stored.
func Account(pub ed25519.PublicKey) string { return accountPrefix + hex.EncodeToString(pub) }

// leaseState is the node's delegation state, both sides.
type leaseState struct {
	once sync.Once
	mu   sync.Mutex
	// Server: accounts claimed by remote peers, until expiry.
	claims map[peer.ID]claim
	// Client: this node's delegation and the connections it was sent on.
	deleg   []byte
	claimed map[peer.ID]string // connection ID the claim went over
}

type claim struct {
	account string
	expiry  time.Time
}

// watch forgets claims of peers whose last connection closed.
func (n *Node) watchClaims() {
	n.lease.once.Do(func() {
		n.h.Network().Notify(&network.NotifyBundle{DisconnectedF: func(nw network.Network, c network.Conn) {
			p := c.RemotePeer()
			if nw.Connectedness(p) == network.Connected {
				return
			}
			n.lease.mu.Lock()
			delete(n.lease.claims, p)
			delete(n.lease.claimed, p)
			n.lease.mu.Unlock()
		}})
	})
}

// OwnerOf returns the account under which peer p's holds are stored here:
// its owner's account if p presented a valid delegation on its current
// connection, else p's peer ID string.
func (n *Node) OwnerOf(p peer.ID) string {
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	if c, ok := n.lease.claims[p]; ok && time.Now().Before(c.expiry) {
		return c.account
	}
	return p.String()
}

// SetDelegation makes this node present deleg (from SignDelegation for this
// node's ID) to storage peers, once per connection, before its first PUT,
// DELETE or RENEW; nil stops that. Peers then key its holds under the
// owner's account.
func (n *Node) SetDelegation(deleg []byte) error {
	if deleg != nil {
		d, err := ParseDelegation(deleg)
		if err != nil {
			return fmt.Errorf("net: %w", err)
		}
		if err := d.Check(n.h.ID(), time.Now()); err != nil {
			return fmt.Errorf("net: %w", err)
		}
	}
	n.watchClaims()
	n.lease.mu.Lock()
	n.lease.deleg = bytes.Clone(deleg)
	n.lease.claimed = map[peer.ID]string{}
	n.lease.mu.Unlock()
	return nil
}

// claimFor presents this node's delegation to p before a request of type t
// that creates or removes holds, unless it went over a connection to p
// that is still open. A failure is logged: the request then goes out under
// the peer ID account.
func (n *Node) claimFor(ctx context.Context, p peer.ID, t msgType) {
	if t != typePut && t != typeDelete && t != typeRenew {
		return
	}
	n.lease.mu.Lock()
	deleg := n.lease.deleg
	connID, done := n.lease.claimed[p]
	n.lease.mu.Unlock()
	if deleg == nil {
		return
	}
	if done {
		for _, c := range n.h.Network().ConnsToPeer(p) {
			if c.ID() == connID && !c.IsClosed() {
				return
			}
		}
	}
	if err := n.sendClaim(ctx, p, deleg); err != nil {
		slog.Debug("delegation not accepted by peer", "peer", p, "err", err)
	}
}

func (n *Node) sendClaim(ctx context.Context, p peer.ID, deleg []byte) error {
	c, err := n.dial(ctx, p, typeClaim)
	if err != nil {
		return err
	}
	connID := c.s.Conn().ID()
	_, _, err = c.smallRequest(request{typ: typeClaim, claim: deleg})
	if err = c.done(err); err != nil {
		return err
	}
	n.lease.mu.Lock()
	if n.lease.claimed != nil {
		n.lease.claimed[p] = connID
	}
	n.lease.mu.Unlock()
	return nil
}

// leaseHeaderLimit is the header limit of RENEW and CLAIM messages.
func leaseHeaderLimit(t msgType) int {
	switch t {
	case typeRenew:
		return 36 << 10
	case typeRenew | replyBit:
		return 2 << 10
	case typeClaim:
		return 512
	}
	return 512 // CLAIM reply
}

// decodeLease validates a RENEW or CLAIM request header.
func decodeLease(rq request, w wireRequest) (request, error) {
	t := rq.typ
	if t == typeClaim {
		if len(w.Claim) == 0 || len(w.Claim) > maxClaim || len(w.ID) > 0 || len(w.IDs) > 0 {
			return rq, fmt.Errorf("%s: %d-byte delegation: %w", t, len(w.Claim), errMalformed)
		}
		rq.claim = w.Claim
		return rq, nil
	}
	if len(w.IDs) == 0 || len(w.IDs) > MaxHasIDs {
		return rq, fmt.Errorf("%s: %d ids: %w", t, len(w.IDs), errMalformed)
	}
	rq.ids = make([]peerdrive.ShardID, len(w.IDs))
	for i, b := range w.IDs {
		var ok bool
		if rq.ids[i], ok = shardID(b); !ok {
			return rq, fmt.Errorf("%s: %d-byte id: %w", t, len(b), errMalformed)
		}
	}
	return rq, nil
}

// encodeLease fills w for a RENEW or CLAIM request.
func encodeLease(rq request, w *wireRequest) {
	if rq.typ == typeClaim {
		w.Claim = rq.claim
		return
	}
	w.IDs = make([][]byte, len(rq.ids))
	for i := range rq.ids {
		w.IDs[i] = rq.ids[i][:]
	}
}

// renewer is what RENEW needs of the store (store.Shards implements it).
type renewer interface {
	Renew(ctx context.Context, owner string, ids []peerdrive.ShardID) ([]bool, error)
}

// serveLease answers RENEW and CLAIM.
func (sv *shardServer) serveLease(ctx context.Context, s network.Stream, rq request, remote peer.ID, log *slog.Logger) {
	rt := rq.typ | replyBit
	if rq.typ == typeClaim {
		d, err := ParseDelegation(rq.claim)
		if err == nil {
			err = d.Check(remote, time.Now())
		}
		switch {
		case errors.Is(err, peerdrive.ErrBadSignature):
			writeReply(s, rt, wireReply{Status: StatusBadSignature, Message: "delegation signature does not verify"}, nil)
			return
		case err != nil:
			writeReply(s, rt, wireReply{Status: StatusBadRequest, Message: err.Error()}, nil)
			return
		}
		sv.n.watchClaims()
		sv.n.lease.mu.Lock()
		if sv.n.lease.claims == nil {
			sv.n.lease.claims = map[peer.ID]claim{}
		}
		sv.n.lease.claims[remote] = claim{account: Account(d.Owner), expiry: d.Expiry}
		sv.n.lease.mu.Unlock()
		writeReply(s, rt, wireReply{Status: StatusOK}, nil)
		return
	}
	st, ok := sv.store.(renewer)
	if !ok {
		writeReply(s, rt, wireReply{Status: StatusBadRequest, Message: "leases not supported"}, nil)
		return
	}
	owner := sv.n.OwnerOf(remote)
	held, err := st.Renew(ctx, owner, rq.ids)
	if err == nil && owner != remote.String() {
		// Holds made before the delegation, keyed by the peer ID.
		var miss []peerdrive.ShardID
		var at []int
		for i, h := range held {
			if !h {
				miss, at = append(miss, rq.ids[i]), append(at, i)
			}
		}
		if len(miss) > 0 {
			var old []bool
			if old, err = st.Renew(ctx, remote.String(), miss); err == nil {
				for j, h := range old {
					held[at[j]] = h
				}
			}
		}
	}
	if err != nil {
		writeReply(s, rt, sv.storeReply(err, log, "renew", rq.ids[0]), nil)
		return
	}
	writeReply(s, rt, wireReply{Status: StatusOK, Have: held}, nil)
}

// deleteHold removes the caller's hold: under its account, or failing that
// under its peer ID (a hold made before its delegation).
func (sv *shardServer) deleteHold(ctx context.Context, owner string, remote peer.ID, id peerdrive.ShardID) error {
	err := sv.store.Delete(ctx, owner, id)
	if errors.Is(err, fs.ErrPermission) && owner != remote.String() {
		err = sv.store.Delete(ctx, remote.String(), id)
	}
	return err
}

// RenewShards asks peer p to extend this node's holds on ids (in batches of
// MaxHasIDs). held[i] is false for a shard p does not hold for this node:
// it should be placed again.
func (n *Node) RenewShards(ctx context.Context, p peer.ID, ids []peerdrive.ShardID) (held []bool, err error) {
	return n.askIDs(ctx, p, typeRenew, "renew", ids)
}
