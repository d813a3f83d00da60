package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
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
}

// Status reports the node's figures.
func (n *Node) Status() Status {
	st := n.tree.Stats()
	n.mu.Lock()
	mp := n.mountpoint
	n.mu.Unlock()
	return Status{
		PeerID:           n.net.ID(),
		Peers:            len(n.net.Host().Network().Peers()),
		Mountpoint:       mp,
		ContributedBytes: n.cfg.Contribute,
		QuotaBytes:       Quota(n.cfg.Contribute, n.cfg.DataShards, n.cfg.ParityShards),
		UsedBytes:        st.Used,
		StoredBytes:      st.Stored,
		Chunks:           st.Chunks,
		Inodes:           st.Inodes,
		DataShards:       n.cfg.DataShards,
		ParityShards:     n.cfg.ParityShards,
	}
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
