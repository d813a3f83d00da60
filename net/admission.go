package net

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
)

// Admitter decides whether this node takes new shards from a peer: the
// ledger's fair-exchange rule (docs/ledger.md §3). The shard server asks it
// before it reads a PUT's body; a refusal is answered with StatusGiveBack.
type Admitter interface {
	// AdmitPut returns nil to accept a PUT of size bytes from p. An error
	// refuses it; its text (at most 256 bytes are sent) tells p why.
	AdmitPut(p peer.ID, size int64) error
}

// ErrGiveBack is a peer's refusal to store more for this node until it
// gives back (StatusGiveBack). It also matches ErrRefused.
var ErrGiveBack = errors.New("refused: give back first")

// SetAdmitter makes the shard server consult a before every PUT; nil
// accepts every PUT the store has room for.
func (n *Node) SetAdmitter(a Admitter) {
	if a == nil {
		n.admitter.Store(nil)
		return
	}
	n.admitter.Store(&a)
}

// admitPut is the shard server's admission check for a PUT of size bytes
// from p.
func (n *Node) admitPut(p peer.ID, size int64) error {
	if refuseAllPuts {
		return errFreeloader
	}
	if a := n.admitter.Load(); a != nil {
		return (*a).AdmitPut(p, size)
	}
	return nil
}

// errFreeloader is what a node built with the freeloader tag answers to
// every PUT (integration tests only).
var errFreeloader = errors.New("this node stores nothing for anyone")

// PutObserver is told of every shard this node has stored on a peer (a PUT
// that p answered ok): the ledger counts what peers hold for us before the
// replica records the placement.
type PutObserver func(p peer.ID, id peerdrive.ShardID, size int)

// SetPutObserver installs f (nil removes it).
func (n *Node) SetPutObserver(f PutObserver) {
	if f == nil {
		n.puts.Store(nil)
		return
	}
	n.puts.Store(&f)
}

func (n *Node) observePut(p peer.ID, id peerdrive.ShardID, size int) {
	if f := n.puts.Load(); f != nil {
		(*f)(p, id, size)
	}
}

// ErrAdmitLater from an Admitter asks the peer to retry shortly (StatusBusy)
// instead of refusing it: the admitter is still finding out.
var ErrAdmitLater = errors.New("admission pending")

// admitStatus is the status that answers an admission error.
func admitStatus(err error) Status {
	if errors.Is(err, ErrAdmitLater) {
		return StatusBusy
	}
	return StatusGiveBack
}
