package compute

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Lengths of identifiers.
const (
	jobIDLen = 16
	leaseLen = 16
)

// Job and unit states, as status shows them.
const (
	StateQueued  = "queued"
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Run states.
const (
	runActive   = "running"
	runResult   = "result"   // returned a result (or an agreed failure) that counts as a vote
	runLost     = "lost"     // lease missed or deadline passed: re-assigned
	runHanded   = "handed"   // the supplier handed it back (window closed): re-assigned
	runCanceled = "canceled" // cancelled by the requester (reassign, quorum reached, cancel)
)

// Failure kinds a supplier reports; a failure is a vote like a result.
const (
	failInvalid  = "invalid-module"
	failMemory   = "memory-limit"
	failTimeout  = "deadline"
	failCrash    = "crashed"
	failOutput   = "output-limit"
	failHandback = "handback" // not a vote: the supplier could not finish in its window
	failInternal = "internal" // not a vote: the supplier could not run it
)

// Sentinel errors for callers.
var (
	ErrNoJob    = errors.New("compute: no such job")
	ErrNoUnit   = errors.New("compute: no such unit")
	ErrNotReady = errors.New("compute: job not finished")
	ErrBadJob   = errors.New("compute: bad job")
)

// Spec is what a consumer submits.
type Spec struct {
	Units    int               `json:"units"`
	Replicas int               `json:"replicas"`
	Deadline time.Duration     `json:"deadline"` // run time one unit may take on a supplier
	Memory   int64             `json:"memory"`   // bytes of Wasm memory per unit
	Urgency  float64           `json:"urgency"`  // ≥ 1; CPU is paid for × Urgency
	Args     []string          `json:"args,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
}

// Defaults for a Spec's zero fields.
const (
	DefaultDeadline = 10 * time.Minute
	DefaultMemory   = 256 << 20
	maxUnits        = 100000
	maxReplicas     = 9
	// extraRuns is how many runs beyond Replicas a unit may take to reach a
	// quorum (disagreements, failures) before it fails.
	extraRuns = 4
)

func (s *Spec) normalize() error {
	if s.Units == 0 {
		s.Units = 1
	}
	if s.Replicas == 0 {
		s.Replicas = 1
	}
	if s.Deadline == 0 {
		s.Deadline = DefaultDeadline
	}
	if s.Memory == 0 {
		s.Memory = DefaultMemory
	}
	if s.Urgency == 0 {
		s.Urgency = 1
	}
	switch {
	case s.Units < 1 || s.Units > maxUnits:
		return fmt.Errorf("%w: units must be 1..%d", ErrBadJob, maxUnits)
	case s.Replicas < 1 || s.Replicas > maxReplicas:
		return fmt.Errorf("%w: replicas must be 1..%d", ErrBadJob, maxReplicas)
	case s.Deadline < 0 || s.Memory < 0:
		return fmt.Errorf("%w: negative deadline or memory", ErrBadJob)
	case s.Urgency < 1 || s.Urgency > 100:
		return fmt.Errorf("%w: urgency must be 1..100", ErrBadJob)
	}
	return nil
}

// quorum is how many agreeing votes settle a unit with r replicas.
func quorum(r int) int { return r/2 + 1 }

// job is a submitted job as the requester keeps it (JSON in the store,
// docs/compute.md §4).
type job struct {
	ID        string            `json:"id"`
	Key       []byte            `json:"key"`
	Spec      Spec              `json:"spec"`
	Module    string            `json:"module"` // object ID
	Inputs    map[string]string `json:"inputs,omitempty"`
	Submitted time.Time         `json:"submitted"`
	Canceled  bool              `json:"canceled,omitempty"`
	Units     []*unit           `json:"units"`
}

// unit is one unit of a job with every run it had.
type unit struct {
	Index  int    `json:"index"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Result string `json:"result,omitempty"` // object ID of the winning result
	Runs   []*run `json:"runs,omitempty"`
}

// run is one attempt of a unit on one supplier under one lease.
type run struct {
	Lease    string    `json:"lease"`
	Supplier string    `json:"supplier"`
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Expires  time.Time `json:"expires"` // lease: the next heartbeat must come before
	Progress float64   `json:"progress,omitempty"`
	CkptSeq  int       `json:"ckpt_seq,omitempty"`
	From     int       `json:"from,omitempty"`    // checkpoint seq it started from
	Ckpt     string    `json:"ckpt,omitempty"`    // object ID of the last checkpoint
	Resumed  bool      `json:"resumed,omitempty"` // its checkpoint was handed to a later run
	Vote     string    `json:"vote,omitempty"`    // hash of the result, or "fail:KIND"
	Body     string    `json:"body,omitempty"`    // object ID of the result
	Fail     string    `json:"fail,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	CPU      int64     `json:"cpu,omitempty"` // ns
	Outvoted bool      `json:"outvoted,omitempty"`
	Paid     bool      `json:"paid,omitempty"` // its CPU went to the credit ledger
}

func newID(n int) string {
	b := make([]byte, n)
	randRead(b)
	return hex.EncodeToString(b)
}

// finished reports whether u needs no more runs.
func (u *unit) finished() bool { return u.State == StateDone || u.State == StateFailed }

func (u *unit) active() []*run {
	var out []*run
	for _, r := range u.Runs {
		if r.State == runActive {
			out = append(out, r)
		}
	}
	return out
}

// tally counts the votes: the best vote and its count, and how many runs
// voted at all.
func (u *unit) tally() (best string, count, votes int) {
	n := map[string]int{}
	for _, r := range u.Runs {
		if r.State == runResult {
			n[r.Vote]++
			votes++
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic among ties
	for _, k := range keys {
		if n[k] > count {
			best, count = k, n[k]
		}
	}
	return best, count, votes
}

// decide settles u if a vote reached the quorum of replicas or no quorum
// can be reached any more. It returns the runs outvoted now.
func (u *unit) decide(replicas int) (outvoted []*run) {
	if u.finished() {
		return nil
	}
	best, count, votes := u.tally()
	q := quorum(replicas)
	switch {
	case count >= q:
		for _, r := range u.Runs {
			switch {
			case r.State == runResult && r.Vote != best:
				r.Outvoted = true
				outvoted = append(outvoted, r)
			}
		}
		// Of the agreeing runs, the one that resumed furthest stands for
		// them (its stderr shows where it started).
		from := -1
		for _, r := range u.Runs {
			if r.State == runResult && r.Vote == best && r.From > from {
				u.Result, from = r.Body, r.From
			}
		}
		if kind, ok := failVote(best); ok {
			u.State = StateFailed
			u.Reason = failReason(u, kind)
		} else {
			u.State = StateDone
		}
	case votes >= replicas+extraRuns:
		u.State = StateFailed
		u.Reason = fmt.Sprintf("no %d of %d results agree", q, votes)
	}
	return outvoted
}

func failVote(v string) (string, bool) {
	if len(v) > 5 && v[:5] == "fail:" {
		return v[5:], true
	}
	return "", false
}

func failReason(u *unit, kind string) string {
	for _, r := range u.Runs {
		if r.State == runResult && r.Fail == kind && r.Reason != "" {
			return r.Reason
		}
	}
	return kind
}

// wanted is how many new runs u needs now: enough that the replicas are
// all running or voted, and, after disagreements, enough that the best
// vote can still reach the quorum.
func (u *unit) wanted(replicas int) int {
	if u.finished() {
		return 0
	}
	_, count, votes := u.tally()
	act := len(u.active())
	need := replicas - votes - act
	if short := quorum(replicas) - count - act; short > need {
		need = short
	}
	if room := replicas + extraRuns - votes - act; need > room {
		need = room
	}
	return max(need, 0)
}

// reasonMoved marks runs cancelled by reassign: their supplier is avoided.
const reasonMoved = "reassigned"

// excluded is the set of suppliers that may not take a new run of u: those
// running it or that voted on it (replicas must be independent), and those
// it was moved off.
func (u *unit) excluded() map[string]bool {
	ex := map[string]bool{}
	for _, r := range u.Runs {
		if r.State == runActive || r.State == runResult || (r.State == runCanceled && r.Reason == reasonMoved) {
			ex[r.Supplier] = true
		}
	}
	return ex
}

// resumeFrom returns the checkpoint a new run of u should start from: the
// newest one of a run that was lost or handed back and not resumed yet.
func (u *unit) resumeFrom() *run {
	var best *run
	for _, r := range u.Runs {
		if (r.State == runLost || r.State == runHanded || r.State == runCanceled) && !r.Resumed && r.Ckpt != "" {
			if best == nil || r.CkptSeq > best.CkptSeq {
				best = r
			}
		}
	}
	return best
}

// jobState summarizes a job's units.
func (j *job) state() string {
	queued, done, failed := 0, 0, 0
	for _, u := range j.Units {
		switch u.State {
		case StateQueued:
			if len(u.Runs) == 0 {
				queued++
			}
		case StateDone:
			done++
		case StateFailed:
			failed++
		}
	}
	switch {
	case j.Canceled || (failed > 0 && done+failed == len(j.Units)):
		return StateFailed
	case done == len(j.Units):
		return StateDone
	case queued == len(j.Units):
		return StateQueued
	}
	return StateRunning
}

// offer is a supplier as the scheduler sees it.
type offer struct {
	Peer  string
	Cap   Capacity
	Score float64 // the requester's view: benchmark × reliability
}

// pick is one run to start: unit u of job j on supplier Peer.
type pick struct {
	Job  *job
	Unit *unit
	Peer string
}

// plan chooses new runs: units of more urgent, older jobs first, each on the
// best-scored supplier with a free slot that can hold its memory, stays open
// long enough to finish it, and is not already running or voting on it.
func plan(jobs []*job, offers []offer) []pick {
	free := map[string]int{}
	for _, o := range offers {
		free[o.Peer] = o.Cap.Free
	}
	order := slices.Clone(offers)
	slices.SortStableFunc(order, func(a, b offer) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return 0
	})
	js := slices.Clone(jobs)
	slices.SortStableFunc(js, func(a, b *job) int {
		switch {
		case a.Spec.Urgency > b.Spec.Urgency:
			return -1
		case a.Spec.Urgency < b.Spec.Urgency:
			return 1
		}
		return a.Submitted.Compare(b.Submitted)
	})
	var out []pick
	for _, j := range js {
		if j.Canceled {
			continue
		}
		for _, u := range j.Units {
			n := u.wanted(j.Spec.Replicas)
			if n == 0 {
				continue
			}
			ex := u.excluded()
			for _, o := range order {
				if n == 0 {
					break
				}
				if free[o.Peer] <= 0 || ex[o.Peer] || o.Cap.Busy || o.Cap.Memory < j.Spec.Memory ||
					time.Duration(o.Cap.WindowLeft) < j.Spec.Deadline {
					continue
				}
				free[o.Peer]--
				ex[o.Peer] = true
				out = append(out, pick{Job: j, Unit: u, Peer: o.Peer})
				n--
			}
		}
	}
	return out
}

// expire ends the active runs of j whose lease ran out or whose deadline
// (plus grace) passed by now; it returns them.
func (j *job) expire(now time.Time, grace time.Duration) []*run {
	var out []*run
	for _, u := range j.Units {
		for _, r := range u.Runs {
			if r.State != runActive {
				continue
			}
			if now.After(r.Expires) || now.After(r.Started.Add(j.Spec.Deadline+grace)) {
				r.State = runLost
				out = append(out, r)
			}
		}
	}
	return out
}
