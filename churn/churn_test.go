package churn

import (
	"testing"
	"time"
)

func small(c Config) Config {
	c.Nodes, c.Segments, c.K, c.M = 200, 400, 4, 2
	c.Duration, c.Step = 30*24*time.Hour, time.Hour
	c.Seed = 1
	if c.Grace == 0 {
		c.Grace = time.Hour
	}
	return c
}

func TestRun(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		check func(t *testing.T, r Result)
	}{
		{"quiet network repairs nothing", small(Config{Availability: 1, DeparturesPerMonth: 1e-12, BadFraction: 1e-12}),
			func(t *testing.T, r Result) {
				if r.Repairs != 0 || r.Lost != 0 || r.RepairPerNodeDay != 0 {
					t.Errorf("repairs %d lost %d traffic %v, want none", r.Repairs, r.Lost, r.RepairPerNodeDay)
				}
			}},
		{"departures are repaired and nothing is lost", small(Config{Availability: 1, DeparturesPerMonth: 0.2, BadFraction: 1e-12}),
			func(t *testing.T, r Result) {
				if r.Departures == 0 || r.Repairs == 0 || r.Lost != 0 {
					t.Errorf("departures %d repairs %d lost %d: want departures repaired, nothing lost", r.Departures, r.Repairs, r.Lost)
				}
			}},
		{"without repair bandwidth departures lose data", small(Config{Availability: 1, DeparturesPerMonth: 0.9, BadFraction: 1e-12, RepairShare: 1e-12}),
			func(t *testing.T, r Result) {
				if r.Lost == 0 || r.Repairs != 0 {
					t.Errorf("lost %d repairs %d: want losses and no repair", r.Lost, r.Repairs)
				}
			}},
		{"audits catch bad nodes", small(Config{Availability: 1, DeparturesPerMonth: 1e-12, BadFraction: 0.05, BadDrop: 0.5}),
			func(t *testing.T, r Result) {
				if r.Caught == 0 || r.Repairs == 0 || r.Lost != 0 {
					t.Errorf("caught %d repairs %d lost %d", r.Caught, r.Repairs, r.Lost)
				}
			}},
		{"short outages within grace cost nothing", small(Config{Availability: 0.9, MeanOutage: 10 * time.Minute, Grace: 24 * time.Hour, DeparturesPerMonth: 1e-12, BadFraction: 1e-12}),
			func(t *testing.T, r Result) {
				if r.Repairs != 0 {
					t.Errorf("repairs %d, want 0", r.Repairs)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Run(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r)
		})
	}
}

func TestDeterministic(t *testing.T) {
	a, err := Run(small(Config{}))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Run(small(Config{}))
	if a != b {
		t.Errorf("same seed, different results:\n%+v\n%+v", a, b)
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := Run(Config{Nodes: 10, K: 12, M: 4}); err == nil {
		t.Error("10 nodes for 12+4: no error")
	}
}
