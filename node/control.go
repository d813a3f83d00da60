package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/peerdrive/peerdrive/snapshot"
)

// Status is what `peerdrive status --json` prints.
type Status struct {
	PeerID                string `json:"peer_id"`
	Peers                 int    `json:"peers"`
	Mountpoint            string `json:"mountpoint,omitempty"`
	ContributedBytes      int64  `json:"contributed_bytes"`
	QuotaBytes            uint64 `json:"quota_bytes"`
	UsedBytes             uint64 `json:"used_bytes"`
	StoredBytes           uint64 `json:"stored_bytes"`
	PendingUploadBytes    uint64 `json:"pending_upload_bytes"`
	Chunks                uint64 `json:"chunks"`
	Inodes                uint64 `json:"inodes"`
	UnderReplicatedChunks uint64 `json:"under_replicated_chunks"`
	LostChunks            uint64 `json:"lost_chunks"`
	Snapshots             int    `json:"snapshots"`
	DataShards            int    `json:"data_shards"`
	ParityShards          int    `json:"parity_shards"`
	// PeerLossTolerated is how many storage peers may be lost now without
	// losing data, given how shards are actually spread.
	PeerLossTolerated int    `json:"peer_loss_tolerated"`
	CachedBytes       int64  `json:"cached_bytes"`
	CacheBytes        int64  `json:"cache_limit_bytes"`
	HeldBytes         int64  `json:"held_for_peers_bytes"`
	HeldShards        int64  `json:"held_for_peers_shards"`
	StorageOnly       bool   `json:"storage_only,omitempty"`
	LastUploadError   string `json:"last_upload_error,omitempty"`
	ReadOnlyReason    string `json:"read_only_reason,omitempty"`
	RootSeq           uint64 `json:"root_seq,omitempty"`
	Writer            string `json:"writer,omitempty"`
	// StoragePeers is what the shard client knows of each connected
	// storage peer, in placement preference (docs/protocol.md §3).
	StoragePeers []PeerRow `json:"storage_peers,omitempty"`

	LedgerStatus // per-peer ledger, network ledger (ledger.go)

	GCPendingBytes int64 `json:"gc_pending_bytes"` // gc.go
	GCFreedBytes   int64 `json:"gc_freed_bytes"`   // gc.go

	RepairStatus // audits and repair (repair.go)
}

// PeerRow is one connected storage peer in `status`.
type PeerRow struct {
	Peer      string  `json:"peer"`
	LatencyMS float64 `json:"latency_ms,omitempty"` // EWMA of its service latency; absent if never measured
	// Used and Capacity are the peer's own figures from its last PUT or
	// STAT reply; absent if it has not told us.
	UsedBytes     int64  `json:"used_bytes,omitempty"`
	CapacityBytes int64  `json:"capacity_bytes,omitempty"`
	Healthy       bool   `json:"healthy"` // no bad shard, fewer than 3 failures in a row
	Full          bool   `json:"full"`    // refused a PUT for room recently
	Successes     uint64 `json:"successes"`
	Failures      uint64 `json:"failures"`
}

// peerRows lists the connected storage peers, best first.
func (n *Node) peerRows() []PeerRow {
	peers := n.net.RankPeers(n.net.StoragePeers())
	rows := make([]PeerRow, 0, len(peers))
	for _, p := range peers {
		s := n.net.PeerScore(p)
		rows = append(rows, PeerRow{
			Peer:          p.String(),
			LatencyMS:     float64(s.Latency.Microseconds()) / 1000,
			UsedBytes:     s.Used,
			CapacityBytes: s.Capacity,
			Healthy:       s.Healthy(),
			Full:          s.Healthy() && s.RecentlyFull(),
			Successes:     s.Successes,
			Failures:      s.Failures,
		})
	}
	return rows
}

// Status reports the node's figures.
func (n *Node) Status() Status {
	n.mu.Lock()
	mp := n.mountpoint
	n.mu.Unlock()
	held, _, count := n.shards.Usage()
	st := Status{
		PeerID:           n.net.ID(),
		Peers:            len(n.net.StoragePeers()),
		Mountpoint:       mp,
		ContributedBytes: n.cfg.Contribute,
		DataShards:       n.cfg.DataShards,
		ParityShards:     n.cfg.ParityShards,
		HeldBytes:        held,
		HeldShards:       count,
		StorageOnly:      n.cfg.StorageOnly,
		CacheBytes:       n.cfg.CacheSize,
		StoragePeers:     n.peerRows(),
	}
	n.ledgerStatus(&st) // ledger.go
	if n.tree == nil {
		return st
	}
	st.ReadOnlyReason = n.readOnlyWhy
	if n.pub != nil {
		if rec, body := n.pub.Known(); rec != nil {
			st.Snapshots = len(body.History)
			st.RootSeq = rec.Seq
			st.Writer = rec.Writer
		}
	}
	n.gcStatus(&st) // gc.go
	ts := n.tree.Stats()
	rs := n.rep.Stats()
	n.repairStatus(&st) // repair.go
	st.QuotaBytes = Quota(n.cfg.Contribute, n.cfg.DataShards, n.cfg.ParityShards)
	st.UsedBytes, st.StoredBytes, st.Chunks, st.Inodes = ts.Used, ts.Stored, ts.Chunks, ts.Inodes
	st.PendingUploadBytes = uint64(max(rs.PendingBytes, 0))
	st.UnderReplicatedChunks = uint64(rs.UnderReplicated)
	st.LostChunks = uint64(rs.Lost)
	st.PeerLossTolerated = rs.PeerLossTolerated
	st.CachedBytes = rs.CachedBytes
	if rs.LastErr != nil {
		st.LastUploadError = rs.LastErr.Error()
	}
	return st
}

// Sync flushes every write to the local store, waits until it is on peers
// at full redundancy and publishes the tree: a new snapshot.
func (n *Node) Sync(ctx context.Context, progress func(pending int64)) error {
	if n.fs == nil {
		return errors.New("a storage-only node has no drive to sync")
	}
	if n.cfg.ReadOnly {
		return nil // nothing written here
	}
	_, err := n.Publish(ctx, progress)
	return err
}

// Publish flushes the drive, uploads it and publishes a new root record:
// a snapshot.
func (n *Node) Publish(ctx context.Context, progress func(pending int64)) (snapshot.Info, error) {
	if n.pub == nil || n.cfg.ReadOnly {
		return snapshot.Info{}, errors.New("this node does not write a drive")
	}
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	if err := n.fs.FlushAll(ctx); err != nil {
		return snapshot.Info{}, err
	}
	if err := n.tree.Sync(ctx); err != nil {
		return snapshot.Info{}, err
	}
	if err := n.rep.Sync(ctx, progress); err != nil {
		return snapshot.Info{}, err
	}
	info, err := n.pub.Publish(ctx)
	if err != nil {
		return info, err
	}
	n.gcKick() // collect what left retention (gc.go)
	if rec, _, err := n.pub.Latest(ctx); err == nil {
		n.roots.Put(ctx, rec) // this node answers for its own drive too
	}
	return info, nil
}

// Snapshots lists the drive's retained snapshots, newest first.
func (n *Node) Snapshots(ctx context.Context) ([]snapshot.Info, error) {
	if n.pub == nil {
		return nil, errors.New("a storage-only node has no drive")
	}
	return n.pub.Snapshots(ctx)
}

// control serves the node's control socket: HTTP over a Unix socket that
// only the home's owner can reach.
type control struct {
	srv  *http.Server
	path string
}

func startControl(n *Node, path string) (*control, error) {
	// A socket left by a killed node is stale if nobody answers on it.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another node is running", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Status())
	})
	mux.HandleFunc("POST /sync", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		w.Header().Set("Content-Type", "text/plain")
		fl, _ := w.(http.Flusher)
		err := n.Sync(ctx, func(pending int64) {
			fmt.Fprintf(w, "pending %d\n", pending)
			if fl != nil {
				fl.Flush()
			}
		})
		if err != nil {
			fmt.Fprintf(w, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		fmt.Fprintf(w, "ok\n")
	})
	mux.HandleFunc("GET /snapshots", func(w http.ResponseWriter, r *http.Request) {
		list, err := n.Snapshots(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(list)
	})
	computeRoutes(n, mux)
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok\n")
		n.requestStop()
	})
	c := &control{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, path: path}
	go c.srv.Serve(l)
	return c, nil
}

func (c *control) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.srv.Shutdown(ctx)
	os.Remove(c.path)
}

// ErrNotRunning reports that no node answers on the home's control socket.
var ErrNotRunning = errors.New("no running node for this home")

// Client talks to the running node of a home.
type Client struct{ hc *http.Client }

// Dial returns a client for home's control socket.
func Dial(home string) *Client {
	path := filepath.Join(home, ControlSocket)
	return &Client{hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Sync asks the node to sync, calling progress with the bytes still to
// upload, until done, failed or timeout.
func (c *Client) Sync(ctx context.Context, timeout time.Duration, progress func(pending int64)) error {
	hc := *c.hc
	hc.Timeout = 0 // bounded by ctx and timeout instead
	req, err := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://peerdrive/sync?timeout=%s", timeout), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("sync: %s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "ok":
			return nil
		case strings.HasPrefix(line, "pending "):
			if v, err := strconv.ParseInt(strings.TrimPrefix(line, "pending "), 10, 64); err == nil && progress != nil {
				progress(v)
			}
		case strings.HasPrefix(line, "error "):
			return errors.New(strings.TrimPrefix(line, "error "))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return errors.New("sync: the node closed the connection before finishing")
}

// Shutdown asks the node to stop.
func (c *Client) Shutdown(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://peerdrive/shutdown", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	resp.Body.Close()
	return nil
}

// Snapshots asks the node for the drive's snapshots.
func (c *Client) Snapshots(ctx context.Context) ([]snapshot.Info, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://peerdrive/snapshots", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("snapshots: %s", strings.TrimSpace(string(b)))
	}
	var list []snapshot.Info
	return list, json.NewDecoder(resp.Body).Decode(&list)
}

// Status asks the node for its status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, "GET", "http://peerdrive/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return st, fmt.Errorf("status: %s: %s", resp.Status, b)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
