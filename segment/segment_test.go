package segment

import (
	"bytes"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"testing"
)

func TestRoundTripLosingShards(t *testing.T) {
	for _, tc := range []struct {
		k, m, size int
	}{
		{4, 2, 1}, {4, 2, 4 << 20}, {4, 2, 1000003}, {12, 4, 4<<20 + 7}, {1, 0, 100}, {3, 7, 65536}, {1, 2, 10},
	} {
		p := Params{tc.k, tc.m}
		seg := make([]byte, tc.size)
		rand.Read(seg)
		e, err := Encode(p, seg)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if len(e.Shards) != p.N() {
			t.Fatalf("%d shards, want %d", len(e.Shards), p.N())
		}
		// Lose m shards at random, several times.
		for trial := 0; trial < 5; trial++ {
			sh := append([][]byte(nil), e.Shards...)
			for _, i := range mrand.Perm(p.N())[:tc.m] {
				sh[i] = nil
			}
			got, err := Decode(p, sh, tc.size)
			if err != nil || !bytes.Equal(got, seg) {
				t.Fatalf("%+v trial %d: decode = %v (equal %v)", tc, trial, err, bytes.Equal(got, seg))
			}
		}
		// One more lost shard is too many.
		if tc.m < p.N() {
			sh := append([][]byte(nil), e.Shards...)
			for _, i := range mrand.Perm(p.N())[:tc.m+1] {
				sh[i] = nil
			}
			if _, err := Decode(p, sh, tc.size); !errors.Is(err, ErrTooFewShards) {
				t.Fatalf("%+v: losing m+1 shards: %v, want ErrTooFewShards", tc, err)
			}
		}
	}
}

func TestBadParams(t *testing.T) {
	for _, p := range []Params{{0, 2}, {-1, 1}, {200, 100}, {4, -1}} {
		if _, err := Encode(p, []byte("x")); !errors.Is(err, ErrParams) {
			t.Errorf("Encode(%+v) = %v, want ErrParams", p, err)
		}
	}
	if _, err := Decode(Params{4, 2}, make([][]byte, 5), 10); !errors.Is(err, ErrParams) {
		t.Errorf("Decode with 5 of 6 shard slots = %v, want ErrParams", err)
	}
}

func BenchmarkEncode4MiB(b *testing.B) {
	for _, p := range []Params{{4, 2}, {12, 4}} {
		seg := make([]byte, 4<<20)
		rand.Read(seg)
		b.Run(map[int]string{4: "4+2", 12: "12+4"}[p.K], func(b *testing.B) {
			b.SetBytes(int64(len(seg)))
			for b.Loop() {
				if _, err := Encode(p, seg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A segment packed into Buffer's spare capacity (with stale bytes in it)
// encodes to the same shards as a copied one.
func TestEncodeInPlace(t *testing.T) {
	for _, tc := range []struct{ k, m, size, packed int }{
		{4, 2, 4 << 20, 4 << 20}, {4, 2, 1000003, 1000003}, {4, 2, 1000003, 999000}, {12, 4, 5, 5}, {3, 0, 10, 10},
	} {
		p := Params{tc.k, tc.m}
		src := make([]byte, tc.packed)
		rand.Read(src)
		want, err := Encode(p, append([]byte(nil), src...))
		if err != nil {
			t.Fatal(err)
		}
		buf := Buffer(p, tc.size)
		rand.Read(buf[:cap(buf)]) // stale bytes where the padding goes
		seg := append(buf, src...)
		got, err := Encode(p, seg)
		if err != nil {
			t.Fatal(err)
		}
		if &got.Shards[0][0] != &seg[0] {
			t.Errorf("%+v: shards copied, want in place", tc)
		}
		for i := range want.Shards {
			if !bytes.Equal(got.Shards[i], want.Shards[i]) || got.IDs[i] != want.IDs[i] {
				t.Fatalf("%+v: shard %d differs", tc, i)
			}
		}
	}
}

// DecodeIn returns the data buffer itself when every data shard is in it,
// and a correct copy when a data shard is rebuilt from parity.
func TestDecodeIn(t *testing.T) {
	p := Params{4, 2}
	const size = 1000003
	seg := make([]byte, size)
	rand.Read(seg)
	e, err := Encode(p, append([]byte(nil), seg...))
	if err != nil {
		t.Fatal(err)
	}
	for _, lose := range []int{-1, 0, 3, 5} {
		buf := DataBuffer(p, size)
		sh := make([][]byte, p.N())
		for i := range sh {
			if i == lose {
				continue
			}
			if dst := DataShard(buf, p, size, i); dst != nil {
				sh[i] = append(dst, e.Shards[i]...)
			} else {
				sh[i] = e.Shards[i]
			}
		}
		got, err := DecodeIn(p, sh, size, buf)
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("lose %d: %v, equal %v", lose, err, bytes.Equal(got, seg))
		}
		if inBuf := &got[0] == &buf[0]; inBuf != (lose < 0 || lose >= p.K) {
			t.Errorf("lose %d: segment in the data buffer = %v", lose, inBuf)
		}
	}
}
