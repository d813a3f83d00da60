package compute

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/wasm"
)

// outLimit bounds what one unit may write to stdout, stderr and /out.
const outLimit = 32 << 20

// task is a unit this node runs for a requester.
type task struct {
	lease     string
	requester peer.ID
	m         *assignMsg
	ctx       context.Context
	cancel    context.CancelFunc

	mu        sync.Mutex
	proc      Proc
	progress  float64
	suspended bool
	handback  bool // stopped because the window closed
	dropped   bool // stopped because the requester cancelled or vanished
}

func (t *task) stop() {
	t.mu.Lock()
	p := t.proc
	t.mu.Unlock()
	t.cancel()
	if p != nil {
		p.Kill()
	}
}

// windowLeft is how long this supplier stays open from now.
func (s *Service) windowLeft() time.Duration {
	if s.clock != nil {
		return s.cfg.Windows.Left(s.clock())
	}
	return s.cfg.Windows.Left(time.Now())
}

// Capacity is what this node offers now.
func (s *Service) Capacity() Capacity {
	if s.cfg.Slots <= 0 {
		return Capacity{}
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	left := s.windowLeft()
	return Capacity{
		Slots: s.cfg.Slots, Free: max(s.cfg.Slots-len(s.running), 0), Memory: s.cfg.Memory / int64(s.cfg.Slots),
		WindowLeft: int64(left), Score: s.score, Uptime: int64(time.Since(s.started)), Busy: s.busy,
	}
}

// accept takes an assignment if this supplier can run it to the end.
func (s *Service) accept(from peer.ID, m *assignMsg) *replyMsg {
	refuse := func(format string, a ...any) *replyMsg {
		return &replyMsg{Status: statusRefused, Message: fmt.Sprintf(format, a...)}
	}
	if s.cfg.Slots <= 0 {
		return refuse("this node supplies no compute")
	}
	if b := s.cfg.Credit.ComputeBalance(from); b > s.cfg.Allowance {
		return refuse("you owe this supplier %s of compute, over the allowance of %s", b, s.cfg.Allowance)
	}
	if left := s.windowLeft(); left < time.Duration(m.Deadline) {
		return refuse("open for %s only, the unit may take %s", left.Round(time.Second), time.Duration(m.Deadline))
	}
	if per := s.cfg.Memory / int64(s.cfg.Slots); m.Memory > per {
		return refuse("unit memory %d over the %d a slot has", m.Memory, per)
	}
	lease := hex.EncodeToString(m.Lease)
	s.smu.Lock()
	defer s.smu.Unlock()
	switch {
	case s.busy:
		return refuse("the owner is using the machine")
	case s.running[lease] != nil:
		return &replyMsg{} // a retried assignment
	case len(s.running) >= s.cfg.Slots:
		return refuse("all %d slots busy", s.cfg.Slots)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	t := &task{lease: lease, requester: from, m: m, ctx: ctx, cancel: cancel, progress: 0}
	s.running[lease] = t
	s.wg.Add(1)
	go s.runTask(t)
	return &replyMsg{}
}

func (s *Service) cancelTask(from peer.ID, m *cancelMsg) *replyMsg {
	s.smu.Lock()
	t := s.running[hex.EncodeToString(m.Lease)]
	s.smu.Unlock()
	if t == nil || t.requester != from {
		return &replyMsg{Status: statusUnknown, Message: "no such lease"}
	}
	t.mu.Lock()
	t.dropped = true
	t.mu.Unlock()
	t.stop()
	return &replyMsg{}
}

// runTask runs one unit to its end and reports the result.
func (s *Service) runTask(t *task) {
	defer s.wg.Done()
	defer t.cancel()
	log := s.log.With("requester", t.requester, "unit", t.m.Unit)
	res, fail, reason, cpu := s.execute(t)
	// The worker is gone: its slot is free while the result travels.
	s.smu.Lock()
	delete(s.running, t.lease)
	s.smu.Unlock()
	t.mu.Lock()
	dropped, handback := t.dropped, t.handback
	t.mu.Unlock()
	if dropped {
		log.Info("compute unit dropped")
		return
	}
	msg := &resultMsg{Lease: t.m.Lease, Fail: fail, Reason: reason, CPU: int64(cpu)}
	if handback {
		msg.Fail, msg.Reason = failHandback, "the supplier's compute window closed"
	}
	if msg.Fail == "" {
		k, _ := jobKeys(t.m.Key)
		if s.lie {
			res.Stdout = append(res.Stdout, "(a lie)"...)
		}
		msg.Body = seal(k, objResult, encode(res))
	}
	// Deliver the result until acknowledged or the lease runs out.
	ttl := time.Duration(t.m.LeaseTTL)
	giveUp := time.Now().Add(ttl)
	for {
		rep, err := s.request(s.ctx, t.requester, typeResult, msg)
		if err == nil {
			if rep.Status == statusOK {
				// Credit only what the requester signed for (receipt.go).
				if err := rep.Receipt.Verify(t.requester, s.cfg.Host.ID(), t.m.Lease); err != nil {
					log.Warn("compute result delivered without a valid receipt: no credit", "err", err)
					return
				}
				if err := s.keepReceipt(rep.Receipt); err != nil {
					log.Warn("compute receipt not kept", "err", err)
				}
				s.cfg.Credit.ComputeGiven(t.requester, time.Duration(rep.Receipt.CPU))
				log.Debug("compute result delivered", "fail", msg.Fail, "cpu", cpu)
			} else {
				log.Info("compute result refused", "status", rep.Status, "message", rep.Message)
			}
			return
		}
		if time.Now().After(giveUp) || s.ctx.Err() != nil {
			log.Warn("compute result undeliverable: requester gone", "err", err)
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(time.Duration(t.m.Heartbeat)):
		}
	}
}

// execute opens the unit, runs it in a worker while heartbeating, and maps
// its outcome to a result or a failure kind.
func (s *Service) execute(t *task) (res *resultBody, fail, reason string, cpu time.Duration) {
	k, err := jobKeys(t.m.Key)
	if err != nil {
		return nil, failInternal, err.Error(), 0
	}
	module, err := open(k, objModule, t.m.Module)
	if err != nil {
		return nil, failInternal, "the module does not open with the job key", 0
	}
	u := wasm.Unit{Module: module, Args: t.m.Args, Env: t.m.Env, Inputs: map[string][]byte{},
		MemoryLimit: t.m.Memory, Timeout: time.Duration(t.m.Deadline), OutLimit: outLimit}
	for name, sealed := range t.m.Inputs {
		if u.Inputs[name], err = open(k, objInput, sealed); err != nil {
			return nil, failInternal, fmt.Sprintf("input %q does not open with the job key", name), 0
		}
	}
	if len(t.m.Checkpoint) > 0 {
		plain, err := open(k, objCkpt, t.m.Checkpoint)
		if err == nil {
			u.Checkpoint, err = decodeFiles(plain)
		}
		if err != nil {
			return nil, failInternal, "the checkpoint does not open with the job key", 0
		}
	}
	onCkpt := func(c wasm.Checkpoint) error {
		t.mu.Lock()
		t.progress = c.Progress
		t.mu.Unlock()
		m := &checkpointMsg{Lease: t.m.Lease, Seq: t.m.CkptSeq + c.Seq, Progress: c.Progress,
			Files: seal(k, objCkpt, encode(&files{Files: c.Files}))}
		rep, err := s.request(t.ctx, t.requester, typeCheckpoint, m)
		if err == nil && rep.Status == statusUnknown {
			t.mu.Lock()
			t.dropped = true
			t.mu.Unlock()
			go t.stop()
		}
		return nil // a checkpoint that did not get through is not the unit's fault
	}
	proc, err := s.cfg.Start(t.ctx, u, onCkpt)
	if err != nil {
		kind, why := failKind(err)
		return nil, kind, why, 0
	}
	t.mu.Lock()
	t.proc = proc
	stopNow := t.ctx.Err() != nil
	if s.busy {
		proc.Suspend()
		t.suspended = true
	}
	t.mu.Unlock()
	if stopNow {
		proc.Kill()
	}
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		s.heartbeat(t)
	}()
	r, err := proc.Wait()
	t.cancel()
	<-hbDone
	if err != nil {
		kind, why := failKind(err)
		return nil, kind, why, r.CPU
	}
	return &resultBody{Exit: r.ExitCode, Stdout: r.Stdout, Stderr: tail(r.Stderr, 64<<10), Out: r.Out}, "", "", r.CPU
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// failKind maps a sandbox error to a failure kind and a reason.
func failKind(err error) (string, string) {
	switch {
	case errors.Is(err, wasm.ErrInvalidModule):
		return failInvalid, "invalid module: " + err.Error()
	case errors.Is(err, wasm.ErrMemoryLimit):
		return failMemory, "over its memory limit: " + err.Error()
	case errors.Is(err, wasm.ErrTimeout):
		return failTimeout, "over its deadline: " + err.Error()
	case errors.Is(err, wasm.ErrOutputLimit):
		return failOutput, "over its output limit: " + err.Error()
	case errors.Is(err, wasm.ErrCrashed):
		return failCrash, "crashed: " + err.Error()
	}
	return failInternal, err.Error()
}

// heartbeat renews t's lease until the unit ends; if the requester says the
// lease is gone, or has not answered for a lease's length, the unit stops.
func (s *Service) heartbeat(t *task) {
	every := max(time.Duration(t.m.Heartbeat), 100*time.Millisecond)
	ttl := max(time.Duration(t.m.LeaseTTL), every)
	lastOK := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		m := &heartbeatMsg{Lease: t.m.Lease, Progress: t.progress, Suspended: t.suspended}
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(t.ctx, ttl)
		rep, err := s.request(ctx, t.requester, typeHeartbeat, m)
		cancel()
		switch {
		case err == nil && rep.Status == statusOK:
			lastOK = time.Now()
			continue
		case err == nil && rep.Status == statusUnknown:
			s.log.Info("compute lease ended by the requester", "requester", t.requester, "unit", t.m.Unit)
		case time.Since(lastOK) < ttl:
			continue
		default:
			s.log.Warn("compute requester silent: dropping its unit", "requester", t.requester, "unit", t.m.Unit)
		}
		t.mu.Lock()
		t.dropped = true
		t.mu.Unlock()
		t.stop()
		return
	}
}

// supplyLoop hands units back when the window closes and, with WhenIdle,
// suspends them while the machine's own load is high.
func (s *Service) supplyLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var load loadMeter
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		if s.windowLeft() == 0 {
			s.smu.Lock()
			for _, t := range s.running {
				t.mu.Lock()
				t.handback = true
				t.mu.Unlock()
				go t.stop()
			}
			s.smu.Unlock()
		}
		if !s.cfg.WhenIdle {
			continue
		}
		s.smu.Lock()
		var pids []int
		for _, t := range s.running {
			t.mu.Lock()
			if pp, ok := t.proc.(interface{ Pid() int }); ok {
				pids = append(pids, pp.Pid())
			}
			t.mu.Unlock()
		}
		s.smu.Unlock()
		own, ok := load.sample(pids)
		if !ok {
			continue
		}
		s.setBusy(nextBusy(s.isBusy(), own))
	}
}

func (s *Service) isBusy() bool {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.busy
}

// setBusy suspends (SIGSTOP) or resumes (SIGCONT) every running unit.
func (s *Service) setBusy(busy bool) {
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.busy == busy {
		return
	}
	s.busy = busy
	s.log.Info("compute units suspended for the owner's load", "suspended", busy)
	for _, t := range s.running {
		t.mu.Lock()
		if t.proc != nil && t.suspended != busy {
			if busy {
				t.proc.Suspend()
			} else {
				t.proc.Resume()
			}
			t.suspended = busy
		}
		t.mu.Unlock()
	}
}

// benchmark measures SHA-256 MB/s on one core for about 30 ms: the score a
// supplier advertises.
func benchmark() float64 {
	buf := make([]byte, 64<<10)
	start := time.Now()
	n := 0
	for time.Since(start) < 30*time.Millisecond {
		sha256.Sum256(buf)
		n += len(buf)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}
