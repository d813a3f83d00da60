// Command floor measures the least CPU that writing SIZE MiB to the drive and
// syncing it to peers can cost on this machine: PeerDrive's own primitives,
// run one after the other on the bytes that a write+sync with k+m erasure
// coding must put through each of them, with nothing in between: no FUSE, no
// store, no upload queue, no muxer, no scheduler, one process instead of a
// mount and its peers. bench/peers.sh sets it beside what the mount and its
// peers really spend, and beside the disk's own floor.
//
// The stages, each on all the data before the next (so each runs hot in the
// cache, which makes the floor lower still):
//
//  1. the keyed dedup hash of each 1 MiB plaintext chunk (BLAKE3)
//  2. sealing each chunk (XAES-256-GCM, or XChaCha20-Poly1305 without AES
//     instructions)
//  3. the content ID of each sealed chunk (BLAKE3)
//  4. packing sealed chunks into 4 MiB segments, Reed-Solomon k+m and the
//     shard IDs (BLAKE3)
//  5. the peers' check of each shard's ID on receipt (BLAKE3)
//  6. every shard sent over TLS 1.3 on loopback TCP, both ends in this
//     process (libp2p's TLS uses the same crypto/tls)
//  7. the disk writes, local copy and shards, fsynced (the kernel's part)
//
// It prints the CPU seconds of each stage (user and system, all threads, from
// getrusage) and their sum divided by the number of cores: the wall time a
// perfectly parallel write+sync could not beat. FUSE's own cost is left out.
//
//	floor [-size MiB] [-k 4] [-m 2] [-dir DIR]
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/segment"
)

// poolMiB is the plaintext a round works on: large enough to leave the
// CPU's caches between stages, small enough for any machine's memory.
const poolMiB = 64

func main() {
	size := flag.Int("size", 256, "MiB written and synced")
	k := flag.Int("k", 4, "data shards")
	m := flag.Int("m", 2, "parity shards")
	dir := flag.String("dir", os.TempDir(), "directory for stage 7's files (on the disk under test)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: floor [-size MiB] [-k K] [-m M] [-dir DIR]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 || *size < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*size, segment.Params{K: *k, M: *m}, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

var stages = []string{
	"dedup hash of the plaintext (keyed BLAKE3)",
	"sealing the chunks (AEAD)",
	"content IDs of the sealed chunks (BLAKE3)",
	"segments: Reed-Solomon and shard IDs",
	"peers check shard IDs on receipt (BLAKE3)",
	"shards over TLS on loopback TCP, both ends",
	"disk writes: local copy and shards, fsync",
}

func run(sizeMiB int, p segment.Params, dir string) error {
	dk, err := crypto.NewDriveKey()
	if err != nil {
		return err
	}
	keys := crypto.DeriveKeys(dk)
	const chunk = peerdrive.ChunkSize
	plain := make([][]byte, poolMiB*(1<<20)/chunk)
	for i := range plain {
		plain[i] = make([]byte, chunk)
		rand.Read(plain[i])
	}
	sealed := make([][]byte, len(plain))
	per := max(1, segment.TargetSize/chunk) // chunks per segment
	segs := make([][]byte, (len(plain)+per-1)/per)
	for i := range segs {
		segs[i] = segment.Buffer(p, per*(chunk+crypto.ChunkOverhead))
	}
	var encoded []*segment.Encoded

	tx, txRaw, rx, err := tlsPipe()
	if err != nil {
		return err
	}
	defer tx.Close()
	received := make(chan error, 1)
	go func() { // the receiving peer: read everything, as a peer's muxer does
		_, err := io.CopyBuffer(io.Discard, rx, make([]byte, 1<<20))
		received <- err
	}()

	f, err := os.CreateTemp(dir, "floor-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()

	cpu := make([]time.Duration, len(stages))
	stage := func(i int, fn func() error) error {
		c0 := cpuTime()
		err := fn()
		cpu[i] += cpuTime() - c0
		return err
	}
	for done := 0; done < sizeMiB; done += poolMiB {
		n := min(poolMiB, sizeMiB-done) * (1 << 20) / chunk
		plain, sealed := plain[:n], sealed[:n]
		stage(0, func() error {
			for _, b := range plain {
				_ = keys.DedupHash(b)
			}
			return nil
		})
		stage(1, func() error {
			for i, b := range plain {
				sealed[i] = keys.SealChunk(sealed[i][:0], b)
			}
			return nil
		})
		stage(2, func() error {
			for _, b := range sealed {
				_ = crypto.ContentID(b)
			}
			return nil
		})
		if err := stage(3, func() error {
			encoded = encoded[:0]
			for i := 0; i < len(sealed); i += per {
				seg := segs[i/per][:0] // the buffers of the last round: no fresh memory
				for _, b := range sealed[i:min(i+per, len(sealed))] {
					seg = append(seg, b...)
				}
				e, err := segment.Encode(p, seg)
				if err != nil {
					return err
				}
				encoded = append(encoded, e)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := stage(4, func() error {
			return eachShard(encoded, func(id peerdrive.ShardID, s []byte) error {
				if peerdrive.ShardID(crypto.ContentID(s)) != id {
					return errors.New("shard ID mismatch")
				}
				return nil
			})
		}); err != nil {
			return err
		}
		if err := stage(5, func() error {
			return eachShard(encoded, func(_ peerdrive.ShardID, s []byte) error {
				if _, err := tx.Write(s); err != nil {
					return err
				}
				return txRaw.flush()
			})
		}); err != nil {
			return err
		}
		if err := stage(6, func() error {
			for _, b := range sealed {
				if _, err := f.Write(b); err != nil {
					return err
				}
			}
			return eachShard(encoded, func(_ peerdrive.ShardID, s []byte) error {
				_, err := f.Write(s)
				return err
			})
		}); err != nil {
			return err
		}
	}
	if err := stage(5, func() error { // wait until the receiver has it all
		tx.Close()
		return <-received
	}); err != nil {
		return err
	}
	if err := stage(6, f.Sync); err != nil {
		return err
	}

	cores := runtime.NumCPU()
	fmt.Printf("floor of a write+sync of %d MiB with k=%d m=%d (%d cores): CPU seconds per stage\n", sizeMiB, p.K, p.M, cores)
	var total time.Duration
	for i, name := range stages {
		fmt.Printf("  %d. %-46s %7.3f\n", i+1, name, cpu[i].Seconds())
		total += cpu[i]
	}
	wall := total.Seconds() / float64(cores)
	fmt.Printf("  total %50.3f\n", total.Seconds())
	fmt.Printf("  spread over %d cores with no loss %36.3f s\n", cores, wall)
	fmt.Printf("RESULT workload=floor size_mb=%d k=%d m=%d cores=%d cpu_s=%.3f wall_s=%.3f\n", sizeMiB, p.K, p.M, cores, total.Seconds(), wall)
	return nil
}

// eachShard calls fn with every shard of encoded and its ID, in order,
// until fn fails.
func eachShard(encoded []*segment.Encoded, fn func(peerdrive.ShardID, []byte) error) error {
	for _, e := range encoded {
		for i, s := range e.Shards {
			if err := fn(e.IDs[i], s); err != nil {
				return err
			}
		}
	}
	return nil
}

// cpuTime is the user and system time of the whole process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gathered is a connection whose writes, once on, are gathered until flush,
// as PeerDrive's TLS transport writes a Write's records together
// (net/batch.go): without it each 16 KiB record is a system call.
type gathered struct {
	net.Conn
	on  bool
	buf []byte
}

func (g *gathered) Write(b []byte) (int, error) {
	if !g.on {
		return g.Conn.Write(b)
	}
	g.buf = append(g.buf, b...)
	return len(b), nil
}

func (g *gathered) flush() error {
	_, err := g.Conn.Write(g.buf)
	g.buf = g.buf[:0]
	return err
}

// tlsPipe returns the two ends of a TLS 1.3 connection over loopback TCP;
// after the handshake the client's records reach the socket on raw.flush.
func tlsPipe() (client net.Conn, raw *gathered, server net.Conn, err error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"floor"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		return nil, nil, nil, err
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			if err = c.(*tls.Conn).Handshake(); err != nil {
				c.Close()
			}
		}
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	tcp, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil, nil, nil, err
	}
	raw = &gathered{Conn: tcp}
	c := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: "floor", MinVersion: tls.VersionTLS13})
	err = c.Handshake()
	s := <-accepted
	if err != nil || s == nil {
		c.Close()
		return nil, nil, nil, errors.Join(errors.New("TLS handshake on loopback failed"), err)
	}
	raw.on = true
	return c, raw, s, nil
}
