package compute

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/store"
)

// Submit stores a job (its module and inputs sealed under a new job key) and
// queues its units. It returns the job ID.
func (s *Service) Submit(ctx context.Context, module []byte, inputs map[string][]byte, spec Spec) (string, error) {
	if err := spec.normalize(); err != nil {
		return "", err
	}
	if len(module) == 0 {
		return "", fmt.Errorf("%w: empty module", ErrBadJob)
	}
	key := make([]byte, 32)
	randRead(key)
	k, _ := jobKeys(key)
	j := &job{ID: newID(jobIDLen), Key: key, Spec: spec, Submitted: time.Now(), Inputs: map[string]string{}}
	for i := range spec.Units {
		j.Units = append(j.Units, &unit{Index: i, State: StateQueued})
	}
	size := int64(len(module))
	for _, b := range inputs {
		size += int64(len(b))
	}
	err := s.cfg.DB.Update(size, func(t *store.Txn) error {
		var err error
		if j.Module, err = putObject(t, seal(k, objModule, module)); err != nil {
			return err
		}
		for name, b := range inputs {
			if j.Inputs[name], err = putObject(t, seal(k, objInput, b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("compute: store job: %w", err)
	}
	s.mu.Lock()
	s.jobs[j.ID] = j
	s.save(j)
	s.mu.Unlock()
	if err := s.cfg.DB.Sync(); err != nil {
		return "", fmt.Errorf("compute: store job: %w", err)
	}
	s.poke()
	return j.ID, nil
}

func (s *Service) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// UnitStatus is one unit as status shows it.
type UnitStatus struct {
	Index    int     `json:"index"`
	State    string  `json:"state"`
	Supplier string  `json:"supplier,omitempty"` // suppliers running it now, comma-separated
	Progress float64 `json:"progress"`
	CkptSeq  int     `json:"checkpoint_seq"`     // of the runs active now, if any
	Retries  int     `json:"retries"`            // runs lost, handed back, outvoted or moved
	Outvoted int     `json:"outvoted,omitempty"` // results that lost the vote
	CPU      float64 `json:"cpu_seconds"`        // CPU time of every run that reported, seconds
	Runs     int     `json:"runs"`
	Resumed  int     `json:"resumed_from,omitempty"` // furthest checkpoint a run resumed from
	Reason   string  `json:"reason,omitempty"`
}

// JobStatus is what `peerdrive compute status --json` prints.
type JobStatus struct {
	ID        string       `json:"id"`
	State     string       `json:"state"`
	Units     []UnitStatus `json:"units"`
	Replicas  int          `json:"replicas"`
	Urgency   float64      `json:"urgency"`
	Submitted time.Time    `json:"submitted"`
	Canceled  bool         `json:"canceled,omitempty"`
}

// Status reports job id.
func (s *Service) Status(id string) (JobStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return JobStatus{}, fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	st := JobStatus{ID: j.ID, State: j.state(), Replicas: j.Spec.Replicas, Urgency: j.Spec.Urgency, Submitted: j.Submitted, Canceled: j.Canceled}
	for _, u := range j.Units {
		us := UnitStatus{Index: u.Index, State: u.State, Reason: u.Reason, Runs: len(u.Runs)}
		var sup []string
		for _, r := range u.Runs {
			switch {
			case r.State == runActive:
				sup = append(sup, r.Supplier)
			case r.State == runLost || r.State == runHanded || r.Outvoted || (r.State == runCanceled && r.Reason == reasonMoved):
				us.Retries++
			}
			if r.State == runActive || r.State == runResult {
				us.Progress = max(us.Progress, r.Progress)
			}
			if r.State == runActive || len(u.active()) == 0 {
				us.CkptSeq = max(us.CkptSeq, r.CkptSeq)
			}
			us.Resumed = max(us.Resumed, r.From)
			if r.Outvoted {
				us.Outvoted++
			}
			us.CPU += time.Duration(r.CPU).Seconds()
		}
		if u.State == StateDone {
			us.Progress = 1
		}
		for i, p := range sup {
			sup[i] = shortPeer(p)
		}
		slices.Sort(sup)
		us.Supplier = joinComma(sup)
		st.Units = append(st.Units, us)
	}
	return st, nil
}

func shortPeer(p string) string {
	if len(p) > 12 {
		return p[len(p)-8:]
	}
	return p
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// Jobs lists the IDs of the jobs this node knows, oldest first.
func (s *Service) Jobs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	js := slices.Collect(maps.Values(s.jobs))
	slices.SortFunc(js, func(a, b *job) int { return a.Submitted.Compare(b.Submitted) })
	var out []string
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

// UnitResult is a finished unit's output.
type UnitResult struct {
	Index  int               `json:"index"`
	State  string            `json:"state"`
	Reason string            `json:"reason,omitempty"`
	Exit   uint32            `json:"exit_code"`
	Stdout []byte            `json:"stdout,omitempty"`
	Stderr []byte            `json:"stderr,omitempty"`
	Out    map[string][]byte `json:"out,omitempty"`
}

// Results returns every unit's result: done units with their outputs,
// failed ones with their reason. ErrNotReady if some unit is not finished.
func (s *Service) Results(id string) ([]UnitResult, error) {
	s.mu.Lock()
	j := s.jobs[id]
	if j == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	var out []UnitResult
	var ids []string
	for _, u := range j.Units {
		if !u.finished() && !j.Canceled {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: unit %d is %s", ErrNotReady, u.Index, u.State)
		}
		out = append(out, UnitResult{Index: u.Index, State: u.State, Reason: u.Reason})
		ids = append(ids, u.Result)
	}
	key := j.Key
	s.mu.Unlock()
	k, _ := jobKeys(key)
	for i, id := range ids {
		if id == "" || out[i].State != StateDone {
			continue
		}
		sealed, err := getObject(s.cfg.DB, id)
		if err != nil {
			return nil, err
		}
		plain, err := open(k, objResult, sealed)
		if err != nil {
			return nil, fmt.Errorf("compute: result of unit %d: %w", i, err)
		}
		r, err := decodeResult(plain)
		if err != nil {
			return nil, err
		}
		out[i].Exit, out[i].Stdout, out[i].Stderr, out[i].Out = r.Exit, r.Stdout, r.Stderr, r.Out
	}
	return out, nil
}

// Cancel stops job id: its active runs are cancelled on their suppliers and
// nothing more is assigned.
func (s *Service) Cancel(id string) error {
	s.mu.Lock()
	j := s.jobs[id]
	if j == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	j.Canceled = true
	var stop []*run
	for _, u := range j.Units {
		for _, r := range u.active() {
			r.State = runCanceled
			stop = append(stop, r)
			delete(s.leases, r.Lease)
		}
		if !u.finished() {
			u.State, u.Reason = StateFailed, "cancelled"
		}
	}
	s.save(j)
	s.mu.Unlock()
	s.cancelRuns(stop)
	return nil
}

// Reassign moves unit ui of job id off its current suppliers: their runs
// are cancelled and the unit goes to other suppliers, resuming from the
// last checkpoint.
func (s *Service) Reassign(id string, ui int) error {
	s.mu.Lock()
	j := s.jobs[id]
	if j == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNoJob, id)
	}
	if ui < 0 || ui >= len(j.Units) {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d of job %s", ErrNoUnit, ui, id)
	}
	u := j.Units[ui]
	stop := u.active()
	for _, r := range stop {
		r.State, r.Reason = runCanceled, reasonMoved
		delete(s.leases, r.Lease)
	}
	if len(stop) > 0 {
		u.State = StateQueued
	}
	s.save(j)
	s.mu.Unlock()
	s.cancelRuns(stop)
	s.poke()
	return nil
}

func (s *Service) cancelRuns(runs []*run) {
	for _, r := range runs {
		p, err := peer.Decode(r.Supplier)
		if err != nil {
			continue
		}
		lease, _ := hex.DecodeString(r.Lease)
		go s.request(s.ctx, p, typeCancel, &cancelMsg{Lease: lease})
	}
}

// scheduleLoop expires leases and assigns queued units.
func (s *Service) scheduleLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		case <-s.kick:
		}
		s.scheduleOnce(s.ctx)
	}
}

func (s *Service) scheduleOnce(ctx context.Context) {
	now := time.Now()
	s.mu.Lock()
	pending := false
	for _, j := range s.jobs {
		changed := false
		for _, r := range j.expire(now, deadlineGrace) {
			s.log.Info("compute lease lost", "job", j.ID, "supplier", r.Supplier)
			delete(s.leases, r.Lease)
			s.rely[r.Supplier] = s.reliability(r.Supplier) * 0.7
			changed = true
		}
		for _, u := range j.Units {
			if !u.finished() && s.tooManyLost(u) {
				u.State, u.Reason = StateFailed, fmt.Sprintf("lost on %d suppliers", maxLost)
				changed = true
			}
			if !u.finished() && !j.Canceled {
				pending = true
				if len(u.active()) == 0 && u.State == StateRunning {
					u.State = StateQueued
				}
			}
		}
		if changed {
			s.save(j)
		}
	}
	s.mu.Unlock()
	if !pending {
		return
	}
	offers := s.currentOffers(ctx)
	s.mu.Lock()
	jobs := slices.Collect(maps.Values(s.jobs))
	picks := plan(jobs, offers)
	type send struct {
		p    pick
		r    *run
		from *run
	}
	var sends []send
	for _, pk := range picks {
		r := &run{Lease: newID(leaseLen), Supplier: pk.Peer, State: runActive, Started: now, Expires: now.Add(s.cfg.LeaseTTL + 30*time.Second)}
		from := pk.Unit.resumeFrom()
		if from != nil {
			from.Resumed = true
			r.Ckpt, r.CkptSeq, r.From, r.Progress = from.Ckpt, from.CkptSeq, from.CkptSeq, from.Progress
		}
		pk.Unit.Runs = append(pk.Unit.Runs, r)
		pk.Unit.State = StateRunning
		s.leases[r.Lease] = leaseRef{pk.Job, pk.Unit, r}
		if o := s.offers[pk.Peer]; o != nil {
			o.cap.Free--
		}
		s.save(pk.Job)
		sends = append(sends, send{pk, r, from})
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sd := range sends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.assign(ctx, sd.p, sd.r)
		}()
	}
	wg.Wait()
}

func (s *Service) tooManyLost(u *unit) bool {
	n := 0
	for _, r := range u.Runs {
		if r.State == runLost || r.State == runHanded {
			n++
		}
	}
	return n >= maxLost
}

func (s *Service) reliability(p string) float64 {
	if v, ok := s.rely[p]; ok {
		return v
	}
	return 1
}

// currentOffers asks connected compute peers for their capacity, at most
// once a second, and returns those that supply.
func (s *Service) currentOffers(ctx context.Context) []offer {
	s.mu.Lock()
	stale := time.Since(s.offerAt) > time.Second
	if stale {
		s.offerAt = time.Now()
	}
	s.mu.Unlock()
	if stale {
		h := s.cfg.Host
		var wg sync.WaitGroup
		for _, p := range h.Network().Peers() {
			if ps, err := h.Peerstore().SupportsProtocols(p, Protocol); err != nil || len(ps) == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				rep, err := s.request(cctx, p, typeCapacity, &struct{}{})
				s.mu.Lock()
				defer s.mu.Unlock()
				if err != nil || rep.Status != statusOK || rep.Capacity == nil {
					delete(s.offers, p.String())
					return
				}
				s.offers[p.String()] = &offerState{cap: *rep.Capacity, at: time.Now()}
			}()
		}
		wg.Wait()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []offer
	for p, o := range s.offers {
		if o.cap.Slots <= 0 || time.Since(o.at) > 10*time.Second {
			continue
		}
		up := min(time.Duration(o.cap.Uptime).Hours()/24, 1)
		out = append(out, offer{Peer: p, Cap: o.cap, Score: o.cap.Score * s.reliability(p) * (1 + 0.2*up)})
	}
	slices.SortFunc(out, func(a, b offer) int { return cmpString(a.Peer, b.Peer) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// assign sends run r of pick pk to its supplier; if the supplier does not
// take it, the run is cancelled and its unit goes back to the queue.
func (s *Service) assign(ctx context.Context, pk pick, r *run) {
	fail := func(why string) {
		s.mu.Lock()
		if r.State == runActive {
			r.State, r.Reason = runCanceled, why
			delete(s.leases, r.Lease)
			if len(pk.Unit.active()) == 0 && !pk.Unit.finished() {
				pk.Unit.State = StateQueued
			}
			if o := s.offers[r.Supplier]; o != nil {
				o.cap.Free = 0 // until it next says otherwise
			}
			s.save(pk.Job)
		}
		s.mu.Unlock()
		s.log.Debug("compute assignment not taken", "supplier", r.Supplier, "why", why)
	}
	p, err := peer.Decode(r.Supplier)
	if err != nil {
		fail(err.Error())
		return
	}
	s.mu.Lock()
	j := pk.Job
	m := &assignMsg{Job: mustHex(j.ID), Unit: pk.Unit.Index, Key: j.Key, Args: j.Spec.Args,
		Env: map[string]string{}, Memory: j.Spec.Memory, Deadline: int64(j.Spec.Deadline), Urgency: j.Spec.Urgency,
		Heartbeat: int64(s.cfg.Heartbeat), LeaseTTL: int64(s.cfg.LeaseTTL), Lease: mustHex(r.Lease), CkptSeq: r.CkptSeq,
		Inputs: map[string][]byte{}}
	maps.Copy(m.Env, j.Spec.Env)
	m.Env["PEERDRIVE_UNIT"] = strconv.Itoa(pk.Unit.Index)
	objs := map[string]string{"": j.Module, "\x00ckpt": r.Ckpt}
	for name, id := range j.Inputs {
		objs[name] = id
	}
	s.mu.Unlock()
	for name, id := range objs {
		if id == "" {
			continue
		}
		b, err := getObject(s.cfg.DB, id)
		if err != nil {
			fail(err.Error())
			return
		}
		switch name {
		case "":
			m.Module = b
		case "\x00ckpt":
			m.Checkpoint = b
		default:
			m.Inputs[name] = b
		}
	}
	rep, err := s.request(ctx, p, typeAssign, m)
	switch {
	case err != nil:
		fail(err.Error())
	case rep.Status != statusOK:
		fail(rep.Message)
	default:
		s.mu.Lock()
		if r.State == runActive {
			r.Expires = time.Now().Add(s.cfg.LeaseTTL)
		}
		s.mu.Unlock()
		s.log.Debug("compute unit assigned", "job", j.ID, "unit", pk.Unit.Index, "supplier", r.Supplier, "from_checkpoint", r.CkptSeq)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// lookup finds the active run of lease l reported by supplier from; the
// caller holds s.mu.
func (s *Service) lookup(from peer.ID, l []byte) (leaseRef, bool) {
	ref, ok := s.leases[hex.EncodeToString(l)]
	if !ok || ref.r.Supplier != from.String() || ref.r.State != runActive {
		return leaseRef{}, false
	}
	return ref, true
}

func (s *Service) onHeartbeat(from peer.ID, m *heartbeatMsg) *replyMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.lookup(from, m.Lease)
	if !ok {
		return &replyMsg{Status: statusUnknown, Message: "no such lease"}
	}
	ref.r.Expires = time.Now().Add(s.cfg.LeaseTTL)
	ref.r.Progress = clamp01(m.Progress)
	return &replyMsg{}
}

func clamp01(v float64) float64 {
	if !(v >= 0) {
		return 0
	}
	return min(v, 1)
}

// lookupKey finds the run of a lease that peer from holds, and its job's key.
func (s *Service) lookupKey(from peer.ID, lease []byte) (leaseRef, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, ok := s.lookup(from, lease)
	if !ok {
		return ref, nil, false
	}
	return ref, ref.j.Key, true
}

func (s *Service) onCheckpoint(from peer.ID, m *checkpointMsg) *replyMsg {
	ref, key, ok := s.lookupKey(from, m.Lease)
	if !ok {
		return &replyMsg{Status: statusUnknown, Message: "no such lease"}
	}
	k, _ := jobKeys(key)
	plain, err := open(k, objCkpt, m.Files)
	if err == nil {
		_, err = decodeFiles(plain)
	}
	if err != nil {
		return &replyMsg{Status: statusBad, Message: "checkpoint does not open"}
	}
	var id string
	err = s.cfg.DB.Update(int64(len(m.Files)), func(t *store.Txn) error {
		var err error
		id, err = putObject(t, m.Files)
		return err
	})
	if err != nil {
		return &replyMsg{Status: statusRefused, Message: "cannot store the checkpoint"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref.r.State != runActive {
		return &replyMsg{Status: statusUnknown, Message: "no such lease"}
	}
	if m.Seq > ref.r.CkptSeq {
		ref.r.CkptSeq, ref.r.Ckpt = m.Seq, id
	}
	ref.r.Progress = clamp01(m.Progress)
	ref.r.Expires = time.Now().Add(s.cfg.LeaseTTL)
	s.save(ref.j)
	return &replyMsg{}
}

func (s *Service) onResult(from peer.ID, m *resultMsg) *replyMsg {
	ref, key, ok := s.lookupKey(from, m.Lease)
	if !ok {
		return &replyMsg{Status: statusUnknown, Message: "no such lease"}
	}
	vote, body := "", ""
	if m.Fail == "" {
		k, _ := jobKeys(key)
		plain, err := open(k, objResult, m.Body)
		var rb *resultBody
		if err == nil {
			rb, err = decodeResult(plain)
		}
		if err != nil {
			return &replyMsg{Status: statusBad, Message: "result does not open"}
		}
		vote = rb.vote()
		err = s.cfg.DB.Update(int64(len(m.Body)), func(t *store.Txn) error {
			var err error
			body, err = putObject(t, m.Body)
			return err
		})
		if err != nil {
			return &replyMsg{Status: statusRefused, Message: "cannot store the result"}
		}
	}
	s.mu.Lock()
	r, u, j := ref.r, ref.u, ref.j
	if r.State != runActive {
		s.mu.Unlock()
		return &replyMsg{Status: statusUnknown, Message: "no such lease"}
	}
	delete(s.leases, r.Lease)
	if o := s.offers[r.Supplier]; o != nil && o.cap.Free < o.cap.Slots {
		o.cap.Free++ // its slot is free again; the next capacity answer confirms
	}
	r.CPU, r.Fail, r.Reason = max(m.CPU, 0), m.Fail, truncate(m.Reason, 500)
	switch {
	case m.Fail == failHandback || m.Fail == failInternal:
		r.State = runHanded
	case m.Fail == failTimeout && r.CkptSeq > r.From:
		r.State = runHanded // it got further: resume from its checkpoint
	case m.Fail != "":
		r.State, r.Vote = runResult, "fail:"+m.Fail
	default:
		r.State, r.Vote, r.Body = runResult, vote, body
		s.rely[r.Supplier] = min(1, s.reliability(r.Supplier)+0.05)
	}
	var stop []*run
	for _, o := range u.decide(j.Spec.Replicas) {
		s.log.Warn("compute result outvoted", "job", j.ID, "unit", u.Index, "supplier", o.Supplier)
		s.rely[o.Supplier] = s.reliability(o.Supplier) * 0.5
	}
	if u.finished() {
		for _, o := range u.active() {
			o.State, o.Reason = runCanceled, "quorum reached"
			delete(s.leases, o.Lease)
			stop = append(stop, o)
		}
		s.pay(j, u)
	} else if len(u.active()) == 0 {
		u.State = StateQueued
	}
	cpu := time.Duration(float64(r.CPU) * max(j.Spec.Urgency, 1))
	s.save(j)
	s.mu.Unlock()
	s.cancelRuns(stop)
	s.poke()
	return &replyMsg{Receipt: s.receipt(from, m.Lease, cpu)}
}

// receipt signs a receipt for supplier's run; nil if this host has no key
// to sign with (the supplier then credits nothing).
func (s *Service) receipt(supplier peer.ID, lease []byte, cpu time.Duration) *Receipt {
	h := s.cfg.Host
	priv := h.Peerstore().PrivKey(h.ID())
	if priv == nil {
		return nil
	}
	r, err := signReceipt(priv, h.ID(), supplier, lease, cpu, time.Now())
	if err != nil {
		s.log.Warn("compute receipt not signed", "supplier", supplier, "err", err)
		return nil
	}
	return r
}

// pay credits the suppliers whose runs agreed with the settled result; the
// caller holds s.mu.
func (s *Service) pay(j *job, u *unit) {
	for _, r := range u.Runs {
		if r.State != runResult || r.Outvoted || r.Paid {
			continue
		}
		if p, err := peer.Decode(r.Supplier); err == nil {
			s.cfg.Credit.ComputeTaken(p, time.Duration(float64(r.CPU)*j.Spec.Urgency))
			r.Paid = true
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
