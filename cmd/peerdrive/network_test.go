package main

import "testing"

func TestServeProcs(t *testing.T) {
	for _, c := range []struct {
		cpus, slots int
		env         string
		want        int
	}{
		{0, 0, "", 1},
		{0, 3, "", 4},
		{2, 3, "", 2},
		{0, 3, "8", 0}, // GOMAXPROCS set: the runtime's choice stands
		{4, 0, "8", 4}, // the flag says more than the environment
		{0, -1, "", 1}, // nonsense slots count as none
	} {
		if got := serveProcs(c.cpus, c.slots, c.env); got != c.want {
			t.Errorf("serveProcs(%d, %d, %q) = %d, want %d", c.cpus, c.slots, c.env, got, c.want)
		}
	}
}
