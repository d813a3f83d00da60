package compute

import (
	"fmt"
	"testing"
	"time"
)

func mkJob(units, replicas int, urgency float64, submitted time.Time) *job {
	j := &job{ID: fmt.Sprint(submitted.Unix()), Spec: Spec{Units: units, Replicas: replicas, Urgency: urgency, Deadline: time.Minute, Memory: 64 << 20}, Submitted: submitted}
	for i := range units {
		j.Units = append(j.Units, &unit{Index: i, State: StateQueued})
	}
	return j
}

func voted(sup, vote string) *run {
	return &run{Supplier: sup, State: runResult, Vote: vote, Body: "body-" + vote}
}
func active(sup string) *run { return &run{Supplier: sup, State: runActive} }

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		runs     []*run
		state    string
		outvoted []string
		wanted   int
	}{
		{"fresh, 2 replicas", 2, nil, StateQueued, nil, 2},
		{"one running", 2, []*run{active("a")}, StateQueued, nil, 1},
		{"one vote, one running", 2, []*run{voted("a", "x"), active("b")}, StateQueued, nil, 0},
		{"two agree", 2, []*run{voted("a", "x"), voted("b", "x")}, StateDone, nil, 0},
		{"two disagree: a third", 2, []*run{voted("a", "x"), voted("b", "y")}, StateQueued, nil, 1},
		{"liar outvoted", 2, []*run{voted("a", "x"), voted("liar", "y"), voted("c", "x")}, StateDone, []string{"liar"}, 0},
		{"3 replicas: 2 agree settle", 3, []*run{voted("a", "x"), voted("b", "x"), active("c")}, StateDone, nil, 0},
		{"agreed failure", 2, []*run{voted("a", "fail:memory-limit"), voted("b", "fail:memory-limit")}, StateFailed, nil, 0},
		{"single replica", 1, []*run{voted("a", "x")}, StateDone, nil, 0},
		{"lost runs do not vote", 2, []*run{{Supplier: "a", State: runLost}, voted("b", "x")}, StateQueued, nil, 1},
		{"no quorum possible", 2, []*run{voted("a", "1"), voted("b", "2"), voted("c", "3"), voted("d", "4"), voted("e", "5"), voted("f", "6")}, StateFailed, nil, 0},
	} {
		u := &unit{State: StateQueued, Runs: tc.runs}
		var out []string
		for _, r := range u.decide(tc.replicas) {
			out = append(out, r.Supplier)
		}
		if u.State != tc.state {
			t.Errorf("%s: state %s, want %s (%s)", tc.name, u.State, tc.state, u.Reason)
		}
		if fmt.Sprint(out) != fmt.Sprint(tc.outvoted) {
			t.Errorf("%s: outvoted %v, want %v", tc.name, out, tc.outvoted)
		}
		if got := u.wanted(tc.replicas); got != tc.wanted {
			t.Errorf("%s: wanted %d, want %d", tc.name, got, tc.wanted)
		}
		if u.State == StateDone && u.Result != "body-x" {
			t.Errorf("%s: result %q", tc.name, u.Result)
		}
	}
}

func TestPlan(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	always := int64(Always)
	cap1 := Capacity{Slots: 1, Free: 1, Memory: 1 << 30, WindowLeft: always}
	for _, tc := range []struct {
		name   string
		jobs   func() []*job
		offers []offer
		want   string
	}{
		{"replicas on different suppliers", func() []*job { return []*job{mkJob(1, 2, 1, t0)} },
			[]offer{{Peer: "a", Cap: Capacity{Slots: 2, Free: 2, Memory: 1 << 30, WindowLeft: always}, Score: 2}, {Peer: "b", Cap: cap1, Score: 1}},
			"[0@a 0@b]"},
		{"best score first, free slots respected", func() []*job { return []*job{mkJob(3, 1, 1, t0)} },
			[]offer{{Peer: "slow", Cap: cap1, Score: 1}, {Peer: "fast", Cap: cap1, Score: 9}},
			"[0@fast 1@slow]"},
		{"urgent job first", func() []*job { return []*job{mkJob(1, 1, 1, t0), mkJob(1, 1, 5, t0.Add(time.Second))} },
			[]offer{{Peer: "a", Cap: cap1}},
			"[1000000001:0@a]"},
		{"window too short", func() []*job { return []*job{mkJob(1, 1, 1, t0)} },
			[]offer{{Peer: "a", Cap: Capacity{Slots: 1, Free: 1, Memory: 1 << 30, WindowLeft: int64(30 * time.Second)}}},
			"[]"},
		{"memory too small", func() []*job { return []*job{mkJob(1, 1, 1, t0)} },
			[]offer{{Peer: "a", Cap: Capacity{Slots: 1, Free: 1, Memory: 1 << 20, WindowLeft: always}}},
			"[]"},
		{"busy supplier skipped", func() []*job { return []*job{mkJob(1, 1, 1, t0)} },
			[]offer{{Peer: "a", Cap: Capacity{Slots: 1, Free: 1, Memory: 1 << 30, WindowLeft: always, Busy: true}}},
			"[]"},
		{"not the supplier that voted", func() []*job {
			j := mkJob(1, 2, 1, t0)
			j.Units[0].Runs = []*run{voted("a", "x"), voted("b", "y")}
			return []*job{j}
		}, []offer{{Peer: "a", Cap: cap1, Score: 9}, {Peer: "b", Cap: cap1, Score: 9}, {Peer: "c", Cap: cap1}}, "[0@c]"},
		{"cancelled job", func() []*job { j := mkJob(1, 1, 1, t0); j.Canceled = true; return []*job{j} },
			[]offer{{Peer: "a", Cap: cap1}}, "[]"},
	} {
		jobs := tc.jobs()
		var got []string
		for _, p := range plan(jobs, tc.offers) {
			s := fmt.Sprintf("%d@%s", p.Unit.Index, p.Peer)
			if tc.name == "urgent job first" {
				s = p.Job.ID + ":" + s
			}
			got = append(got, s)
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s: got %v, want %s", tc.name, got, tc.want)
		}
	}
}

// TestExpireAndResume: in virtual time, a run whose lease runs out is lost
// and the next run resumes from its checkpoint; a run past its deadline is
// lost too.
func TestExpireAndResume(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	j := mkJob(2, 1, 1, t0)
	j.Units[0].Runs = []*run{{Supplier: "a", State: runActive, Started: t0, Expires: t0.Add(5 * time.Second), Ckpt: "c7", CkptSeq: 7}}
	j.Units[1].Runs = []*run{{Supplier: "b", State: runActive, Started: t0, Expires: t0.Add(time.Hour)}}
	if lost := j.expire(t0.Add(4*time.Second), time.Second); len(lost) != 0 {
		t.Fatalf("lost %d runs before any lease ran out", len(lost))
	}
	if lost := j.expire(t0.Add(6*time.Second), time.Second); len(lost) != 1 || lost[0].Supplier != "a" {
		t.Fatalf("lost %v, want a's run", lost)
	}
	from := j.Units[0].resumeFrom()
	if from == nil || from.CkptSeq != 7 {
		t.Fatalf("resume from %+v, want checkpoint 7", from)
	}
	if j.Units[0].wanted(1) != 1 {
		t.Error("lost unit not wanted again")
	}
	if lost := j.expire(t0.Add(time.Minute+2*time.Second), time.Second); len(lost) != 1 || lost[0].Supplier != "b" {
		t.Fatalf("deadline: lost %v, want b's run", lost)
	}
	if j.state() != StateRunning {
		t.Errorf("job state %s", j.state())
	}
}

func TestNextBusy(t *testing.T) {
	for _, tc := range []struct {
		busy bool
		own  float64
		want bool
	}{{false, 0.1, false}, {false, 0.6, true}, {true, 0.4, true}, {true, 0.1, false}} {
		if got := nextBusy(tc.busy, tc.own); got != tc.want {
			t.Errorf("nextBusy(%v, %v) = %v", tc.busy, tc.own, got)
		}
	}
	if got := ownLoad(100, 80, 60); got != 0.2 {
		t.Errorf("ownLoad = %v, want 0.2", got)
	}
	total, busy, ok := parseProcStat("cpu  100 5 50 800 10 3 2 0 0 0\ncpu0 1 2 3\n")
	if !ok || total != 970 || busy != 160 {
		t.Errorf("parseProcStat = %d %d %v", total, busy, ok)
	}
	if got := parsePidJiffies("42 (peer drive) S 1 42 42 0 -1 4194560 100 0 0 0 17 4 0 0 20"); got != 21 {
		t.Errorf("parsePidJiffies = %d, want 21", got)
	}
}
