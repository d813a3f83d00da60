// Package store keeps PeerDrive's local state in badger: opaque sealed chunks
// addressed by their hash, and the sealed metadata records of the file tree.
// It never sees plaintext and knows nothing of FUSE.
package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"

	"github.com/peerdrive/peerdrive"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrNoSpace  = errors.New("no space left on the home's disk")
	ErrCorrupt  = errors.New("stored data is corrupt")
	ErrLocked   = errors.New("store is in use by another process")
)

// Badger tuning: see docs/format.md ("Local store") for why.
const (
	valueThreshold = 64 << 10 // large xattrs go to the value log; chunks live in packs
	vlogFileSize   = 16 << 20 // badger maps twice this, sparsely; it bounds the free-space reserve
	memTableSize   = 16 << 20
	numMemtables   = 2
	// Reserve is the free space the home's disk must keep: badger writes
	// through mmap'd, sparsely allocated files (value logs of 2×vlogFileSize,
	// memtable logs of 2×memTableSize each, tables during compaction), and a
	// write into a hole on a full disk is a SIGBUS, not an error. Refusing
	// writes early turns a full disk into ENOSPC for the writer.
	Reserve = 2*vlogFileSize + 2*numMemtables*memTableSize + 64<<20
)

// DB is an open store.
type DB struct {
	bdb   *badger.DB
	packs *packs
	lock  *os.File
	dir   string
	stop  chan struct{}
	wg    sync.WaitGroup

	reserve int64 // free space kept on the disk

	spaceMu    sync.Mutex // free-space estimate for CheckSpace
	spaceAt    time.Time
	spaceAvail int64

	stage staging // staged writes (stage.go)

	// commits counts committed transactions; synced is the count the last
	// Sync made durable. A Sync with nothing committed since is free: an
	// fsync of a directory right after one of a file in it, or of a file
	// that wrote nothing, costs no disk flush.
	commits, synced atomic.Uint64

	memMu     sync.Mutex // syncLogs
	memNewest int        // the newest memtable log syncLogs saw (0: none yet)
	memFile   *os.File   // memNewest's log, open for syncs
	// vlogWrites: something went to badger's value log since the last
	// Sync, which then syncs through badger (set on open: a killed
	// process may have left such writes in the page cache).
	vlogWrites atomic.Bool

	smu             sync.Mutex // SyncShared
	scond           *sync.Cond
	sstarted, sdone uint64
	srunning        bool
	serr            error
}

// Options for Open.
type Options struct {
	ReadOnly bool
	// Reserve overrides the free-space reserve (0: Reserve).
	Reserve int64
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, o Options) (*DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// Our own lock, taken before badger's, so that a second process gets a
	// clean ErrLocked. The kernel drops it when the process dies.
	lock, err := os.OpenFile(filepath.Join(dir, "peerdrive.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(vlogFileSize).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(12).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(16 << 20).
		WithCompression(options.None). // everything we store is ciphertext
		WithNumCompactors(2).
		WithNumGoroutines(4).
		WithMetricsEnabled(false).
		WithDetectConflicts(false). // writers are serialized by the tree
		WithCompactL0OnClose(true).
		WithReadOnly(o.ReadOnly).
		WithLogger(badgerLogger{})
	bdb, err := badger.Open(bo)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	pk, err := openPacks(dir)
	if err != nil {
		bdb.Close()
		lock.Close()
		return nil, err
	}
	db := &DB{bdb: bdb, packs: pk, lock: lock, dir: dir, stop: make(chan struct{}), reserve: Reserve}
	db.commits.Store(1) // the first Sync syncs: what a killed process left in the page cache too
	db.vlogWrites.Store(true)
	if o.Reserve != 0 {
		db.reserve = o.Reserve
	}
	if !o.ReadOnly {
		db.wg.Add(1)
		go db.gcLoop()
	}
	return db, nil
}

// Close flushes and closes the store.
func (db *DB) Close() error {
	close(db.stop)
	db.wg.Wait()
	err := errors.Join(db.CommitStaged(), db.packs.sync(), db.bdb.Close(), db.packs.close())
	db.memMu.Lock()
	if db.memFile != nil {
		db.memFile.Close()
	}
	db.memMu.Unlock()
	db.lock.Close()
	if err != nil {
		return fmt.Errorf("close store %s: %w", db.dir, err)
	}
	return nil
}

// Sync makes every write so far durable on disk: the packs first, so that
// no durable record points at bytes that are not.
func (db *DB) Sync() error {
	if err := db.CommitStaged(); err != nil {
		return err
	}
	n := db.commits.Load()
	if n == db.synced.Load() {
		return nil
	}
	if syncHook != nil {
		syncHook()
	}
	if err := db.packs.sync(); err != nil {
		return err
	}
	// badger's DB.Sync msyncs the value log too, a second disk flush even
	// when nothing went there (values of valueThreshold or more, and
	// value-log GC, write it): the memtable logs alone are synced then.
	full := db.vlogWrites.Swap(false)
	if full {
		if badgerSyncHook != nil {
			badgerSyncHook()
		}
		if err := db.bdb.Sync(); err != nil {
			db.vlogWrites.Store(true)
			return fmt.Errorf("sync store %s: %w", db.dir, err)
		}
	}
	if err := db.syncLogs(!full); err != nil {
		if !full {
			db.vlogWrites.Store(true) // the next Sync goes through badger
		}
		return fmt.Errorf("sync store %s: %w", db.dir, err)
	}
	for s := db.synced.Load(); s < n && !db.synced.CompareAndSwap(s, n); s = db.synced.Load() {
	}
	return nil
}

// syncLogs fdatasyncs the logs of badger's memtables but the newest, and
// the newest too with current. badger's DB.Sync syncs the current
// memtable's log (and the value log) only; when a memtable fills (every
// memTableSize of records), it is written to a table in the background,
// msynced, and its log deleted, and until then its last commits are only
// in the page cache: a commit made just before the switch, and then
// synced, was not durable against a power cut for as long as that took. A
// log that is gone meanwhile is in a table. The store's directory is read
// only when the log after the newest one seen exists (badger numbers them
// in order): otherwise it costs a stat.
func (db *DB) syncLogs(current bool) error {
	db.memMu.Lock()
	defer db.memMu.Unlock()
	if db.memNewest > 0 {
		_, err := os.Stat(db.memLog(db.memNewest + 1))
		if errors.Is(err, fs.ErrNotExist) {
			if current {
				return db.syncCurrentLog()
			}
			return nil
		}
	}
	d, err := os.Open(db.dir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	var logs []int
	for _, n := range names {
		var fid int
		if strings.HasSuffix(n, ".mem") {
			if _, err := fmt.Sscanf(n, "%d.mem", &fid); err == nil {
				logs = append(logs, fid)
			}
		}
	}
	if len(logs) == 0 {
		if current { // no log where badger keeps them: let badger sync
			return db.bdb.Sync()
		}
		return nil
	}
	slices.Sort(logs)
	for _, fid := range logs[:len(logs)-1] {
		if memSyncHook != nil {
			memSyncHook(fid, false)
		}
		f, err := os.Open(db.memLog(fid))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = unix.Fdatasync(int(f.Fd()))
		f.Close()
		if err != nil {
			return fmt.Errorf("memtable log %d: %w", fid, err)
		}
	}
	if newest := logs[len(logs)-1]; newest != db.memNewest {
		if db.memFile != nil {
			db.memFile.Close()
			db.memFile = nil
		}
		db.memNewest = newest
	}
	if current {
		return db.syncCurrentLog()
	}
	return nil
}

// syncCurrentLog fdatasyncs the log of memtable db.memNewest, the current
// one, keeping it open. db.memMu is held.
func (db *DB) syncCurrentLog() error {
	if memSyncHook != nil {
		memSyncHook(db.memNewest, true)
	}
	if db.memFile == nil {
		f, err := os.Open(db.memLog(db.memNewest))
		if err != nil {
			return err
		}
		db.memFile = f
	}
	if err := unix.Fdatasync(int(db.memFile.Fd())); err != nil {
		return fmt.Errorf("memtable log %d: %w", db.memNewest, err)
	}
	return nil
}

// memLog is the path of badger's log of memtable fid.
func (db *DB) memLog(fid int) string { return filepath.Join(db.dir, fmt.Sprintf("%05d.mem", fid)) }

// Test hooks: memSyncHook is called with the number of each memtable log
// syncLogs syncs (current: the newest, synced for want of badger's Sync),
// badgerSyncHook before Sync syncs through badger.
var (
	memSyncHook    func(fid int, current bool)
	badgerSyncHook func()
)

// SyncShared is Sync for many concurrent callers: each returns once a sync
// that began after its call has finished, and callers that arrive while one
// runs share the next one (group commit).
func (db *DB) SyncShared() error {
	db.smu.Lock()
	defer db.smu.Unlock()
	if db.scond == nil {
		db.scond = sync.NewCond(&db.smu)
	}
	want := db.sstarted + 1
	for db.sdone < want {
		if db.srunning {
			db.scond.Wait()
			continue
		}
		db.srunning = true
		db.sstarted++
		gen := db.sstarted
		db.smu.Unlock()
		err := db.Sync()
		db.smu.Lock()
		db.srunning = false
		db.sdone, db.serr = gen, err
		db.scond.Broadcast()
	}
	return db.serr
}

// gcLoop reclaims value-log space left by deleted chunks.
func (db *DB) gcLoop() {
	defer db.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
			for db.bdb.RunValueLogGC(0.5) == nil {
				// It moved values within the value log: the next
				// Sync goes through badger.
				db.vlogWrites.Store(true)
				db.commits.Add(1)
				select {
				case <-db.stop:
					return
				default:
				}
			}
		}
	}
}

// Space reports the home disk's total and available bytes.
func (db *DB) Space() (total, avail uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(db.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", db.dir, err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
}

// CheckSpace returns ErrNoSpace when writing need more bytes would eat into
// the reserve.
func (db *DB) CheckSpace(need int64) error {
	avail, err := db.available(need)
	if err != nil {
		return err
	}
	if avail-need < db.reserve {
		return fmt.Errorf("%s: %d bytes free, %d kept in reserve: %w", db.dir, avail, db.reserve, ErrNoSpace)
	}
	return nil
}

func (db *DB) checkFloor() error {
	avail, err := db.available(0)
	if err != nil {
		return err
	}
	if avail < db.reserve/2 {
		return fmt.Errorf("%s: %d bytes free: %w", db.dir, avail, ErrNoSpace)
	}
	return nil
}

// Far from the reserve, the free space is asked of the kernel only every
// spaceFresh, and what is claimed meanwhile is taken off the last answer:
// a statfs per write costs more than a small file's whole write.
const (
	spaceFresh  = 200 * time.Millisecond
	spaceMargin = 256 << 20
)

// available returns the free bytes of the home disk, claiming need of
// them until the next statfs.
func (db *DB) available(need int64) (int64, error) {
	db.spaceMu.Lock()
	defer db.spaceMu.Unlock()
	if time.Since(db.spaceAt) > spaceFresh || db.spaceAvail-need-db.reserve < spaceMargin {
		_, avail, err := db.Space()
		if err != nil {
			return 0, err
		}
		db.spaceAt, db.spaceAvail = time.Now(), int64(avail)
	}
	avail := db.spaceAvail
	db.spaceAvail -= max(need, 0)
	return avail, nil
}

// Txn is a read or read-write transaction over byte keys.
type Txn struct {
	t       *badger.Txn
	db      *DB
	punches []chunkLoc // chunk bytes to free once the transaction commits
	wrote   bool       // a Set or Delete went to badger
	large   bool       // a value went to badger's value log (valueThreshold)

	view    *stagedSet        // staged writes this transaction sees (View, Stage)
	capture map[string]staged // a Stage's own writes
}

// syncHook, if set (by tests), runs when Sync goes to the disk.
var syncHook func()

// viewHook, if set (by tests), runs in View between taking the snapshot
// and the staged writes.
var viewHook func()

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(*Txn) error) error {
	if db.bdb.IsClosed() {
		return badger.ErrDBClosed
	}
	var t *badger.Txn
	var view *stagedSet
	if db.stage.set.Load() == nil {
		// Nothing staged: anything staged from now on happens after this
		// view, and anything committed before its snapshot is in it.
		t = db.bdb.NewTransaction(false)
	} else {
		// The snapshot and the staged writes are taken together, between
		// two commits of staged writes: a write is in one or the other.
		db.stage.commit.RLock()
		t = db.bdb.NewTransaction(false)
		if viewHook != nil {
			viewHook()
		}
		view = db.stage.set.Load()
		db.stage.commit.RUnlock()
	}
	defer t.Discard()
	return fn(&Txn{t: t, db: db, view: view})
}

// Update runs fn in a read-write transaction and commits it atomically.
// Writes are durable after the next Sync. need is the number of bytes the
// transaction is about to add; it is refused with ErrNoSpace if the disk is
// too full for them. Transactions that add nothing (need 0: deletes,
// renames) may dip into half of the reserve, so that a full drive can still
// be cleaned up.
func (db *DB) Update(need int64, fn func(*Txn) error) error {
	if err := db.checkNeed(need); err != nil {
		return err
	}
	return db.update(nil, fn)
}

// update runs the transaction of Update; staged, if not nil, is written
// into it first and leaves the stage when it commits.
func (db *DB) update(staged *stagedSet, fn func(*Txn) error) error {
	if db.bdb.IsClosed() {
		return badger.ErrDBClosed
	}
	t := db.bdb.NewTransaction(true)
	defer t.Discard()
	tx := &Txn{db: db, t: t}
	var err error
	tx.large, err = staged.writeTo(t)
	if err == nil && fn != nil {
		err = fn(tx)
	}
	if err == nil {
		if staged == nil {
			err = t.Commit()
		} else {
			db.stage.commit.Lock()
			if err = t.Commit(); err == nil {
				db.stage.set.Store(nil)
			}
			db.stage.commit.Unlock()
		}
	}
	if err == nil && tx.large {
		// Before the count: a Sync that sees this commit sees the mark.
		db.vlogWrites.Store(true)
	}
	if err == nil && (tx.wrote || staged != nil) {
		db.commits.Add(1)
	}
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w: %v", ErrNoSpace, err)
	}
	if err == nil && len(tx.punches) > 0 {
		db.packs.punch(tx.punches)
	}
	return err
}

// checkNeed refuses a transaction that adds need bytes if the disk is too
// full for them (see Update).
func (db *DB) checkNeed(need int64) error {
	if need > 0 {
		return db.CheckSpace(need)
	}
	return db.checkFloor()
}

// Get returns a copy of the value under key, or ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) {
	if v, del, ok := t.stagedGet(key); ok {
		if del {
			return nil, ErrNotFound
		}
		return slices.Clone(v), nil
	}
	it, err := t.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrapRead(key, err)
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return nil, wrapRead(key, err)
	}
	return v, nil
}

// Has reports whether key exists.
func (t *Txn) Has(key []byte) (bool, error) {
	if _, del, ok := t.stagedGet(key); ok {
		return !del, nil
	}
	_, err := t.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, wrapRead(key, err)
	}
	return true, nil
}

func wrapRead(key []byte, err error) error {
	// Badger reports checksum and decode failures of the value log as plain
	// errors; anything but "not found" on a read is a damaged store.
	return fmt.Errorf("read key %x: %w: %v", key[:min(len(key), 9)], ErrCorrupt, err)
}

// Set stores value under key. The caller must not change value after.
func (t *Txn) Set(key, value []byte) error {
	if t.capture != nil {
		t.capture[string(key)] = staged{v: value}
		return nil
	}
	t.wrote = true
	t.large = t.large || len(value) >= valueThreshold
	return t.t.Set(key, value)
}

// Delete removes key.
func (t *Txn) Delete(key []byte) error {
	if t.capture != nil {
		t.capture[string(key)] = staged{del: true}
		return nil
	}
	t.wrote = true
	return t.t.Delete(key)
}

// Iterate calls fn for every key with the given prefix, in key order, from
// start (inclusive; nil means the prefix) on, until fn returns false or an
// error. key and value are only valid during the call.
func (t *Txn) Iterate(prefix, start []byte, values bool, fn func(key, value []byte) (bool, error)) error {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.PrefetchValues = false
	it := t.t.NewIterator(o)
	defer it.Close()
	if start == nil {
		start = prefix
	}
	return t.iterateMerged(it, prefix, start, t.stagedRange(prefix, start), values, fn)
}

// IterateSizes calls fn with every key with the given prefix and the size
// of its value, without reading values. key is only valid during the call.
// It does not see staged writes: it is for blobs, which are never staged.
func (t *Txn) IterateSizes(prefix []byte, fn func(key []byte, size int64) (bool, error)) error {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.PrefetchValues = false
	it := t.t.NewIterator(o)
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		more, err := fn(it.Item().Key(), it.Item().ValueSize())
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// chunkKey is where a sealed chunk lives: 'C' || id.
func chunkKey(id peerdrive.ChunkID) []byte {
	k := make([]byte, 1+len(id))
	k[0] = 'C'
	copy(k[1:], id[:])
	return k
}

// PutBlob stores large opaque bytes under key: the bytes go to a pack file
// at once, their location into the transaction. If the transaction does not
// commit, the bytes are left unreferenced.
func (t *Txn) PutBlob(key, data []byte) error { return t.putBlob(key, data, false, false) }

// putBlob is PutBlob; with check, the location records the bytes' tail
// check (tailCheck), which every read then compares (appendBlob); with
// direct, the bytes skip the page cache if they can (packs.append).
func (t *Txn) putBlob(key, data []byte, check, direct bool) error {
	if t.capture != nil {
		return ErrNotStageable
	}
	loc, err := t.db.packs.append(data, direct)
	if err != nil {
		return err
	}
	if check {
		loc.check, loc.hasCheck = tailCheck(key, data)
	}
	return t.Set(key, loc.encode())
}

// DeleteBlob removes what PutBlob stored; the bytes are freed once the
// transaction commits.
func (t *Txn) DeleteBlob(key []byte) error {
	if t.capture != nil {
		return ErrNotStageable
	}
	v, err := t.Get(key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if loc, err := decodeLoc(v); err == nil {
		t.punches = append(t.punches, loc)
	}
	return t.Delete(key)
}

// GetBlob returns what PutBlob stored under key, or ErrNotFound.
func (t *Txn) GetBlob(key []byte) ([]byte, error) {
	b, _, err := t.appendBlob(nil, key, false)
	return b, err
}

// appendBlob appends the blob stored under key to dst, read exactly (see
// packs.exactFile; for blobs read in no particular order) or through the
// page cache, and returns the extended slice, or dst and an error. Bytes
// that fail their location's tail check are ErrCorrupt: they are not those
// stored under key. checked reports that the location had a tail check,
// which the bytes passed.
func (t *Txn) appendBlob(dst, key []byte, exact bool) (b []byte, checked bool, err error) {
	loc, err := t.blobLoc(key)
	if err != nil {
		return dst, false, err
	}
	if b, err = t.db.packs.readFrom(dst, loc, exact); err != nil || !loc.hasCheck {
		return b, false, err
	}
	if c, _ := tailCheck(key, b[len(dst):]); c != loc.check {
		return dst, false, fmt.Errorf("pack %d at %d: the %d bytes there are not those stored under key %x: %w", loc.pack, loc.off, loc.len, key, ErrCorrupt)
	}
	return b, true, nil
}

// blobLoc returns where the blob PutBlob stored under key lies.
func (t *Txn) blobLoc(key []byte) (chunkLoc, error) {
	v, err := t.Get(key)
	if err != nil {
		return chunkLoc{}, err
	}
	return decodeLoc(v)
}

// PrefetchChunks starts reading the sealed bytes of the chunks ids from
// the disk in the background, so that a GetChunk of them soon after finds
// them in memory: a sequential reader's next chunks are read while it
// decrypts this one. Chunks not stored are skipped.
func (db *DB) PrefetchChunks(ids []peerdrive.ChunkID) {
	var locs []chunkLoc
	_ = db.View(func(t *Txn) error {
		for _, id := range ids {
			if loc, err := t.blobLoc(chunkKey(id)); err == nil {
				locs = append(locs, loc)
			}
		}
		return nil
	})
	for _, l := range locs {
		db.packs.willNeed(l)
	}
}

// PutChunk stores a sealed chunk, which the caller checked against id
// (its hash, or an authenticated record naming it). Its location records
// the tail check of its last 16 bytes, an AEAD envelope's tag, under id: a
// read that passes it is reading the envelope stored here (AppendChunk).
func (t *Txn) PutChunk(id peerdrive.ChunkID, sealed []byte) error {
	return t.putBlob(chunkKey(id), sealed, true, false)
}

// DeleteChunk removes a sealed chunk.
func (t *Txn) DeleteChunk(id peerdrive.ChunkID) error { return t.DeleteBlob(chunkKey(id)) }

// GetChunk returns the sealed bytes of chunk id, or ErrNotFound.
func (t *Txn) GetChunk(id peerdrive.ChunkID) ([]byte, error) { return t.GetBlob(chunkKey(id)) }

// AppendChunk appends the sealed bytes of chunk id to dst and returns the
// extended slice, or ErrNotFound: read straight into dst's spare capacity,
// without a buffer of its own (the uploader packs segments this way).
//
// A location written by format 3 (PutChunk) records a check of id and of
// the chunk's last 16 bytes: bytes read that fail it are ErrCorrupt, and
// tailed reports that they passed. Then, if the bytes also open as an AEAD
// envelope whose tag those 16 bytes are, they are the envelope PutChunk
// stored under id (two envelopes that open under one key and share a tag
// are one envelope), and need not be hashed to be known to be id's. Older
// locations (tailed false) give no such assurance.
func (t *Txn) AppendChunk(dst []byte, id peerdrive.ChunkID) (b []byte, tailed bool, err error) {
	return t.appendBlob(dst, chunkKey(id), false)
}

// Loc is where a chunk's sealed bytes lie; comparable.
type Loc struct{ l chunkLoc }

// Size is the length of the sealed bytes at l.
func (l Loc) Size() int64 { return int64(l.l.len) }

// ChunkLoc returns where chunk id's sealed bytes lie, or ErrNotFound. A
// reader of part of a chunk (ReadAt) asks again after reading: a chunk
// deleted meanwhile may have had its bytes freed under the read, which a
// whole read would catch by its tail check (or hash) and AEAD, and a
// partial one cannot.
func (t *Txn) ChunkLoc(id peerdrive.ChunkID) (Loc, error) {
	loc, err := t.blobLoc(chunkKey(id))
	return Loc{loc}, err
}

// ReadAt appends bytes [off, off+n) of the sealed bytes at l to dst and
// returns the extended slice. A range past their end is ErrCorrupt.
func (t *Txn) ReadAt(dst []byte, l Loc, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > l.Size() {
		return dst, fmt.Errorf("bytes [%d, %d) of %d: %w", off, off+n, l.Size(), ErrCorrupt)
	}
	part := chunkLoc{pack: l.l.pack, off: l.l.off + uint64(off), len: uint32(n)}
	return t.db.packs.readFrom(dst, part, false)
}

// HasChunk reports whether chunk id is stored.
func (t *Txn) HasChunk(id peerdrive.ChunkID) (bool, error) { return t.Has(chunkKey(id)) }

// IterateChunks calls fn with the ID and sealed size of every stored chunk.
func (t *Txn) IterateChunks(fn func(id peerdrive.ChunkID, size int64) (bool, error)) error {
	return t.Iterate([]byte{'C'}, nil, true, func(k, v []byte) (bool, error) {
		loc, err := decodeLoc(v)
		if err != nil {
			return false, err
		}
		var id peerdrive.ChunkID
		copy(id[:], k[1:])
		return fn(id, int64(loc.len))
	})
}

// Blobs returns the DB's chunks as a Blobs store.
func (db *DB) Blobs() Blobs { return dbBlobs{db} }

type dbBlobs struct{ db *DB }

var _ Blobs = dbBlobs{}

func (b dbBlobs) Put(ctx context.Context, id peerdrive.ChunkID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(int64(len(data)), func(t *Txn) error { return t.PutChunk(id, data) })
}

func (b dbBlobs) Get(ctx context.Context, id peerdrive.ChunkID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var v []byte
	err := b.db.View(func(t *Txn) error {
		var err error
		v, err = t.GetChunk(id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), err)
	}
	return v, nil
}

func (b dbBlobs) Has(ctx context.Context, id peerdrive.ChunkID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var ok bool
	err := b.db.View(func(t *Txn) error {
		var err error
		ok, err = t.HasChunk(id)
		return err
	})
	return ok, err
}

func (b dbBlobs) Delete(ctx context.Context, id peerdrive.ChunkID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(0, func(t *Txn) error { return t.DeleteChunk(id) })
}

// badgerLogger forwards badger's warnings and errors to slog; its chatty
// info and debug lines are dropped.
type badgerLogger struct{}

func (badgerLogger) Errorf(f string, a ...any) {
	slog.Error("badger error", "msg", fmt.Sprintf(f, a...))
}
func (badgerLogger) Warningf(f string, a ...any) {
	slog.Warn("badger warning", "msg", fmt.Sprintf(f, a...))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
