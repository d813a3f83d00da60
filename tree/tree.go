// Package tree is the drive's file tree: inodes, directory entries, chunk
// maps and extended attributes, sealed with the drive's keys and kept in the
// local store in atomic batches. It is the single authority on metadata; the
// FUSE layer above it holds no metadata of its own.
package tree

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// Sentinel errors; the FUSE layer maps each to one errno.
var (
	ErrNotFound = errors.New("no such entry")
	ErrExist    = errors.New("entry exists")
	ErrNotEmpty = errors.New("directory not empty")
	ErrNotDir   = errors.New("not a directory")
	ErrIsDir    = errors.New("is a directory")
	ErrNoData   = errors.New("no such attribute")
	ErrInvalid  = errors.New("invalid argument")
	ErrWrongKey = errors.New("the drive key does not open this store")
	ErrVersion  = errors.New("store has an unsupported format version")
	// ErrCorrupt wraps store.ErrCorrupt: a record or chunk failed to verify.
	ErrCorrupt = store.ErrCorrupt
	// ErrNoSpace wraps store.ErrNoSpace.
	ErrNoSpace = store.ErrNoSpace
)

// Key tags of the store's keyspace (docs/format.md, "Metadata records").
const (
	tagFormat  = 'V'
	tagCheck   = 'K'
	tagInode   = 'I'
	tagDirent  = 'D'
	tagMap     = 'M'
	tagXattr   = 'X'
	tagInfo    = 'R'
	tagDedup   = 'H'
	tagOrphan  = 'O'
	tagNextIno = 'N'
	tagStats   = 'S'
	tagPatch   = 'p'
	// Shared with replica, which owns their meaning (docs/format.md §12).
	tagQueue    = 'U'
	tagLocation = 'L'
)

const inoBatch = 1024 // inode numbers reserved per write of the counter

// Stats are drive-wide figures.
type Stats struct {
	Used   uint64 `cbor:"1,keyasint"` // plaintext bytes of distinct stored chunks
	Stored uint64 `cbor:"2,keyasint"` // sealed bytes of distinct stored chunks
	Chunks uint64 `cbor:"3,keyasint"`
	Inodes uint64 `cbor:"4,keyasint"`
}

type formatRecord struct {
	Version   int `cbor:"1,keyasint"`
	ChunkSize int `cbor:"2,keyasint"`
}

type entry struct {
	ino   peerdrive.Inode
	dirty bool // changed in memory since last written
	// noXattrs is set on an inode made without extended attributes until
	// one is set: the kernel asks for security.capability before every
	// write, and for the default ACL of the directory on every create.
	noXattrs bool
	// noChunks is set on an inode made in this session until a chunk of it
	// is committed: committing its first chunks needs no look for old ones.
	noChunks bool
}

// Tree is an open file tree. It is safe for concurrent use.
type Tree struct {
	db   *store.DB
	keys *crypto.Keys
	log  *slog.Logger

	mu    sync.RWMutex
	cache map[peerdrive.Ino]*entry
	// dirty holds every cached inode whose entry is dirty, and maybe some
	// that left the cache (Flush drops them): Flush, on every fsync, looks
	// at these and not at the whole cache.
	dirty  map[peerdrive.Ino]struct{}
	next   uint64 // next free inode number
	limit  uint64 // numbers below limit are reserved on disk
	stats  Stats
	chunks *chunkCache
	snap   func(peerdrive.Ino) // inside update: records an inode's value for rollback
	remote Remote
	// Chunk events of the running transaction, told to remote after commit.
	queued  []chunkEvent // chunks stored by the transaction (id, sealed size)
	dropped []chunkEvent
	// staging: a commit of staged writes is due (stageUpdate).
	staging bool
	// patched holds the inodes that may have patch records (every one that
	// got one since the tree opened, when none were left): the others need
	// no look for them when their chunks change.
	patched map[peerdrive.Ino]bool
}

type chunkEvent struct {
	id   peerdrive.ChunkID
	size int64
}

// Options for Open.
type Options struct {
	RootUID, RootGID uint32 // owner of a new drive's root
	Log              *slog.Logger
	ChunkCacheBytes  int // decrypted chunks kept in memory (0: 64 MiB)
	// Remote, if set, replicates chunks: it is told of chunks stored and
	// deleted, and fetches chunks the local store no longer has.
	Remote Remote
	// ReadOnly says nothing will be written through the tree: a store of an
	// older format version is read as it is, not upgraded.
	ReadOnly bool
}

// Remote is where chunks go to and come back from when the local store is
// only a cache (replica.Replica implements it).
type Remote interface {
	// Queued: new chunk id of sealedBytes waits for upload; its queue
	// record was written with it.
	Queued(id peerdrive.ChunkID, sealedBytes int64)
	// Dropped: chunk id's last reference is gone.
	Dropped(id peerdrive.ChunkID, sealedBytes int64)
	// Accessed: chunk id was read from the local store.
	Accessed(id peerdrive.ChunkID)
	// Fetch returns chunk id's sealed bytes from elsewhere.
	Fetch(ctx context.Context, id peerdrive.ChunkID) ([]byte, error)
}

// verifyingRemote is a Remote that can vouch for what it fetches: the bytes
// FetchVerified returns are chunk id's, checked against hashes in the
// drive's own records, and the tree does not hash them again.
type verifyingRemote interface {
	FetchVerified(ctx context.Context, id peerdrive.ChunkID) ([]byte, error)
}

// ErrUnavailable reports a chunk that is neither in the local store nor
// reachable on peers.
var ErrUnavailable = errors.New("chunk unavailable")

// Open opens the tree in db, creating an empty drive if db is empty. It
// fails with ErrWrongKey if keys do not open the store.
func Open(ctx context.Context, db *store.DB, keys *crypto.Keys, o Options) (*Tree, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ChunkCacheBytes == 0 {
		o.ChunkCacheBytes = 64 << 20
	}
	t := &Tree{db: db, keys: keys, log: o.Log, cache: map[peerdrive.Ino]*entry{}, dirty: map[peerdrive.Ino]struct{}{}, patched: map[peerdrive.Ino]bool{}, chunks: newChunkCache(o.ChunkCacheBytes), remote: o.Remote}
	var fresh, upgrade bool
	err := db.View(func(tx *store.Txn) error {
		v, err := tx.Get([]byte{tagFormat})
		if errors.Is(err, store.ErrNotFound) {
			fresh = true
			return nil
		}
		if err != nil {
			return err
		}
		var f formatRecord
		if err := unmarshalPlain(v, &f); err != nil {
			return fmt.Errorf("format record: %w", err)
		}
		if f.Version < peerdrive.OldestFormatVersion || f.Version > peerdrive.FormatVersion || f.ChunkSize != peerdrive.ChunkSize {
			return fmt.Errorf("%w: version %d, chunk size %d", ErrVersion, f.Version, f.ChunkSize)
		}
		upgrade = f.Version < peerdrive.FormatVersion && !o.ReadOnly
		check, err := tx.Get([]byte{tagCheck})
		if err != nil {
			return fmt.Errorf("check record: %w", err)
		}
		if _, err := keys.OpenRecord(nil, []byte{tagCheck}, check); err != nil {
			return ErrWrongKey
		}
		return t.loadCounters(tx)
	})
	if err != nil {
		return nil, err
	}
	if fresh {
		if err := t.format(o); err != nil {
			return nil, err
		}
	}
	if upgrade {
		// The older versions differ only in what this version may write
		// next (docs/format.md §10): the format record says so first, so
		// that older code refuses the store instead of misreading it.
		if err := db.Update(0, putFormat); err != nil {
			return nil, fmt.Errorf("upgrade format: %w", err)
		}
		t.log.Info("store upgraded", "format", peerdrive.FormatVersion)
	}
	return t, nil
}

// putFormat writes the format record of this version.
func putFormat(tx *store.Txn) error {
	f, err := marshalPlain(&formatRecord{Version: peerdrive.FormatVersion, ChunkSize: peerdrive.ChunkSize})
	if err != nil {
		return err
	}
	return tx.Set([]byte{tagFormat}, f)
}

func (t *Tree) format(o Options) error {
	now := time.Now().UnixNano()
	root := peerdrive.Inode{Mode: syscall.S_IFDIR | 0o755, UID: o.RootUID, GID: o.RootGID, Nlink: 2, Size: emptyDirSize,
		Atime: now, Mtime: now, Ctime: now, Btime: now}
	t.next, t.limit = uint64(peerdrive.RootIno)+1, uint64(peerdrive.RootIno)+1
	t.stats.Inodes = 1
	return t.db.Update(0, func(tx *store.Txn) error {
		if err := putFormat(tx); err != nil {
			return err
		}
		if err := tx.Set([]byte{tagCheck}, t.keys.SealRecord(nil, []byte{tagCheck}, []byte("peerdrive"))); err != nil {
			return err
		}
		t.cache[peerdrive.RootIno] = &entry{ino: root}
		if err := t.putRecord(tx, []byte{tagStats}, &t.stats); err != nil {
			return err
		}
		return t.writeInode(tx, peerdrive.RootIno)
	})
}

func (t *Tree) loadCounters(tx *store.Txn) error {
	v, err := tx.Get([]byte{tagNextIno})
	switch {
	case errors.Is(err, store.ErrNotFound):
		t.next = uint64(peerdrive.RootIno) + 1
	case err != nil:
		return err
	case len(v) != 8:
		return fmt.Errorf("inode counter: %w", ErrCorrupt)
	default:
		t.next = binary.BigEndian.Uint64(v)
	}
	t.limit = t.next
	v, err = tx.Get([]byte{tagStats})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return t.openRecordInto([]byte{tagStats}, v, &t.stats)
}

// Stats returns the drive-wide figures.
func (t *Tree) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.stats
}

// --- keys ---

func inoKey(tag byte, ino peerdrive.Ino) []byte {
	k := make([]byte, 9)
	k[0] = tag
	binary.BigEndian.PutUint64(k[1:], uint64(ino))
	return k
}

func (t *Tree) direntKey(dir peerdrive.Ino, name string) []byte {
	h := t.keys.NameHash(uint64(dir), name)
	return append(inoKey(tagDirent, dir), h[:]...)
}

func (t *Tree) xattrKey(ino peerdrive.Ino, name string) []byte {
	h := t.keys.NameHash(uint64(ino), "xattr\x00"+name) // names never hold NUL: no clash with file names
	return append(inoKey(tagXattr, ino), h[:]...)
}

func mapKey(ino peerdrive.Ino, idx int64) []byte {
	k := make([]byte, 17)
	k[0] = tagMap
	binary.BigEndian.PutUint64(k[1:], uint64(ino))
	binary.BigEndian.PutUint64(k[9:], uint64(idx))
	return k
}

// patchKey is where patch seq of chunk idx of ino lives; without seq, the
// prefix of all that chunk's patches.
func patchKey(ino peerdrive.Ino, idx int64, seq ...uint32) []byte {
	k := mapKey(ino, idx)
	k[0] = tagPatch
	for _, n := range seq {
		k = binary.BigEndian.AppendUint32(k, n)
	}
	return k
}

func idKey(tag byte, id [32]byte) []byte { return append([]byte{tag}, id[:]...) }

// --- sealed records ---

func (t *Tree) sealRecord(key []byte, r any) ([]byte, error) {
	b, err := marshalAny(r)
	if err != nil {
		return nil, err
	}
	return t.keys.SealRecord(nil, key, b), nil
}

func (t *Tree) openRecordInto(key, sealed []byte, r any) error {
	b, err := t.keys.OpenRecord(nil, key, sealed)
	if err != nil {
		return fmt.Errorf("record %x: %w: %v", key[:min(len(key), 9)], ErrCorrupt, err)
	}
	if err := unmarshalAny(b, r); err != nil {
		return fmt.Errorf("record %x: %w: %v", key[:min(len(key), 9)], ErrCorrupt, err)
	}
	return nil
}

func (t *Tree) getRecord(tx *store.Txn, key []byte, r any) error {
	v, err := tx.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return t.openRecordInto(key, v, r)
}

func (t *Tree) putRecord(tx *store.Txn, key []byte, r any) error {
	v, err := t.sealRecord(key, r)
	if err != nil {
		return err
	}
	return tx.Set(key, v)
}

// --- inodes ---

// Inode returns the attributes of ino.
func (t *Tree) Inode(ctx context.Context, ino peerdrive.Ino) (peerdrive.Inode, error) {
	t.mu.RLock()
	e, ok := t.cache[ino]
	var in peerdrive.Inode
	if ok {
		in = e.ino
	}
	t.mu.RUnlock()
	if ok {
		return in, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.load(ino)
	if err != nil {
		return peerdrive.Inode{}, err
	}
	return e.ino, nil
}

// load returns the cache entry of ino, reading it if needed. t.mu is held.
func (t *Tree) load(ino peerdrive.Ino) (*entry, error) {
	if e, ok := t.cache[ino]; ok {
		return e, nil
	}
	var in peerdrive.Inode
	err := t.db.View(func(tx *store.Txn) error { return t.getRecord(tx, inoKey(tagInode, ino), &in) })
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	if len(t.cache) >= maxCachedInodes {
		t.evictClean()
	}
	e := &entry{ino: in}
	t.cache[ino] = e
	return e, nil
}

const maxCachedInodes = 1 << 18

func (t *Tree) evictClean() {
	n := 0
	for ino, e := range t.cache { // map order is random: a cheap random eviction
		if !e.dirty && ino != peerdrive.RootIno {
			delete(t.cache, ino)
			if n++; n >= maxCachedInodes/8 {
				return
			}
		}
	}
}

func (t *Tree) writeInode(tx *store.Txn, ino peerdrive.Ino) error {
	e := t.cache[ino]
	if err := t.putRecord(tx, inoKey(tagInode, ino), &e.ino); err != nil {
		return err
	}
	e.dirty = false
	delete(t.dirty, ino)
	return nil
}

// update runs fn under the write lock in one store transaction; need is the
// number of bytes it adds. Inodes that fn marks in touched are written too.
// The transaction commits the store's staged writes (stageUpdate's) first.
func (t *Tree) update(ctx context.Context, need int64, fn func(tx *store.Txn, touched map[peerdrive.Ino]bool) error) error {
	return t.write(ctx, need, false, fn)
}

// stageUpdate is update with the transaction's writes staged
// (store.DB.Stage) instead of committed: later reads see them, and the next
// update commits them, or commitStaged at most stageDelay later, or Sync.
// Creating a file this way costs no commit on the creator's path.
func (t *Tree) stageUpdate(ctx context.Context, need int64, fn func(tx *store.Txn, touched map[peerdrive.Ino]bool) error) error {
	return t.write(ctx, need, true, fn)
}

// stageIfRoom returns stageUpdate while fewer than maxStaged keys wait
// staged, else update (which commits them with its own writes).
func (t *Tree) stageIfRoom() func(context.Context, int64, func(*store.Txn, map[peerdrive.Ino]bool) error) error {
	if t.db.Staged() < maxStaged {
		return t.stageUpdate
	}
	return t.update
}

const (
	// stageDelay bounds how long a staged write waits for the next update
	// (the gatherer commits new files' data within milliseconds).
	stageDelay = 5 * time.Millisecond
	// maxStaged is how many keys may wait staged; past it, creates commit
	// (with what is staged) as other updates do.
	maxStaged = 256
)

// commitStaged commits the staged writes, if any are left.
func (t *Tree) commitStaged() {
	t.mu.Lock()
	t.staging = false
	t.mu.Unlock()
	if err := t.db.CommitStaged(); err != nil {
		t.log.Warn("staged metadata not committed; retrying", "err", err)
		t.mu.Lock()
		t.armStaging(100 * time.Millisecond)
		t.mu.Unlock()
	}
}

// armStaging makes sure a commitStaged runs within d. t.mu is held.
func (t *Tree) armStaging(d time.Duration) {
	if !t.staging {
		t.staging = true
		time.AfterFunc(d, t.commitStaged)
	}
}

func (t *Tree) write(ctx context.Context, need int64, stage bool, fn func(tx *store.Txn, touched map[peerdrive.Ino]bool) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// On failure nothing reached the store: the cache goes back to what it
	// held before (values and dirty flags), and inodes made by fn leave it.
	touched := map[peerdrive.Ino]bool{}
	saved := map[peerdrive.Ino]entry{}
	snapshot := func(ino peerdrive.Ino) {
		if e, ok := t.cache[ino]; ok {
			if _, done := saved[ino]; !done {
				saved[ino] = *e
			}
		}
	}
	stats, next, limit := t.stats, t.next, t.limit
	t.queued, t.dropped = t.queued[:0], t.dropped[:0]
	defer t.notifyRemote()
	commit := t.db.UpdateStaged
	if stage {
		commit = t.db.Stage
	}
	err := commit(need, func(tx *store.Txn) error {
		t.snap = snapshot
		defer func() { t.snap = nil }()
		if err := fn(tx, touched); err != nil {
			return err
		}
		for ino := range touched {
			if _, ok := t.cache[ino]; ok { // purged inodes left the cache
				snapshot(ino) // writeInode clears the dirty flag
				if err := t.writeInode(tx, ino); err != nil {
					return err
				}
			}
		}
		if t.stats != stats {
			if err := t.putRecord(tx, []byte{tagStats}, &t.stats); err != nil {
				return err
			}
		}
		if t.limit != limit {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], t.limit)
			return tx.Set([]byte{tagNextIno}, b[:])
		}
		return nil
	})
	if err != nil {
		for ino, e := range saved {
			if uint64(ino) >= next {
				continue // made by fn
			}
			if cur, ok := t.cache[ino]; ok {
				*cur = e
			} else {
				t.cache[ino] = &e
			}
			if e.dirty {
				t.dirty[ino] = struct{}{}
			}
		}
		for ino := range touched {
			if uint64(ino) >= next { // made by fn
				delete(t.cache, ino)
			}
		}
		t.stats, t.next, t.limit = stats, next, limit
		t.queued, t.dropped = t.queued[:0], t.dropped[:0]
	} else if stage {
		t.armStaging(stageDelay)
	}
	return err
}

// notifyRemote tells the remote what the last transaction did to chunks.
// t.mu is held.
func (t *Tree) notifyRemote() {
	if t.remote == nil {
		return
	}
	for _, d := range t.dropped {
		t.remote.Dropped(d.id, d.size)
	}
	for _, q := range t.queued {
		t.remote.Queued(q.id, q.size)
	}
	t.queued, t.dropped = t.queued[:0], t.dropped[:0]
}

// mod returns the cached entry of ino for changing inside update, recording
// its old value for rollback.
func (t *Tree) mod(touched map[peerdrive.Ino]bool, ino peerdrive.Ino) (*peerdrive.Inode, error) {
	e, err := t.load(ino)
	if err != nil {
		return nil, err
	}
	if t.snap != nil {
		t.snap(ino)
	}
	touched[ino] = true
	return &e.ino, nil
}

func (t *Tree) allocIno() peerdrive.Ino {
	ino := t.next
	t.next++
	if t.next > t.limit {
		t.limit = t.next + inoBatch
	}
	return peerdrive.Ino(ino)
}

// SetAttr changes ino's attributes with fn. Like Touch, it changes them
// in memory only: they are written by the next Flush, Sync or change of
// the inode (chown, chmod and utimens need not be durable before fsync, and
// a transaction for each costs tar and rsync a round trip to the store per
// file). fn's changes are kept only if it returns nil.
func (t *Tree) SetAttr(ctx context.Context, ino peerdrive.Ino, fn func(*peerdrive.Inode) error) (peerdrive.Inode, error) {
	if err := ctx.Err(); err != nil {
		return peerdrive.Inode{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.load(ino)
	if err != nil {
		return peerdrive.Inode{}, err
	}
	in := e.ino
	if err := fn(&in); err != nil {
		return peerdrive.Inode{}, err
	}
	e.ino = in
	t.markDirty(ino, e)
	return in, nil
}

// markDirty marks ino's entry e as changed in memory only. t.mu is held.
func (t *Tree) markDirty(ino peerdrive.Ino, e *entry) {
	e.dirty = true
	t.dirty[ino] = struct{}{}
}

// Touch changes ino's attributes in memory only; they are written by the
// next Flush, Sync or change of the inode. For the write path, where size
// and times change on every call, and for changes made on a condition
// (atime on a read): fn reports whether it changed anything, and an inode
// it left alone is not marked for writing.
func (t *Tree) Touch(ino peerdrive.Ino, fn func(*peerdrive.Inode) bool) (peerdrive.Inode, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.load(ino)
	if err != nil {
		return peerdrive.Inode{}, err
	}
	if fn(&e.ino) {
		t.markDirty(ino, e)
	}
	return e.ino, nil
}

// Flush writes every inode changed by Touch.
// It writes them in batches: a store transaction holds only so many.
func (t *Tree) Flush(ctx context.Context) error {
	for {
		t.mu.RLock()
		clean := len(t.dirty) == 0
		t.mu.RUnlock()
		if clean {
			return nil
		}
		more := false
		err := t.update(ctx, 0, func(tx *store.Txn, touched map[peerdrive.Ino]bool) error {
			size := 0
			for ino := range t.dirty {
				e, ok := t.cache[ino]
				if !ok || !e.dirty {
					delete(t.dirty, ino) // purged
					continue
				}
				if len(touched) == flushBatch || size >= flushBytes {
					more = true
					break
				}
				touched[ino] = true
				size += inodeRecordBytes + len(e.ino.Target)
			}
			return nil
		})
		if err != nil || !more {
			return err
		}
	}
}

// One transaction of Flush writes at most flushBatch inodes, and stops
// adding inodes once their records reach flushBytes. The store refuses a
// transaction past 15% of its memtable (2.4 MiB, shared with the staged
// writes the transaction commits), and a symlink's record holds its target,
// up to 4 KiB: a thousand symlinks read (relatime) made every Flush fail
// alike, and with it every fsync and the unmount. inodeRecordBytes is what
// the store counts of a record besides the target: key, CBOR fields,
// nonce and tag, its own overhead.
const (
	flushBatch       = 4096
	flushBytes       = 512 << 10
	inodeRecordBytes = 160
)

// Sync writes every change and makes it durable on disk.
func (t *Tree) Sync(ctx context.Context) error {
	if err := t.Flush(ctx); err != nil {
		return err
	}
	return t.db.Sync()
}

// Now is the clock of the tree's timestamps.
func Now() int64 { return time.Now().UnixNano() }
