package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	pfs "github.com/peerdrive/peerdrive/fs"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/tree"
)

// AdminShare is the fraction of the erasure-coded space kept for
// administration (metadata, audits, repair slack): quota = contributed ×
// k/n × (1 − AdminShare).
const AdminShare = 0.03

// Config of a node.
type Config struct {
	Home         string
	Listen       []string
	Bootstrap    []string
	MDNS         bool
	Contribute   int64 // bytes of disk given to the network
	CacheSize    int64 // bound of the local chunk cache (0: DefaultCacheSize)
	DataShards   int
	ParityShards int
	ReadOnly     bool
	AllowOther   bool
	// StorageOnly runs a node that stores shards for others and has no
	// drive of its own (peerdrive serve).
	StorageOnly bool
	Log         *slog.Logger
}

// DefaultCacheSize bounds the local chunk cache when --cache-size is not given.
const DefaultCacheSize = 2 << 30

// DefaultContribution is what a node gives when --contribute is not given.
const DefaultContribution = 10 << 30

// Quota is the drive size a contribution buys: contributed × k/n × (1 − AdminShare).
func Quota(contribute int64, k, m int) uint64 {
	if contribute <= 0 || k <= 0 {
		return 0
	}
	return uint64(float64(contribute) * float64(k) / float64(k+m) * (1 - AdminShare))
}

// Node is a running node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	db     *store.DB
	shards *store.Shards
	tree   *tree.Tree
	rep    *replica.Replica
	fs     *pfs.FS
	net    *pnet.Node
	ctl    *control

	mu         sync.Mutex
	srv        *fuse.Server
	mountpoint string
	stopReq    chan struct{}
	stopOnce   sync.Once
	closeOnce  sync.Once
	closeErr   error
}

// Stopped is closed when someone asks the node to stop through its control
// socket (peerdrive shutdown).
func (n *Node) Stopped() <-chan struct{} { return n.stopReq }

func (n *Node) requestStop() { n.stopOnce.Do(func() { close(n.stopReq) }) }

// Start opens the home (initializing it if empty) and starts the node.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.DataShards == 0 {
		cfg.DataShards, cfg.ParityShards = 12, 4
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Contribute == 0 {
		cfg.Contribute = DefaultContribution
	}
	if !Initialized(cfg.Home) {
		if err := Init(cfg.Home, ""); err != nil {
			return nil, err
		}
		cfg.Log.Info("home initialized", "home", cfg.Home)
	}
	keys, err := LoadKeys(cfg.Home)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Log, stopReq: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			n.Close(ctx)
		}
	}()
	n.db, err = store.Open(filepath.Join(cfg.Home, StoreDir), store.Options{ReadOnly: false})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("home %s is in use by another peerdrive process", cfg.Home)
	}
	if err != nil {
		return nil, err
	}
	n.shards, err = store.NewShards(n.db, cfg.Contribute)
	if err != nil {
		return nil, err
	}
	n.net, err = pnet.Start(ctx, pnet.Config{Key: keys.Node, Listen: cfg.Listen, Bootstrap: cfg.Bootstrap, MDNS: cfg.MDNS})
	if err != nil {
		return nil, err
	}
	n.net.ServeShards(n.shards)
	if err := n.net.WriteAddrs(filepath.Join(cfg.Home, AddrsFile)); err != nil {
		return nil, err
	}
	if !cfg.StorageOnly {
		if err := n.startDrive(ctx, keys); err != nil {
			return nil, err
		}
	}
	n.ctl, err = startControl(n, filepath.Join(cfg.Home, ControlSocket))
	if err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

func (n *Node) startDrive(ctx context.Context, keys *Keys) error {
	cfg := n.cfg
	var err error
	n.rep, err = replica.New(n.db, n.net, replica.Options{
		Params:     segment.Params{K: cfg.DataShards, M: cfg.ParityShards},
		CacheBytes: cfg.CacheSize,
		Log:        cfg.Log,
	})
	if err != nil {
		return err
	}
	n.tree, err = tree.Open(ctx, n.db, keys.Drive, tree.Options{
		RootUID: uint32(os.Getuid()), RootGID: uint32(os.Getgid()), Log: cfg.Log, Remote: n.rep,
		// Decrypted chunks in memory are a cache too: --cache-size bounds them.
		ChunkCacheBytes: int(min(64<<20, cfg.CacheSize)),
	})
	if errors.Is(err, tree.ErrWrongKey) {
		return fmt.Errorf("the keys in %s do not open its store", cfg.Home)
	}
	if err != nil {
		return err
	}
	n.fs = pfs.New(n.tree, n.db, pfs.Options{
		ReadOnly:   cfg.ReadOnly,
		AllowOther: cfg.AllowOther,
		Quota:      Quota(cfg.Contribute, cfg.DataShards, cfg.ParityShards),
		Log:        cfg.Log,
		Admit:      n.rep.WaitRoom,
	})
	if !cfg.ReadOnly {
		if err := n.fs.PurgeOrphans(ctx); err != nil {
			return err
		}
	}
	n.rep.Start()
	return nil
}

// Addrs are the node's listen addresses with /p2p/ID.
func (n *Node) Addrs() []string { return n.net.Addrs() }

// ID is the node's peer ID.
func (n *Node) ID() string { return n.net.ID() }

// Mount mounts the drive on dir; the mount is live when it returns. A stale
// mount left on dir by a killed daemon is cleaned up first.
func (n *Node) Mount(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := CheckMountpoint(dir); err != nil {
		return err
	}
	srv, err := n.fs.Mount(dir)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.srv, n.mountpoint = srv, dir
	n.mu.Unlock()
	return nil
}

// Wait blocks until the drive is unmounted.
func (n *Node) Wait() {
	n.mu.Lock()
	srv := n.srv
	n.mu.Unlock()
	if srv != nil {
		srv.Wait()
	}
}

// Unmount asks the kernel to unmount the drive; Wait then returns. If files
// are still open it detaches the mount lazily.
func (n *Node) Unmount() error {
	n.mu.Lock()
	srv, dir := n.srv, n.mountpoint
	n.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Unmount(); err != nil {
		if derr := unix.Unmount(dir, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return nil
}

// Close flushes everything to disk and stops the node. It may be called
// more than once; later calls return the first call's result.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() { n.closeErr = n.close(ctx) })
	return n.closeErr
}

func (n *Node) close(ctx context.Context) error {
	var errs []error
	if n.ctl != nil {
		n.ctl.close()
	}
	if n.fs != nil {
		errs = append(errs, n.fs.Close(ctx))
	}
	if n.rep != nil {
		n.rep.Close()
	}
	if n.net != nil {
		errs = append(errs, n.net.Close())
		os.Remove(filepath.Join(n.cfg.Home, AddrsFile))
	}
	if n.db != nil {
		errs = append(errs, n.db.Close())
	}
	return errors.Join(errs...)
}

// CheckMountpoint accepts an existing, empty directory that is not mounted.
// A dead FUSE mount (ENOTCONN) is detached first.
func CheckMountpoint(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
		if uerr := unix.Unmount(dir, unix.MNT_DETACH); uerr != nil {
			return fmt.Errorf("mountpoint %s: stale mount that cannot be removed: %w", dir, uerr)
		}
		slog.Warn("stale mount cleaned up", "dir", dir)
		st, err = os.Stat(dir)
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mountpoint %s does not exist", dir)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", dir)
	}
	if isMountpoint(dir) {
		return fmt.Errorf("mountpoint %s is already mounted", dir)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty", dir)
	}
	return nil
}

func isMountpoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
