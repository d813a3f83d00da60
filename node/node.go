package node

import (
	"context"
	"crypto/ed25519"
	"time"

	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/compute"
	"github.com/peerdrive/peerdrive/crypto"
	pfs "github.com/peerdrive/peerdrive/fs"
	pnet "github.com/peerdrive/peerdrive/net"
	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/segment"
	"github.com/peerdrive/peerdrive/snapshot"
	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/tree"
)

// AdminShare is the fraction of the erasure-coded space kept for
// administration (metadata, audits, repair slack): quota = contributed ×
// k/n × (1 − AdminShare).
const AdminShare = 0.03

// Default erasure coding, k data + m parity shards per segment: with
// AdminShare, 100 GB contributed buys 100 × 12/16 × 0.97 = 72.75 GB of drive.
const (
	DefaultDataShards   = 12
	DefaultParityShards = 4
)

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
	// Snapshot, if not 0, mounts that snapshot read-only instead of the
	// live drive.
	Snapshot uint64
	// Takeover makes this node the drive's writer even if another node's
	// lease has not run out (the other machine is gone).
	Takeover bool
	// RestoreTimeout bounds the search for the drive's root record when
	// the home has no drive yet (init --from-key). 0: 2 minutes.
	RestoreTimeout time.Duration
	// Retention of snapshots; zero: snapshot.DefaultRetention.
	Retention snapshot.Retention
	Repair    replica.RepairOptions // audits and repair (repair.go, docs/audit.md)
	// Progress, if set, receives one-line progress messages (restore).
	Progress func(msg string)
	Log      *slog.Logger

	LedgerConfig // private network, coordinator, ledger allowance (ledger.go)
	GCConfig     // shard leases and garbage collection (gc.go)

	// Compute supplier (docs/compute.md): --compute-slots, --compute-window, --compute-when-idle, --compute-memory.
	ComputeSlots    int
	ComputeWindows  []string
	ComputeWhenIdle bool
	ComputeMemory   int64
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
	roots  *store.Roots
	pub    *snapshot.Publisher
	// readOnlyWhy says why a drive mounted read-only although not asked to.
	readOnlyWhy string
	bg          sync.WaitGroup
	bgStop      chan struct{}
	snapDB      *store.DB
	snapDir     string
	pubMu       sync.Mutex
	tree        *tree.Tree
	rep         *replica.Replica
	fs          *pfs.FS
	net         *pnet.Node
	ctl         *control
	led         *ledgerState // ledger.go
	gcs         *gcState     // garbage collection and leases (gc.go)
	compute     *compute.Service

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
		cfg.DataShards, cfg.ParityShards = DefaultDataShards, DefaultParityShards
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
	n := &Node{cfg: cfg, log: cfg.Log, stopReq: make(chan struct{}), bgStop: make(chan struct{})}
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
	if err := n.privateNetwork(&cfg); err != nil { // private.go
		return nil, err
	}
	n.net, err = pnet.Start(ctx, pnet.Config{Key: keys.Node, Listen: cfg.Listen, Bootstrap: cfg.Bootstrap, MDNS: cfg.MDNS, Private: n.led.private})
	if err != nil {
		return nil, err
	}
	n.net.ServeShards(n.shards)
	n.startSweeper() // expired holds (gc.go)
	n.roots = store.NewRoots(n.db)
	n.net.ServeRoots(n.roots)
	if err := n.net.WriteAddrs(filepath.Join(cfg.Home, AddrsFile)); err != nil {
		return nil, err
	}
	if !cfg.StorageOnly {
		if err := n.startDrive(ctx, keys); err != nil {
			return nil, err
		}
	}
	if err := n.startLedger(); err != nil { // ledger.go
		return nil, err
	}
	if err := n.startCompute(); err != nil { // compute.go; after the ledger it pays through
		return nil, err
	}
	n.ctl, err = startControl(n, filepath.Join(cfg.Home, ControlSocket))
	if err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// The replica places shards in the order the node's network gives.
var _ replica.Placer = (*pnet.Node)(nil)

func (n *Node) startDrive(ctx context.Context, keys *Keys) error {
	cfg := &n.cfg
	var err error
	n.rep, err = replica.New(n.db, n.net, replica.Options{
		Params:     segment.Params{K: cfg.DataShards, M: cfg.ParityShards},
		CacheBytes: cfg.CacheSize,
		Log:        cfg.Log,
		Committed:  n.committed, // ledger.go

		RepairOptions: cfg.Repair, // audits and repair (repair.go)
	})
	if err != nil {
		return err
	}
	owner := crypto.OwnerKey(keys.Recovery)
	n.pub = &snapshot.Publisher{
		DB: n.db, Rep: n.rep, Net: n.net, Owner: owner, RootKey: crypto.RootKey(keys.Recovery),
		Writer: n.net.ID(), Lease: leaseTime, Retention: cfg.Retention, Log: cfg.Log,
	}
	if n.pub.Retention == (snapshot.Retention{}) {
		n.pub.Retention = snapshot.DefaultRetention
	}
	if keys.Drive == nil {
		if err := n.restore(ctx, keys); err != nil {
			return err
		}
	} else if !cfg.ReadOnly && cfg.Snapshot == 0 {
		n.checkLease(ctx, keys)
	}
	n.pub.Keys, n.pub.DriveKey = keys.Drive, keys.WrappedDrive

	db, remote := n.db, tree.Remote(n.rep)
	if cfg.Snapshot != 0 {
		cfg.ReadOnly = true
		if db, remote, err = n.openSnapshot(ctx, keys, cfg.Snapshot); err != nil {
			return err
		}
	}
	n.tree, err = tree.Open(ctx, db, keys.Drive, tree.Options{
		RootUID: uint32(os.Getuid()), RootGID: uint32(os.Getgid()), Log: cfg.Log, Remote: remote,
		// Decrypted chunks in memory are a cache too: --cache-size bounds them.
		ChunkCacheBytes: int(min(64<<20, cfg.CacheSize)),
		ReadOnly:        cfg.ReadOnly,
	})
	if errors.Is(err, tree.ErrWrongKey) {
		return fmt.Errorf("the keys in %s do not open its store", cfg.Home)
	}
	if err != nil {
		return err
	}
	if !cfg.ReadOnly {
		// Patches that a crash left (fsyncs of small rewrites) are applied
		// before anything reads the files (docs/format.md §5.9).
		np, err := n.tree.ReplayPatches(ctx)
		if err != nil {
			return fmt.Errorf("replay the last fsynced writes: %w", err)
		}
		if np > 0 {
			// Only a crash leaves patches: worth a line at the default level.
			n.log.Warn("fsynced patches replayed after a crash", "chunks", np)
		}
	}
	n.pub.Stats = func() (uint64, uint64) { st := n.tree.Stats(); return st.Inodes, st.Used }
	n.fs = pfs.New(n.tree, db, pfs.Options{
		ReadOnly:   cfg.ReadOnly,
		AllowOther: cfg.AllowOther,
		Quota:      Quota(cfg.Contribute, cfg.DataShards, cfg.ParityShards),
		Log:        cfg.Log,
		Admit:      n.rep.WaitRoom,
	})
	if !cfg.ReadOnly {
		// Leftovers of deleted files only take space: a mount that cannot
		// clear them now still serves the drive, and tries again next time.
		if err := n.fs.PurgeOrphans(ctx); err != nil {
			n.log.Warn("deleted files not purged; the next mount tries again", "err", err)
		}
	}
	n.rep.Start()
	n.startGC(keys) // gc.go
	if !cfg.ReadOnly {
		n.bg.Add(1)
		go n.publishLoop()
		n.startRepairPublisher() // repair.go
	}
	return nil
}

// Lease timing: the writer renews its lease well before it runs out; a
// drive with no renewal for leaseTime has no writer.
const leaseTime = 60 * time.Second

// Periodic snapshots (variables: a test shortens them).
var (
	renewEvery     = 20 * time.Second
	publishEvery   = 5 * time.Minute
	publishTimeout = 5 * time.Minute // a periodic snapshot gives up after it
)

func (n *Node) progress(format string, args ...any) {
	if n.cfg.Progress != nil {
		n.cfg.Progress(fmt.Sprintf(format, args...))
	}
}

// waitPeers waits until some storage peer is connected, for at most d.
func (n *Node) waitPeers(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for len(n.net.StoragePeers()) == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
}

// restore brings a drive back on a home that has only the recovery key:
// it finds the newest root record, recovers the drive key from it and loads
// the file tree from peers. File contents come later, on demand.
func (n *Node) restore(ctx context.Context, keys *Keys) error {
	d := n.cfg.RestoreTimeout
	if d == 0 {
		d = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	n.progress("restoring: looking for the drive's root record")
	n.waitPeers(ctx, d)
	owner := crypto.OwnerKey(keys.Recovery).Public().(ed25519.PublicKey)
	var rec *peerdrive.RootRecord
	for {
		var err error
		rec, err = n.net.FindRoot(ctx, owner)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("restore: %w (after %s; is a peer that holds the drive reachable with --bootstrap?)", snapshot.ErrNoRoot, d)
		}
		time.Sleep(time.Second)
	}
	body, err := snapshot.OpenBody(n.pub.RootKey, rec)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := keys.setDrive(body.DriveKey); err != nil {
		return fmt.Errorf("restore: the recovery key does not open the drive key in the root record: %w", err)
	}
	n.progress("restoring: snapshot %d, %d files, %d tree pieces", body.Current.Seq, body.Current.Files, len(body.Current.Pieces))
	err = snapshot.LoadManifest(ctx, n.rep, keys.Drive, &body.Current, n.db, func(done, total int) {
		n.progress("restoring: tree piece %d of %d", done, total)
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := writeNew(filepath.Join(n.cfg.Home, DriveKeyFile), body.DriveKey, 0o600); err != nil {
		return err
	}
	n.roots.Put(ctx, rec)
	n.pub.Adopt(rec, body)
	switch {
	case rec.Writer != n.net.ID() && time.Now().UnixNano() < rec.LeaseUntil && !n.cfg.Takeover:
		n.readOnly(fmt.Sprintf("node %s holds the drive's write lease until %s; mounted read-only (--takeover once that machine is gone)",
			rec.Writer, time.Unix(0, rec.LeaseUntil).Format(time.RFC3339)))
	case !n.cfg.ReadOnly:
		// Claim the lease before the mount appears, so that the old writer,
		// should it come back, finds this node named and stays read-only.
		if err := n.pub.Renew(ctx); err != nil {
			return fmt.Errorf("restore: claim the write lease: %w", err)
		}
	}
	n.progress("restored: the whole tree is here; file contents come from peers on demand")
	return nil
}

// checkLease makes the mount read-only if another node writes the drive.
func (n *Node) checkLease(ctx context.Context, keys *Keys) {
	owner := crypto.OwnerKey(keys.Recovery).Public().(ed25519.PublicKey)
	// What this node published last, kept in its own store.
	if rec, err := n.roots.Get(ctx, owner); err == nil {
		if body, err := snapshot.OpenBody(n.pub.RootKey, rec); err == nil {
			n.pub.Adopt(rec, body)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n.waitPeers(ctx, 3*time.Second)
	if len(n.net.StoragePeers()) == 0 {
		return
	}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	rec, err := n.net.FindRoot(fctx, owner)
	n.pub.MarkSearched()
	if err != nil || rec.Writer == n.net.ID() {
		if err == nil {
			if body, err := snapshot.OpenBody(n.pub.RootKey, rec); err == nil {
				n.pub.Adopt(rec, body)
			}
		}
		return
	}
	switch {
	case n.cfg.Takeover:
		n.readOnly(fmt.Sprintf("node %s published the drive's newest tree (snapshot %d); this home's copy is older, so it cannot take over: restore into a fresh home (peerdrive init --from-key) and mount that with --takeover", rec.Writer, rec.Seq))
	case time.Now().UnixNano() < rec.LeaseUntil:
		n.readOnly(fmt.Sprintf("node %s holds the drive's write lease until %s; mounted read-only", rec.Writer, time.Unix(0, rec.LeaseUntil).Format(time.RFC3339)))
	default:
		n.readOnly(fmt.Sprintf("node %s published the drive's newest tree (snapshot %d); this home's copy is older; mounted read-only", rec.Writer, rec.Seq))
	}
}

func (n *Node) readOnly(why string) {
	n.cfg.ReadOnly = true
	n.readOnlyWhy = why
	n.log.Warn("drive mounted read-only", "why", why)
}

// ReadOnlyReason says why the drive is read-only although the user did not
// ask for it ("" if it is not).
func (n *Node) ReadOnlyReason() string { return n.readOnlyWhy }

// openSnapshot loads snapshot seq's tree into a scratch store in the home
// and returns it with a Remote that reads chunks from the local cache first,
// then from peers.
func (n *Node) openSnapshot(ctx context.Context, keys *Keys, seq uint64) (*store.DB, tree.Remote, error) {
	hist, err := n.pub.Snapshots(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshots: %w", err)
	}
	var info *snapshot.Info
	for i := range hist {
		if hist[i].Seq == seq {
			info = &hist[i]
		}
	}
	if info == nil {
		return nil, nil, fmt.Errorf("no snapshot %d (peerdrive snapshots lists them)", seq)
	}
	m, err := snapshot.FetchManifest(ctx, n.rep, keys.Drive, *info)
	if err != nil {
		return nil, nil, err
	}
	n.snapDir = filepath.Join(n.cfg.Home, "snapshots", fmt.Sprintf("%d-%d", seq, os.Getpid()))
	os.RemoveAll(n.snapDir)
	db, err := store.Open(n.snapDir, store.Options{})
	if err != nil {
		return nil, nil, err
	}
	n.snapDB = db
	if err := snapshot.LoadManifest(ctx, n.rep, keys.Drive, m, db, nil); err != nil {
		return nil, nil, err
	}
	srep, err := replica.New(db, n.net, replica.Options{Params: segment.Params{K: n.cfg.DataShards, M: n.cfg.ParityShards}, Log: n.log})
	if err != nil {
		return nil, nil, err
	}
	return db, snapRemote{main: n.db, peers: srep}, nil
}

// snapRemote serves a snapshot's chunks from the live drive's cache when it
// has them, else from peers.
type snapRemote struct {
	main  *store.DB
	peers *replica.Replica
}

func (s snapRemote) Queued(peerdrive.ChunkID, int64)  {}
func (s snapRemote) Dropped(peerdrive.ChunkID, int64) {}
func (s snapRemote) Accessed(peerdrive.ChunkID)       {}
func (s snapRemote) Fetch(ctx context.Context, id peerdrive.ChunkID) ([]byte, error) {
	if b, err := s.main.Blobs().Get(ctx, id); err == nil {
		return b, nil
	}
	return s.peers.Fetch(ctx, id)
}

// publishLoop renews the write lease and publishes the tree when it changed.
func (n *Node) publishLoop() {
	defer n.bg.Done()
	renew := time.NewTicker(renewEvery)
	defer renew.Stop()
	lastPub := time.Now()
	lastStats := n.tree.Stats()
	base, stop := n.bgContext()
	defer stop()
	for {
		select {
		case <-n.bgStop:
			return
		case <-renew.C:
		}
		ctx, cancel := context.WithTimeout(base, publishTimeout)
		if st := n.tree.Stats(); st != lastStats && time.Since(lastPub) >= publishEvery {
			if _, err := n.Publish(ctx, nil); err != nil {
				if base.Err() == nil { // not cut short by close
					n.log.Warn("periodic snapshot failed", "err", err)
				}
			} else {
				lastPub, lastStats = time.Now(), st
			}
		} else if err := n.pub.Renew(ctx); err != nil && base.Err() == nil {
			n.log.Warn("lease renewal failed", "err", err)
		}
		cancel()
	}
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

// bgContext returns a context that ends when the node's background work
// is told to stop (bgStop): a snapshot that waits for uploads to peers
// that are not there must not hold up an unmount.
func (n *Node) bgContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.bgStop:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

func (n *Node) close(ctx context.Context) error {
	var errs []error
	close(n.bgStop)
	n.bg.Wait()
	if n.ctl != nil {
		n.ctl.close()
	}
	if n.fs != nil {
		errs = append(errs, n.fs.Close(ctx))
	}
	n.stopGC() // gc.go
	if n.rep != nil {
		n.rep.Close()
	}
	if n.snapDB != nil {
		n.snapDB.Close()
		os.RemoveAll(n.snapDir)
	}
	n.closeCompute()
	if n.net != nil {
		errs = append(errs, n.net.Close())
		os.Remove(filepath.Join(n.cfg.Home, AddrsFile))
	}
	n.closeLedger() // ledger.go
	if n.db != nil {
		errs = append(errs, n.db.Close())
	}
	return errors.Join(errs...)
}

// CheckMountpoint accepts an existing, empty directory that is not mounted.
// A dead FUSE mount (ENOTCONN) is detached first.
func CheckMountpoint(dir string) error {
	st, err := os.Stat(dir)
	if isDeadConn(err) || err == nil && isMountpoint(dir) && staleMount(dir) {
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

func isDeadConn(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// staleMount reports whether the mount on dir is a FUSE mount whose daemon
// is gone. A stat of dir itself may be answered from the kernel's cache of
// attributes; a lookup of a name nobody looked up before is not.
func staleMount(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, fmt.Sprintf(".peerdrive-probe-%016x", rand.Uint64())))
	return isDeadConn(err)
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
