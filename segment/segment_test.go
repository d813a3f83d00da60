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
