package net

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkShard moves 4 MiB shards between two in-process nodes over TCP and
// over QUIC, into a memory store: CPU of both ends (transport, security,
// muxer, BLAKE3 verification on the receiving side) per MB. "get-store"
// serves from a store.Shards on disk instead, as a storage node does: its
// B/op shows what the server allocates per read.
//
//	go test -run XXX -bench Shard -benchtime 64x -benchmem ./net/
func BenchmarkShard(b *testing.B) {
	for _, tr := range []struct{ name, listen string }{{"tcp", loopTCP}, {"quic", loopQUIC}} {
		for _, op := range []string{"put", "get", "get-store"} {
			b.Run(tr.name+"/"+op, func(b *testing.B) {
				a := startNodeB(b, tr.listen)
				s := startNodeB(b, tr.listen)
				if op == "get-store" {
					s.ServeShards(openShards(b, 1<<30))
				} else {
					s.ServeShards(newMemStore())
				}
				ctx := context.Background()
				if err := a.Host().Connect(ctx, s.Host().Peerstore().PeerInfo(s.Host().ID())); err != nil {
					b.Fatal(err)
				}
				id, data := testShard(4<<20, 1)
				if err := a.PutShard(ctx, s.Host().ID(), id, data); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(data)))
				b.ResetTimer()
				cpu0 := cpuTime(b)
				for range b.N {
					var err error
					if op == "put" {
						err = a.PutShard(ctx, s.Host().ID(), id, data)
					} else { // get, get-store
						_, err = a.GetShard(ctx, s.Host().ID(), id)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				cpu := cpuTime(b) - cpu0
				mb := float64(b.N) * float64(len(data)) / 1e6
				b.ReportMetric(float64(cpu.Microseconds())/1e3/mb, "cpu-ms/MB")
			})
		}
	}
}

func startNodeB(b *testing.B, listen string) *Node {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := NewIdentity()
	if err != nil {
		b.Fatal(err)
	}
	n, err := Start(ctx, Config{Key: k, Listen: []string{listen}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	return n
}
