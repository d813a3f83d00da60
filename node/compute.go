package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/peerdrive/peerdrive/compute"
	"github.com/peerdrive/peerdrive/wasm"
)

// WorkerCommand is the hidden command that runs one unit in a worker
// process (wasm.WorkerMain).
const WorkerCommand = "compute-worker"

// startCompute starts the compute service: requester of this home's jobs
// and, with --compute-slots, supplier for others.
func (n *Node) startCompute() error {
	ws, err := compute.ParseWindows(n.cfg.ComputeWindows)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("compute: find own executable: %w", err)
	}
	cache := filepath.Join(n.cfg.Home, "wasm-cache")
	start := func(ctx context.Context, u wasm.Unit, onCkpt func(wasm.Checkpoint) error) (compute.Proc, error) {
		u.CacheDir = cache
		p, err := wasm.Start(ctx, exe, []string{WorkerCommand}, u, onCkpt)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	n.compute, err = compute.New(compute.Config{
		Host: n.net.Host(), DB: n.db, Slots: n.cfg.ComputeSlots, Memory: n.cfg.ComputeMemory,
		Windows: ws, WhenIdle: n.cfg.ComputeWhenIdle, Start: start, Credit: n.computeCredit(), Log: n.log,
	})
	return err
}

// computeCredit is the ledger compute pays through (node/ledger.go), or
// none if the node keeps no ledger. startLedger runs before startCompute.
func (n *Node) computeCredit() compute.Credit {
	if n.led != nil && n.led.l != nil {
		return n.led.l
	}
	return compute.NoCredit{}
}

func (n *Node) closeCompute() {
	if n.compute != nil {
		n.compute.Close()
	}
}

// computeRoutes serves the compute commands on the control socket.
func computeRoutes(n *Node, mux *http.ServeMux) {
	reply := func(w http.ResponseWriter, v any, err error) {
		switch {
		case errors.Is(err, compute.ErrNoJob), errors.Is(err, compute.ErrNoUnit):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, compute.ErrNotReady):
			http.Error(w, err.Error(), http.StatusConflict)
		case errors.Is(err, compute.ErrBadJob):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		}
	}
	mux.HandleFunc("POST /compute/submit", func(w http.ResponseWriter, r *http.Request) {
		var rq computeSubmit
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<30)).Decode(&rq); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		id, err := n.compute.Submit(r.Context(), rq.Module, rq.Inputs, rq.Spec)
		reply(w, map[string]string{"id": id}, err)
	})
	mux.HandleFunc("GET /compute/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := n.compute.Status(r.URL.Query().Get("job"))
		reply(w, st, err)
	})
	mux.HandleFunc("GET /compute/jobs", func(w http.ResponseWriter, r *http.Request) {
		reply(w, n.compute.Jobs(), nil)
	})
	mux.HandleFunc("GET /compute/results", func(w http.ResponseWriter, r *http.Request) {
		res, err := n.compute.Results(r.URL.Query().Get("job"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST /compute/cancel", func(w http.ResponseWriter, r *http.Request) {
		reply(w, "ok", n.compute.Cancel(r.URL.Query().Get("job")))
	})
	mux.HandleFunc("POST /compute/reassign", func(w http.ResponseWriter, r *http.Request) {
		u, err := strconv.Atoi(r.URL.Query().Get("unit"))
		if err != nil {
			http.Error(w, "bad unit number", http.StatusBadRequest)
			return
		}
		reply(w, "ok", n.compute.Reassign(r.URL.Query().Get("job"), u))
	})
	mux.HandleFunc("GET /compute/capacity", func(w http.ResponseWriter, r *http.Request) {
		reply(w, n.compute.Capacity(), nil)
	})
}

// computeSubmit is the body of POST /compute/submit.
type computeSubmit struct {
	Module []byte            `json:"module"`
	Inputs map[string][]byte `json:"inputs,omitempty"`
	Spec   compute.Spec      `json:"spec"`
}

// ComputeSubmit submits a job to the running node and returns its ID.
func (c *Client) ComputeSubmit(ctx context.Context, module []byte, inputs map[string][]byte, spec compute.Spec) (string, error) {
	b, err := json.Marshal(computeSubmit{Module: module, Inputs: inputs, Spec: spec})
	if err != nil {
		return "", err
	}
	var out struct{ ID string }
	err = c.computeCall(ctx, "POST", "submit", nil, bytes.NewReader(b), &out)
	return out.ID, err
}

// ComputeStatus asks for job's status.
func (c *Client) ComputeStatus(ctx context.Context, job string) (compute.JobStatus, error) {
	var st compute.JobStatus
	return st, c.computeCall(ctx, "GET", "status", url.Values{"job": {job}}, nil, &st)
}

// ComputeResults fetches job's results.
func (c *Client) ComputeResults(ctx context.Context, job string) ([]compute.UnitResult, error) {
	var res []compute.UnitResult
	return res, c.computeCall(ctx, "GET", "results", url.Values{"job": {job}}, nil, &res)
}

// ComputeCancel cancels job.
func (c *Client) ComputeCancel(ctx context.Context, job string) error {
	return c.computeCall(ctx, "POST", "cancel", url.Values{"job": {job}}, nil, nil)
}

// ComputeReassign moves unit of job to other suppliers.
func (c *Client) ComputeReassign(ctx context.Context, job string, unit int) error {
	return c.computeCall(ctx, "POST", "reassign", url.Values{"job": {job}, "unit": {strconv.Itoa(unit)}}, nil, nil)
}

// ComputeJobs lists the node's jobs.
func (c *Client) ComputeJobs(ctx context.Context) ([]string, error) {
	var ids []string
	return ids, c.computeCall(ctx, "GET", "jobs", nil, nil, &ids)
}

func (c *Client) computeCall(ctx context.Context, method, op string, q url.Values, body io.Reader, out any) error {
	hc := *c.hc
	hc.Timeout = 0 // bounded by ctx
	req, err := http.NewRequestWithContext(ctx, method, "http://peerdrive/compute/"+op+"?"+q.Encode(), body)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		msg := strings.TrimSpace(string(b))
		switch resp.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s", compute.ErrNoJob, msg)
		case http.StatusConflict:
			return fmt.Errorf("%w: %s", compute.ErrNotReady, msg)
		case http.StatusBadRequest:
			return fmt.Errorf("%w: %s", compute.ErrBadJob, msg)
		}
		return fmt.Errorf("compute %s: %s", op, msg)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
