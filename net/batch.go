package net

import (
	"context"
	gonet "net"
	"sync"

	ci "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// TLS writes one record of at most 16 KiB per write(2), and the muxer hands
// it frames of up to bulkFrame: a shard crossed the socket in 16 KiB pieces,
// each a system call, a loopback or NIC packet train and a wake-up of the
// reader. batchedTLS is libp2p's TLS transport (the same handshake and
// protocol ID, so it interoperates with every libp2p TLS peer) with one
// change below the record layer: the records of one Write of the secure
// connection are gathered and written together, up to batchMax bytes at a
// time.
type batchedTLS struct{ *libp2ptls.Transport }

var _ sec.SecureTransport = batchedTLS{}

// batchMax bounds the bytes gathered before they are written.
const batchMax = 256 << 10

// batchMin is the smallest Write that is gathered: TLS cuts the first
// 128 KiB of a connection into records of about one TCP segment (crypto/tls's
// dynamic record sizing), so any Write longer than that may span records.
const batchMin = 2 << 10

// newBatchedTLS has libp2ptls.New's signature (libp2p.Security fills it in).
func newBatchedTLS(id protocol.ID, key ci.PrivKey, muxers []tptu.StreamMuxer) (batchedTLS, error) {
	t, err := libp2ptls.New(id, key, muxers)
	return batchedTLS{t}, err
}

func (t batchedTLS) SecureInbound(ctx context.Context, insecure gonet.Conn, p peer.ID) (sec.SecureConn, error) {
	return batched(ctx, insecure, p, t.Transport.SecureInbound)
}

func (t batchedTLS) SecureOutbound(ctx context.Context, insecure gonet.Conn, p peer.ID) (sec.SecureConn, error) {
	return batched(ctx, insecure, p, t.Transport.SecureOutbound)
}

// batched secures insecure with secure over a batchConn.
func batched(ctx context.Context, insecure gonet.Conn, p peer.ID, secure func(context.Context, gonet.Conn, peer.ID) (sec.SecureConn, error)) (sec.SecureConn, error) {
	bc := &batchConn{Conn: insecure}
	sc, err := secure(ctx, bc, p)
	if err != nil {
		return nil, err
	}
	return &batchedConn{SecureConn: sc, bc: bc}, nil
}

// batchedConn is the secure connection: each Write's records go out
// together.
type batchedConn struct {
	sec.SecureConn
	bc  *batchConn
	wmu sync.Mutex // one batch at a time
}

func (c *batchedConn) Write(b []byte) (int, error) {
	if len(b) < batchMin { // one record: nothing to gather
		return c.SecureConn.Write(b)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.bc.begin()
	n, err := c.SecureConn.Write(b)
	if ferr := c.bc.end(); err == nil && ferr != nil {
		// The records were not all written: report none of the last batch
		// as written (the connection is broken anyway).
		return 0, ferr
	}
	return n, err
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, batchMax); return &b }}

// batchConn is the raw connection under TLS. Outside begin/end it writes
// through (the handshake, alerts, a lone record); inside, it gathers.
type batchConn struct {
	gonet.Conn
	mu  sync.Mutex
	on  bool
	buf *[]byte
	err error // the first failed write of a batch
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.on = true
	c.buf = batchBufs.Get().(*[]byte)
	c.err = nil
	c.mu.Unlock()
}

// end writes what is gathered and leaves batching.
func (c *batchConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	*c.buf = (*c.buf)[:0]
	batchBufs.Put(c.buf)
	c.buf, c.on = nil, false
	if c.err != nil {
		err = c.err
	}
	return err
}

func (c *batchConn) flushLocked() error {
	if len(*c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	if err != nil && c.err == nil {
		c.err = err
	}
	return err
}

func (c *batchConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on {
		return c.Conn.Write(b)
	}
	if c.err != nil {
		return 0, c.err
	}
	// b is one TLS record, far smaller than batchMax.
	if len(*c.buf)+len(b) > batchMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	*c.buf = append(*c.buf, b...)
	return len(b), nil
}
