package compute

import (
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/store"
)

// Receipt is a requester's signed acknowledgment that a supplier spent CPU
// on one run of its units (docs/compute.md §6). The requester signs it
// with its libp2p key when it accepts a run's result; the supplier credits
// the CPU to the requester's account only against a valid receipt, and
// keeps the receipts, so that what it claims to have given can be shown.
type Receipt struct {
	Requester []byte `cbor:"1,keyasint"` // peer ID, binary
	Supplier  []byte `cbor:"2,keyasint"` // peer ID, binary
	Lease     []byte `cbor:"3,keyasint"`
	CPU       int64  `cbor:"4,keyasint"` // ns of CPU, urgency included
	Time      int64  `cbor:"5,keyasint"` // Unix ns
	Sig       []byte `cbor:"6,keyasint,omitempty"`
}

// receiptDomain separates receipt signatures from any other use of a key.
const receiptDomain = "peerdrive compute receipt v1\n"

// ErrBadReceipt: a receipt that does not verify or names other parties.
var ErrBadReceipt = errors.New("compute: bad receipt")

func (r *Receipt) signed() ([]byte, error) {
	c := *r
	c.Sig = nil
	b, err := cbor.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return append([]byte(receiptDomain), b...), nil
}

// signReceipt makes a receipt for supplier's run under lease.
func signReceipt(priv lcrypto.PrivKey, requester, supplier peer.ID, lease []byte, cpu time.Duration, now time.Time) (*Receipt, error) {
	r := &Receipt{Requester: []byte(requester), Supplier: []byte(supplier), Lease: lease, CPU: int64(cpu), Time: now.UnixNano()}
	msg, err := r.signed()
	if err != nil {
		return nil, err
	}
	if r.Sig, err = priv.Sign(msg); err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	return r, nil
}

// Verify checks the receipt's signature against its requester's key, which
// the requester's peer ID carries, and that it names these parties and
// this lease.
func (r *Receipt) Verify(requester, supplier peer.ID, lease []byte) error {
	if r == nil {
		return fmt.Errorf("%w: none", ErrBadReceipt)
	}
	if peer.ID(r.Requester) != requester || peer.ID(r.Supplier) != supplier || string(r.Lease) != string(lease) || r.CPU < 0 {
		return fmt.Errorf("%w: names another run", ErrBadReceipt)
	}
	pub, err := requester.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: requester key: %v", ErrBadReceipt, err)
	}
	msg, err := r.signed()
	if err != nil {
		return err
	}
	if ok, err := pub.Verify(msg, r.Sig); err != nil || !ok {
		return fmt.Errorf("%w: signature", ErrBadReceipt)
	}
	return nil
}

// receiptKey: 'J' 'r' lease → receipt (CBOR), kept by the supplier.
func receiptKey(lease []byte) []byte { return append([]byte("Jr"), fmt.Sprintf("%x", lease)...) }

// keepReceipt stores a verified receipt.
func (s *Service) keepReceipt(r *Receipt) error {
	b, err := cbor.Marshal(r)
	if err != nil {
		return err
	}
	return s.cfg.DB.Update(int64(len(b)), func(t *store.Txn) error { return t.Set(receiptKey(r.Lease), b) })
}

// Receipts returns the receipts this node holds as a supplier.
func (s *Service) Receipts() ([]Receipt, error) {
	var out []Receipt
	err := s.cfg.DB.View(func(t *store.Txn) error {
		return t.Iterate([]byte("Jr"), nil, true, func(k, v []byte) (bool, error) {
			var r Receipt
			if err := cbor.Unmarshal(v, &r); err != nil {
				return false, fmt.Errorf("receipt %q: %w", k, err)
			}
			out = append(out, r)
			return true, nil
		})
	})
	return out, err
}
