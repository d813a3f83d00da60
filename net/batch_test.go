package net

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	gonet "net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	ci "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	gonet.Conn
	writes atomic.Int64
}

func (c *countConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

type secureSide struct {
	name string
	mk   func(t *testing.T, key ci.PrivKey) sec.SecureTransport
}

var (
	plainTLS = secureSide{"libp2p-tls", func(t *testing.T, key ci.PrivKey) sec.SecureTransport {
		tr, err := libp2ptls.New(libp2ptls.ID, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}}
	ourTLS = secureSide{"batched", func(t *testing.T, key ci.PrivKey) sec.SecureTransport {
		tr, err := newBatchedTLS(libp2ptls.ID, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}}
)

// securePair connects a dialer secured by d and a listener secured by l
// over loopback TCP; raw is the dialer's socket.
func securePair(t *testing.T, d, l secureSide) (dc, lc sec.SecureConn, raw *countConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dk, _, err := ci.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lk, _, err := ci.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lid, err := peer.IDFromPrivateKey(lk)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := gonet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   sec.SecureConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- res{nil, err}
			return
		}
		sc, err := l.mk(t, lk).SecureInbound(ctx, c, "")
		ch <- res{sc, err}
	}()
	c, err := gonet.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw = &countConn{Conn: c}
	dc, err = d.mk(t, dk).SecureOutbound(ctx, raw, lid)
	if err != nil {
		t.Fatalf("%s dialing %s: %v", d.name, l.name, err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("%s accepting %s: %v", l.name, d.name, r.err)
	}
	t.Cleanup(func() { dc.Close(); r.c.Close() })
	return dc, r.c, raw
}

// TestBatchedTLS: the batched transport talks to libp2p's own TLS both ways,
// every byte arrives in order, and a large write takes a few system calls
// instead of one per record.
func TestBatchedTLS(t *testing.T) {
	sizes := []int{1, 100, batchMin, 16 << 10, 16<<10 + 1, 300_000, 1 << 20, 5}
	for _, tc := range []struct{ d, l secureSide }{{ourTLS, plainTLS}, {plainTLS, ourTLS}, {ourTLS, ourTLS}} {
		t.Run(tc.d.name+"-to-"+tc.l.name, func(t *testing.T) {
			dc, lc, raw := securePair(t, tc.d, tc.l)
			var want bytes.Buffer
			msgs := make([][]byte, len(sizes))
			for i, n := range sizes {
				msgs[i] = make([]byte, n)
				rand.Read(msgs[i])
				want.Write(msgs[i])
			}
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, want.Len())
				if _, err := io.ReadFull(lc, b); err != nil {
					t.Error(err)
				}
				lc.Write([]byte("ok")) // the other direction, while idle
				got <- b
			}()
			for _, m := range msgs {
				before := raw.writes.Load()
				if n, err := dc.Write(m); err != nil || n != len(m) {
					t.Fatalf("write %d bytes: %d, %v", len(m), n, err)
				}
				calls := raw.writes.Load() - before
				// Without batching: one per record, and records may be
				// as small as one TCP segment.
				if limit := int64(len(m)/batchMax + 1); tc.d.name == ourTLS.name && calls > limit {
					t.Errorf("write of %d bytes took %d system calls, want at most %d", len(m), calls, limit)
				}
			}
			if b := <-got; !bytes.Equal(b, want.Bytes()) {
				t.Fatal("bytes read differ from bytes written")
			}
			ack := make([]byte, 2)
			if _, err := io.ReadFull(dc, ack); err != nil || string(ack) != "ok" {
				t.Fatalf("reply: %q, %v", ack, err)
			}
		})
	}
}

// TestBatchedTLSWriteError: a batch that cannot be written is an error of
// the Write that made it, not a success.
func TestBatchedTLSWriteError(t *testing.T) {
	dc, _, _ := securePair(t, ourTLS, plainTLS)
	if err := dc.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := dc.Write(make([]byte, 1<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past its deadline: %d, %v; want a deadline error", n, err)
	}
}
