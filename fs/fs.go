// Package fs serves the drive over FUSE (go-fuse's node API): POSIX calls
// become operations on the file tree and on encrypted chunks. It holds no
// metadata of its own beyond the dirty data of open files.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
	"github.com/peerdrive/peerdrive/tree"
)

// Options of a drive's FUSE view.
type Options struct {
	ReadOnly   bool
	AllowOther bool
	// Quota is the drive's size in bytes as df shows it; 0 means the home
	// disk's size.
	Quota uint64
	Log   *slog.Logger
	// FlushAfter is how long written data may stay in memory before it is
	// sealed into the store (0: 5 s). fsync and close do it at once.
	FlushAfter time.Duration
	// Admit, if set, is called before a write is accepted and blocks while
	// the local cache is full of data not yet on peers (back-pressure). It
	// returns early when stop is closed. The kernel's write-back of dirty
	// pages skips it (see FS.write).
	Admit func(stop <-chan struct{})
}

// FS is a drive's FUSE view.
type FS struct {
	tree *tree.Tree
	db   *store.DB
	opts Options
	log  *slog.Logger

	// What the node API does not carry of a request in flight (reqInfo),
	// by its cancel channel: see umaskFS.
	reqs sync.Map

	mu    sync.Mutex
	files map[peerdrive.Ino]*fileState
	// unlinked holds inodes without links that the kernel may still use;
	// the value is false once it has forgotten them (see dropped).
	unlinked map[peerdrive.Ino]bool

	jobs     chan sealJob
	small    chan sealJob  // small files' data, for the gatherer
	urge     chan struct{} // ends the gatherer's wait: someone waits for its batch
	workers  sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	bufBytes atomic.Int64  // dirty and sealing buffers in memory
	ahead    chan struct{} // read-ahead loads in flight
	pushing  chan struct{} // chunks being stored in the page cache (pushChunk)
	// pushMu is held for reading by each store of a chunk in the page
	// cache, for writing by what may change a file's bytes without a
	// writer's open: an open for writing and a truncate (pushChunk).
	pushMu   sync.RWMutex
	aheadWG  sync.WaitGroup
	aheadMu  sync.Mutex
	aheadOff bool // set by Close: no new read-ahead
	bufs     sync.Pool

	// Purges of unlinked inodes wait up to purgeWait to go in one store
	// transaction (purgeLater).
	purgeMu  sync.Mutex
	purges   []peerdrive.Ino
	purgeRun sync.Mutex // held while a batch runs
}

// New returns the FUSE view of t.
func New(t *tree.Tree, db *store.DB, o Options) *FS {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.FlushAfter == 0 {
		o.FlushAfter = 5 * time.Second
	}
	n := runtime.GOMAXPROCS(0)
	f := &FS{
		tree: t, db: db, opts: o, log: o.Log,
		files:    map[peerdrive.Ino]*fileState{},
		unlinked: map[peerdrive.Ino]bool{},
		jobs:     make(chan sealJob, n),
		small:    make(chan sealJob, maxBatch),
		urge:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		ahead:    make(chan struct{}, max(2, n)),
		pushing:  make(chan struct{}, 2),
		bufs:     sync.Pool{New: func() any { b := make([]byte, peerdrive.ChunkSize); return &b }},
	}
	for range n {
		f.workers.Add(1)
		go f.sealer()
	}
	f.workers.Add(1)
	go f.gatherer()
	f.workers.Add(1)
	go f.flusher()
	return f
}

// PurgeOrphans deletes files that were unlinked while open when the last
// session ended. One that cannot be purged is left for the next mount; the
// others are purged anyway, and the error names each that was left.
func (f *FS) PurgeOrphans(ctx context.Context) error {
	orphans, err := f.tree.Orphans(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ino := range orphans {
		if err := f.tree.Purge(ctx, ino); err != nil {
			errs = append(errs, fmt.Errorf("purge orphan %d: %w", ino, err))
		}
	}
	return errors.Join(errs...)
}

// Root returns the root node for mounting.
func (f *FS) Root() gofs.InodeEmbedder { return &node{fsys: f} }

// MountOptions returns go-fuse options tuned for the drive.
func (f *FS) MountOptions() *gofs.Options {
	sec := 10 * time.Second
	mo := fuse.MountOptions{
		FsName:        "peerdrive",
		Name:          "peerdrive",
		DirectMount:   true,
		AllowOther:    f.opts.AllowOther,
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		MaxBackground: 64,
		EnableAcl:     true,
		Options:       []string{"default_permissions"},
		// Encrypted data cannot be handed to the kernel as a backing file.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		// The kernel leaves the umask to us (see umaskFS): a default ACL
		// replaces it.
		ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_DONT_MASK | fuse.CAP_HANDLE_KILLPRIV_V2,
	}
	if f.opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	return &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: uint64(peerdrive.RootIno), Gen: 1},
	}
}

// Mount mounts the drive on dir; the mount is live when it returns.
func (f *FS) Mount(dir string) (*fuse.Server, error) {
	opts := f.MountOptions()
	raw := &umaskFS{RawFileSystem: gofs.NewNodeFS(f.Root(), opts), fsys: f}
	srv, err := fuse.NewServer(raw, dir, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if err := setReadAhead(dir, kernelReadAheadKB); err != nil {
		f.log.Debug("kernel read-ahead left as it was", "err", err)
	}
	return srv, nil
}

// kernelReadAheadKB is the kernel's read-ahead window on the mount. The
// kernel starts a FUSE mount with its default of 128 KiB whatever
// MaxReadAhead says, so a sequential reader is served in 128 KiB requests;
// a window of one chunk makes them 1 MiB requests (MaxWrite bounds them).
// Wider windows send several at once, whose loads then compete for the
// disk and the cores with fs's own read-ahead: measured slower here.
const kernelReadAheadKB = 1024

// setReadAhead sets the read-ahead of the mount on dir through its
// backing device's sysfs entry. Only root may; others keep the default.
func setReadAhead(dir string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("read-ahead: %w", err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0); err != nil {
		return fmt.Errorf("read-ahead: %w", err)
	}
	return nil
}

// umaskFS hands the nodes what go-fuse's node API leaves out of a request:
// the umask of the requests that make nodes (with CAP_DONT_MASK the kernel
// leaves it to the filesystem, which applies it unless the directory has a
// default ACL) and a write's flag to clear set-ID bits (killPrivs). They are
// found by the request's cancel channel, which is the Done channel of the
// context the node gets.
type umaskFS struct {
	fuse.RawFileSystem
	fsys *FS
}

// Write and Writev note a write that must clear set-ID bits (see
// killPrivs) and a write-back of the page cache (see FS.write): the node
// API does not carry the write's flags.
func (u *umaskFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer u.fsys.withWriteFlags(cancel, in)()
	return u.RawFileSystem.Write(cancel, in, data)
}

func (u *umaskFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer u.fsys.withWriteFlags(cancel, in)()
	return u.RawFileSystem.Writev(cancel, in, data)
}

func (f *FS) withWriteFlags(c <-chan struct{}, in *fuse.WriteIn) func() {
	r := reqInfo{
		kill:      in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0,
		writeBack: in.WriteFlags&fuse.WRITE_CACHE != 0,
	}
	if r == (reqInfo{}) {
		return func() {}
	}
	return f.withReq(c, r)
}

func (u *umaskFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer u.fsys.withUmask(cancel, in.Umask)()
	return u.RawFileSystem.Create(cancel, in, name, out)
}

func (u *umaskFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	defer u.fsys.withUmask(cancel, in.Umask)()
	return u.RawFileSystem.Tmpfile(cancel, in, out)
}

func (u *umaskFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer u.fsys.withUmask(cancel, in.Umask)()
	return u.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (u *umaskFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer u.fsys.withUmask(cancel, in.Umask)()
	return u.RawFileSystem.Mknod(cancel, in, name, out)
}

// reqInfo is what umaskFS notes of a request.
type reqInfo struct {
	umask     uint32 // of a request that makes a node
	kill      bool   // a write that must clear set-ID bits
	writeBack bool   // a write of dirty pages by the kernel (FUSE_WRITE_CACHE)
}

// withReq records r for the request whose cancel channel is c, until the
// returned function is called.
func (f *FS) withReq(c <-chan struct{}, r reqInfo) func() {
	f.reqs.Store(c, r)
	return func() { f.reqs.Delete(c) }
}

func (f *FS) withUmask(c <-chan struct{}, umask uint32) func() {
	return f.withReq(c, reqInfo{umask: umask})
}

// req returns what umaskFS noted of the request of ctx: nothing for a
// request that did not come through it (the kernel applied the umask).
func (f *FS) req(ctx context.Context) reqInfo {
	if c := ctx.Done(); c != nil {
		if v, ok := f.reqs.Load(c); ok {
			return v.(reqInfo)
		}
	}
	return reqInfo{}
}

// umask returns the umask of the request of ctx.
func (f *FS) umask(ctx context.Context) uint32 { return f.req(ctx).umask }

// Close seals every dirty buffer, writes all metadata durably and stops the
// background work. Call it after the FUSE server has stopped.
func (f *FS) Close(ctx context.Context) error {
	f.aheadMu.Lock()
	f.aheadOff = true
	f.aheadMu.Unlock()
	f.aheadWG.Wait() // read-ahead uses the store, which closes after us
	f.dropUnlinked()
	err := f.FlushAll(ctx)
	f.stopOnce.Do(func() { close(f.stop); close(f.jobs); close(f.small) })
	f.workers.Wait()
	// The kernel is gone: it may not have sent the last releases and
	// forgets. Forget open files and purge what was unlinked.
	f.mu.Lock()
	unlinked := f.unlinked
	f.unlinked = map[peerdrive.Ino]bool{}
	for ino, st := range f.files {
		st.mu.Lock()
		if len(st.dirty) == 0 && len(st.sealing) == 0 {
			delete(f.files, ino)
		}
		st.mu.Unlock()
	}
	f.mu.Unlock()
	for ino := range unlinked {
		f.purgeLater(ino)
	}
	f.runPurges()
	if serr := f.tree.Sync(ctx); err == nil {
		err = serr
	}
	return err
}

// dropUnlinked frees the unwritten data of unlinked files, which Close
// purges: with the kernel gone nobody can read it, and a full disk must not
// fail the unmount for it.
func (f *FS) dropUnlinked() {
	for _, st := range f.fileStates(true) {
		st.mu.Lock()
		f.waitSealed(st)
		for idx, b := range st.dirty {
			delete(st.dirty, idx)
			f.freeBuf(b)
		}
		st.err = nil
		st.mu.Unlock()
	}
}

// settle waits until every chunk handed to the sealers is committed.
func (f *FS) settle() {
	for _, st := range f.fileStates(false) {
		st.mu.Lock()
		f.waitSealed(st)
		st.mu.Unlock()
	}
}

// fileStates returns the states of the files with data in memory; only
// those of unlinked files if unlinked is set.
func (f *FS) fileStates(unlinked bool) []*fileState {
	f.mu.Lock()
	defer f.mu.Unlock()
	states := make([]*fileState, 0, len(f.files))
	for ino, st := range f.files {
		if _, gone := f.unlinked[ino]; gone || !unlinked {
			states = append(states, st)
		}
	}
	return states
}

// FlushAll seals the dirty data of every open file into the store, and
// runs the purges of unlinked files that wait to share a transaction
// (purgeLater): a snapshot taken next must not keep their data.
func (f *FS) FlushAll(ctx context.Context) error {
	var first error
	for _, st := range f.fileStates(false) {
		if err := f.flushFile(ctx, st); err != nil && first == nil {
			first = err
		}
	}
	f.runPurges()
	return first
}

// flusher seals data that stayed dirty longer than FlushAfter, and makes the
// store durable about as often as ext4 commits its journal.
func (f *FS) flusher() {
	defer f.workers.Done()
	t := time.NewTicker(f.opts.FlushAfter / 2)
	defer t.Stop()
	ctx := context.Background()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		f.mu.Lock()
		var old []*fileState
		for _, st := range f.files {
			st.mu.Lock()
			if len(st.dirty) > 0 && time.Since(st.dirtySince) > f.opts.FlushAfter {
				old = append(old, st)
			}
			st.mu.Unlock()
		}
		f.mu.Unlock()
		for _, st := range old {
			if err := f.flushFile(ctx, st); err != nil {
				f.log.Warn("background flush failed", "ino", st.ino, "err", err)
			}
		}
		if err := f.tree.Sync(ctx); err != nil {
			f.log.Warn("background sync failed", "err", err)
		}
	}
}

// statfs fills out with the drive's size: the quota (or the home disk),
// what is used, and what is left.
func (f *FS) statfs(out *fuse.StatfsOut) syscall.Errno {
	const bsize = 4096
	f.settle() // closed files' last chunks count as used
	total, avail, err := f.db.Space()
	if err != nil {
		return toErrno(f.log, "statfs", err)
	}
	st := f.tree.Stats()
	size := total
	if f.opts.Quota > 0 {
		size = f.opts.Quota
	}
	free := uint64(0)
	if size > st.Used {
		free = size - st.Used
	}
	diskFree := uint64(0)
	if avail > store.Reserve {
		diskFree = avail - store.Reserve
	}
	free = min(free, diskFree)
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = size / bsize
	out.Bfree = free / bsize
	out.Bavail = free / bsize
	out.Files = st.Inodes + 1<<32
	out.Ffree = 1 << 32
	out.NameLen = maxName
	return 0
}

const maxName = 255
