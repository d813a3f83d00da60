package main

import (
	"testing"
	"time"
)

// TestUploadRate: the rate counts from the most bytes pending, so a writer
// still adding bytes restarts it; no rate before a second has passed.
func TestUploadRate(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	const mib = 1 << 20
	var r uploadRate
	for _, s := range []struct {
		at      time.Duration
		pending int64
		want    string
	}{
		{0, 100 * mib, ""},
		{500 * time.Millisecond, 90 * mib, ""},                      // under a second: no rate yet
		{2 * time.Second, 80 * mib, " (10 MiB/s, about 8s left)"},   // 20 MiB in 2 s
		{3 * time.Second, 120 * mib, ""},                            // a writer added more: start again
		{5 * time.Second, 100 * mib, " (10 MiB/s, about 10s left)"}, // 20 MiB in 2 s
		{6 * time.Second, 0, ""},
	} {
		r.see(t0.Add(s.at), s.pending)
		if got := r.String(s.pending); got != s.want {
			t.Errorf("at %v with %d MiB pending: %q, want %q", s.at, s.pending/mib, got, s.want)
		}
	}
}
