package compute

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/wasm"
)

// Credit records CPU time given and taken per peer; package ledger
// implements it. ComputeGiven(p, d): this node spent d of CPU on p's units.
// ComputeTaken(p, d): p spent d of CPU on this node's units.
// ComputeBalance(p) is given minus taken: positive means p owes us compute.
// Durations are CPU time multiplied by the job's urgency.
type Credit interface {
	ComputeGiven(p peer.ID, cpu time.Duration)
	ComputeTaken(p peer.ID, cpu time.Duration)
	ComputeBalance(p peer.ID) time.Duration
}

// NoCredit keeps no accounts: every balance is zero.
type NoCredit struct{}

func (NoCredit) ComputeGiven(peer.ID, time.Duration)  {}
func (NoCredit) ComputeTaken(peer.ID, time.Duration)  {}
func (NoCredit) ComputeBalance(peer.ID) time.Duration { return 0 }

var _ Credit = NoCredit{}

// Proc is a running unit: a *wasm.Process in production.
type Proc interface {
	Suspend() error
	Resume() error
	Kill() error
	Wait() (wasm.Result, error)
}

// StartFunc starts one unit in a sandbox (wasm.Start re-executing the node's
// binary as a worker, in production).
type StartFunc func(ctx context.Context, u wasm.Unit, onCheckpoint func(wasm.Checkpoint) error) (Proc, error)

// Config of a Service.
type Config struct {
	Host host.Host
	DB   *store.DB
	// Supplier side: Slots units at a time (0: supply nothing), each within
	// Memory/Slots bytes (0: 1 GiB each), inside Windows (none: always).
	Slots    int
	Memory   int64
	Windows  Windows
	WhenIdle bool // suspend units while the machine's own load is high
	Start    StartFunc
	Credit   Credit // nil: NoCredit
	// Allowance is how much compute a consumer may owe this supplier
	// (ComputeBalance above it) before its units are refused
	// (0: DefaultAllowance).
	Allowance time.Duration
	// Heartbeat is how often suppliers report (0: DefaultHeartbeat); a lease
	// not renewed for LeaseTTL (0: 5 heartbeats) ends.
	Heartbeat time.Duration
	LeaseTTL  time.Duration
	Log       *slog.Logger

	now func() time.Time // the time windows are read at (tests); nil: time.Now
	lie bool             // corrupt every result (tests; the liar build sets it always)
}

// Defaults.
const (
	DefaultHeartbeat = time.Second
	DefaultAllowance = time.Hour
	defaultUnitMem   = 1 << 30
	deadlineGrace    = 10 * time.Second
	// maxLost is how many runs of one unit may be lost or handed back
	// before the unit fails.
	maxLost = 12
)

// Service is a node's compute side: requester of its own jobs and, with
// Slots > 0, supplier for others.
type Service struct {
	cfg     Config
	log     *slog.Logger
	started time.Time
	score   float64
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	jobs    map[string]*job
	leases  map[string]leaseRef // requester: lease → run
	offers  map[string]*offerState
	rely    map[string]float64 // requester: reliability of each supplier, 0..1
	offerAt time.Time
	kick    chan struct{}

	lie   bool             // corrupt every result (the liar build; tests)
	clock func() time.Time // the time windows are read at (tests); nil: time.Now

	smu     sync.Mutex
	running map[string]*task // supplier: lease → task
	busy    bool             // supplier: suspended for the owner's own load
}

type leaseRef struct {
	j *job
	u *unit
	r *run
}

type offerState struct {
	cap Capacity
	at  time.Time
}

// New starts the service: it serves the compute protocol on cfg.Host and
// resumes the jobs kept in cfg.DB.
func New(cfg Config) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Credit == nil {
		cfg.Credit = NoCredit{}
	}
	if cfg.Allowance == 0 {
		cfg.Allowance = DefaultAllowance
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 5 * cfg.Heartbeat
	}
	if cfg.Slots > 0 && cfg.Memory == 0 {
		cfg.Memory = int64(cfg.Slots) * defaultUnitMem
	}
	if cfg.Slots > 0 && cfg.Start == nil {
		return nil, errors.New("compute: supplier without a StartFunc")
	}
	s := &Service{
		cfg: cfg, log: cfg.Log, started: time.Now(),
		jobs: map[string]*job{}, leases: map[string]leaseRef{}, offers: map[string]*offerState{},
		rely: map[string]float64{}, running: map[string]*task{}, kick: make(chan struct{}, 1), lie: lie || cfg.lie, clock: cfg.now,
	}
	if cfg.Slots > 0 {
		s.score = benchmark()
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Host.SetStreamHandler(Protocol, s.handle)
	s.wg.Add(1)
	go s.scheduleLoop()
	if cfg.Slots > 0 {
		s.wg.Add(1)
		go s.supplyLoop()
	}
	return s, nil
}

// Close stops the service: units it runs for others are killed (their
// requesters move them), its own jobs stay in the store.
func (s *Service) Close() {
	s.cfg.Host.RemoveStreamHandler(Protocol)
	s.cancel()
	s.smu.Lock()
	for _, t := range s.running {
		t.stop()
	}
	s.smu.Unlock()
	s.wg.Wait()
}

// load reads the jobs kept in the store. Active runs get a fresh lease: their
// suppliers may still be working and reporting.
func (s *Service) load() error {
	now := time.Now()
	return s.cfg.DB.View(func(t *store.Txn) error {
		return t.Iterate([]byte("Jj"), nil, true, func(_, v []byte) (bool, error) {
			j, err := decodeJob(v)
			if err != nil {
				s.log.Warn("compute job record unreadable", "err", err)
				return true, nil
			}
			s.jobs[j.ID] = j
			for _, u := range j.Units {
				for _, r := range u.Runs {
					if r.State == runActive {
						r.Expires = now.Add(s.cfg.LeaseTTL)
						s.leases[r.Lease] = leaseRef{j, u, r}
					}
				}
			}
			return true, nil
		})
	})
}

func decodeJob(b []byte) (*job, error) {
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: job record: %v", errMalformed, err)
	}
	if j.Spec.normalize() != nil || len(j.ID) != 2*jobIDLen || len(j.Key) != 32 || len(j.Units) != j.Spec.Units {
		return nil, fmt.Errorf("%w: job record fields", errMalformed)
	}
	for i, u := range j.Units {
		if u == nil || u.Index != i {
			return nil, fmt.Errorf("%w: job record unit %d", errMalformed, i)
		}
		for _, r := range u.Runs {
			if r == nil {
				return nil, fmt.Errorf("%w: job record run", errMalformed)
			}
		}
	}
	return &j, nil
}

// save writes j to the store; the caller holds s.mu.
func (s *Service) save(j *job) {
	b, err := json.Marshal(j)
	if err == nil {
		err = s.cfg.DB.Update(int64(len(b)), func(t *store.Txn) error { return t.Set(jobKey(j.ID), b) })
	}
	if err != nil {
		s.log.Warn("compute job not saved", "job", j.ID, "err", err)
	}
}

// handle serves one request on a compute stream.
func (s *Service) handle(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(time.Minute))
	from := st.Conn().RemotePeer()
	t, b, err := readMsg(bufio.NewReader(st))
	if err != nil {
		st.Reset()
		return
	}
	m, err := decodeMsg(t, b)
	if err != nil || t&replyBit != 0 {
		writeMsg(st, t|replyBit, &replyMsg{Status: statusBad, Message: "malformed request"})
		return
	}
	var rep *replyMsg
	switch m := m.(type) {
	case *struct{}:
		c := s.Capacity()
		rep = &replyMsg{Capacity: &c}
	case *assignMsg:
		rep = s.accept(from, m)
	case *cancelMsg:
		rep = s.cancelTask(from, m)
	case *heartbeatMsg:
		rep = s.onHeartbeat(from, m)
	case *checkpointMsg:
		rep = s.onCheckpoint(from, m)
	case *resultMsg:
		rep = s.onResult(from, m)
	}
	writeMsg(st, t|replyBit, rep)
}

// request sends one message to p and returns its reply.
func (s *Service) request(ctx context.Context, p peer.ID, t msgType, m any) (*replyMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := s.cfg.Host.NewStream(network.WithAllowLimitedConn(ctx, "compute"), p, Protocol)
	if err != nil {
		return nil, fmt.Errorf("compute: open stream to %s: %w", p, err)
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if err := writeMsg(st, t, m); err != nil {
		st.Reset()
		return nil, err
	}
	st.CloseWrite()
	rt, b, err := readMsg(bufio.NewReader(st))
	if err != nil {
		st.Reset()
		return nil, fmt.Errorf("compute: reply from %s: %w", p, err)
	}
	if rt != t|replyBit {
		return nil, fmt.Errorf("%w: reply type %#x", errMalformed, byte(rt))
	}
	r, err := decodeMsg(rt, b)
	if err != nil {
		return nil, err
	}
	return r.(*replyMsg), nil
}
