package fs

import (
	"context"
	"errors"
	"maps"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/tree"
)

const chunkSize = peerdrive.ChunkSize

// maxBufBytes bounds the written-but-unsealed data held in memory; past it a
// writer seals its own data before going on (back-pressure).
const maxBufBytes = 64 << 20

// fileState is the data of one open file that has not reached the store yet.
type fileState struct {
	ino   peerdrive.Ino
	mu    sync.Mutex
	cond  sync.Cond
	opens int
	// dirty holds chunks being written; sealing holds chunks handed to a
	// sealer and not yet committed. A chunk index is in at most one of them.
	dirty      map[int64]*chunkBuf
	sealing    map[int64]*chunkBuf
	dirtySince time.Time
	lastRead   int64 // chunk index of the last read, for read-ahead
	aheadTo    int64 // chunks below this were read ahead
	fetchTo    int64 // chunks below this were prefetched from the disk
	// err is a failed background commit, logged by the next release; its
	// data stays dirty, and the next fsync or flusher pass retries it.
	err        error
	capChecked bool // a write looked for security.capability (killPrivs)
	writers    int  // opens that may write (pushChunk)
	// counted is what buffered last counted, plus one (0: never counted),
	// for a stat that finds the file busy.
	counted atomic.Int64
}

// waitSealed waits, with st.mu held, until none of st's chunks is with the
// sealers.
func (f *FS) waitSealed(st *fileState) {
	if len(st.sealing) > 0 {
		f.urgeGatherer()
	}
	for len(st.sealing) > 0 {
		st.cond.Wait()
	}
}

// urgeGatherer makes a gatherer waiting for more small files commit its
// batch now: someone waits for it.
func (f *FS) urgeGatherer() {
	select {
	case f.urge <- struct{}{}:
	default:
	}
}

type chunkBuf struct {
	data *[]byte // chunkSize bytes; only [:n] is meaningful, the rest reads as zeros
	n    int
	// loaded says the buffer started from the chunk's stored bytes: a
	// partial rewrite, which a random-access writer repeats.
	loaded bool
	// The stored chunk the buffer started from (zero: none, a hole), if
	// baseKnown, and the extents written since the last patch (sorted,
	// disjoint): what an fsync may store as the next patch of the base
	// instead of the whole chunk (fsyncFile). patches and patchBytes count
	// the patches stored so far. noPatch: too much written to patch; the
	// chunk is sealed whole.
	base       peerdrive.ChunkID
	baseKnown  bool
	ext        []extent
	extBytes   int
	patches    uint32
	patchBytes int
	noPatch    bool
}

// extent is the bytes [start, end) of a chunk.
type extent struct{ start, end int }

// A chunk is patched at fsync (fsyncFile) while what was written to it
// since it was stored is small: at most maxPatchBytes in all its patches,
// at most maxPatchExtents extents in one, maxPatches patches, and at most
// a quarter of the chunk's length, so that writing them saves most of what
// sealing the chunk costs and a replay stays cheap.
const (
	maxPatchBytes   = 256 << 10
	maxPatchExtents = 64
	maxPatches      = 256
)

// track notes that [start, end) of b was written.
func (b *chunkBuf) track(start, end int) {
	if b.noPatch {
		return
	}
	i := sort.Search(len(b.ext), func(i int) bool { return b.ext[i].end >= start })
	j := i
	for j < len(b.ext) && b.ext[j].start <= end {
		start, end = min(start, b.ext[j].start), max(end, b.ext[j].end)
		j++
	}
	b.ext = slices.Replace(b.ext, i, j, extent{start, end})
	b.extBytes = 0
	for _, e := range b.ext {
		b.extBytes += e.end - e.start
	}
	if len(b.ext) > maxPatchExtents || b.patchBytes+b.extBytes > maxPatchBytes {
		b.noPatch, b.ext = true, nil
	}
}

type sealJob struct {
	st  *fileState
	idx int64
	buf *chunkBuf
}

// state returns the fileState of ino, creating it.
func (f *FS) state(ino peerdrive.Ino) *fileState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.files[ino]
	if !ok {
		st = &fileState{ino: ino, dirty: map[int64]*chunkBuf{}, sealing: map[int64]*chunkBuf{}}
		st.cond.L = &st.mu
		f.files[ino] = st
	}
	return st
}

// existing returns the fileState of ino if there is one.
func (f *FS) existing(ino peerdrive.Ino) *fileState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.files[ino]
}

func (f *FS) open(ino peerdrive.Ino, write bool) *fileState {
	if write {
		f.pushMu.Lock() // pushes under way finish first
		defer f.pushMu.Unlock()
	}
	st := f.state(ino)
	st.mu.Lock()
	st.opens++
	if write {
		st.writers++
	}
	st.mu.Unlock()
	return st
}

// pushChunk stores chunk idx of the file of n, as committed, in the kernel's
// page cache (FUSE_NOTIFY_STORE), in the background. A small read of a
// large file decrypts the whole 1 MiB chunk it falls in; without this the
// kernel keeps only the pages it asked for, and the next read of the same
// chunk asks again. It is done only while no open may write the file and
// nothing of it is buffered: then the committed chunk is what the kernel
// would read, and nothing can change the file before the store is done
// (an open for writing and a truncate wait for it: FS.pushMu; the file's
// state is looked up under it, as a state that no open holds may be
// forgotten and made anew). The store never reaches past the file's size,
// which the kernel would take as growth.
func (f *FS) pushChunk(n *node, ino peerdrive.Ino, idx int64) {
	// Pushes are a hint: skipped while others are under way.
	f.background(f.pushing, func() {
		f.pushMu.RLock()
		defer f.pushMu.RUnlock()
		st := f.existing(ino)
		if st == nil {
			return
		}
		st.mu.Lock()
		quiet := st.writers == 0 && len(st.dirty) == 0 && len(st.sealing) == 0
		st.mu.Unlock()
		if !quiet {
			return
		}
		ctx := context.Background()
		in, err := f.tree.Inode(ctx, ino)
		if err != nil {
			return
		}
		ref, ok, err := f.tree.ChunkRef(ctx, ino, idx)
		if err != nil || !ok {
			return
		}
		plain, err := f.tree.ReadChunk(ctx, ref)
		if err != nil {
			return
		}
		start := idx * chunkSize
		end := min(start+int64(len(plain)), int64(in.Size))
		if end > start {
			_ = n.WriteCache(start, plain[:end-start]) // best effort
		}
	})
}

// background runs fn in a goroutine that holds one of slots, unless all
// are taken or the FS is closing; it reports whether fn runs. Close waits
// for every such goroutine (aheadWG): they use the store.
func (f *FS) background(slots chan struct{}, fn func()) bool {
	select {
	case slots <- struct{}{}:
	default:
		return false
	}
	f.aheadMu.Lock()
	if f.aheadOff {
		f.aheadMu.Unlock()
		<-slots
		return false
	}
	f.aheadWG.Add(1)
	f.aheadMu.Unlock()
	go func() {
		defer f.aheadWG.Done()
		defer func() { <-slots }()
		fn()
	}()
	return true
}

// release drops one open of ino; the last one flushes, forgets the state and
// purges the file if it was unlinked meanwhile and the kernel forgot it.
func (f *FS) release(ctx context.Context, ino peerdrive.Ino, write bool) error {
	st := f.state(ino)
	err := f.handOff(st)
	f.mu.Lock()
	st.mu.Lock()
	st.opens--
	if write {
		st.writers--
	}
	purge := false
	if st.opens <= 0 {
		if known, ok := f.unlinked[ino]; ok && !known {
			delete(f.unlinked, ino)
			purge = true
			err = nil // nobody can read the data that failed to flush
		}
		if purge && len(st.sealing) == 0 {
			for idx, b := range st.dirty {
				delete(st.dirty, idx)
				f.freeBuf(b)
			}
		}
		if len(st.dirty) == 0 && len(st.sealing) == 0 && f.files[ino] == st {
			delete(f.files, ino)
		}
	}
	st.mu.Unlock()
	f.mu.Unlock()
	if purge {
		f.purgeLater(ino)
	}
	return err
}

// isOpen reports whether an open file uses ino. f.mu is held.
func (f *FS) isOpen(ino peerdrive.Ino) bool {
	st := f.files[ino]
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.opens > 0
}

// dropped is called when ino lost its last link. The inode lives on while
// the kernel may use it: known says it may have looked it up (it then
// forgets it later, see forgotten), and open files keep it too (see
// release). Unix semantics: an unlinked file stays usable through a
// descriptor, and an open that raced with the unlink still succeeds.
func (f *FS) dropped(ctx context.Context, ino peerdrive.Ino, known bool) {
	f.mu.Lock()
	if known || f.isOpen(ino) {
		f.unlinked[ino] = known
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.purgeLater(ino)
}

// relinked is called when ino got a link again (an O_TMPFILE file linked
// into place): it is no longer to be purged.
func (f *FS) relinked(ino peerdrive.Ino) {
	f.mu.Lock()
	delete(f.unlinked, ino)
	f.mu.Unlock()
}

// forgotten is called when the kernel forgot ino. An unlinked inode is
// purged then, unless a file is still open (release purges it).
func (f *FS) forgotten(ino peerdrive.Ino) {
	f.mu.Lock()
	if _, ok := f.unlinked[ino]; !ok {
		f.mu.Unlock()
		return
	}
	if f.isOpen(ino) {
		f.unlinked[ino] = false
		f.mu.Unlock()
		return
	}
	delete(f.unlinked, ino)
	f.mu.Unlock()
	f.purgeLater(ino)
}

// purge deletes the unlinked ino and its data. A failure only leaves an
// orphan, which the next PurgeOrphans deletes.
func (f *FS) purge(ctx context.Context, ino peerdrive.Ino) {
	if err := f.tree.Purge(ctx, ino); err != nil {
		f.log.Warn("purge of unlinked inode failed", "ino", ino, "err", err)
	}
}

const (
	// purgeWait is how long a purge waits for others to share its
	// transaction; purgeBatch bounds the inodes of one.
	purgeWait  = 2 * time.Millisecond
	purgeBatch = 64
)

// purgeLater purges ino within purgeWait, in one store transaction with
// the purges that come meanwhile: rm -rf would otherwise commit once per
// file. A write that finds the disk or the quota full runs them at once.
func (f *FS) purgeLater(ino peerdrive.Ino) {
	f.purgeMu.Lock()
	f.purges = append(f.purges, ino)
	n := len(f.purges)
	f.purgeMu.Unlock()
	switch {
	case n >= purgeBatch:
		f.runPurges()
	case n == 1:
		time.AfterFunc(purgeWait, f.runPurges)
	}
}

// runPurges purges the inodes waiting, in one transaction, or one by one
// if that fails (each then gets its own log line).
func (f *FS) runPurges() {
	f.purgeRun.Lock()
	defer f.purgeRun.Unlock()
	f.purgeMu.Lock()
	inos := f.purges
	f.purges = nil
	f.purgeMu.Unlock()
	if len(inos) == 0 {
		return
	}
	ctx := context.Background()
	if err := f.tree.Purge(ctx, inos...); err != nil {
		for _, ino := range inos {
			f.purge(ctx, ino)
		}
	}
}

func (f *FS) newBuf() *chunkBuf {
	f.bufBytes.Add(chunkSize)
	return &chunkBuf{data: f.bufs.Get().(*[]byte)}
}

func (f *FS) freeBuf(b *chunkBuf) {
	f.bufBytes.Add(-chunkSize)
	f.bufs.Put(b.data)
}

// bufFor returns the dirty buffer of chunk idx, loading the chunk's stored
// bytes unless the write [off, off+n) will cover all of them. st.mu is held.
// Only a chunk fetched from peers honours the cancellation of ctx.
func (f *FS) bufFor(ctx context.Context, st *fileState, idx int64, off, n int) (*chunkBuf, error) {
	for {
		if b, ok := st.dirty[idx]; ok {
			return b, nil
		}
		if _, ok := st.sealing[idx]; !ok {
			break
		}
		f.urgeGatherer()
		st.cond.Wait() // one version of a chunk is sealed at a time
	}
	b := f.newBuf()
	if err := f.loadChunk(ctx, st.ino, idx, off, n, b); err != nil {
		f.freeBuf(b)
		return nil, err
	}
	if len(st.dirty) == 0 {
		st.dirtySince = time.Now()
	}
	st.dirty[idx] = b
	return b, nil
}

// loadChunk fills b with the stored bytes of chunk idx of ino that a write
// of [off, off+n) leaves in place. A write that covers the whole chunk or
// starts a chunk past the end of the file needs none: it does not ask the
// store at all, whose reads wait for the sealers' commits in flight.
func (f *FS) loadChunk(ctx context.Context, ino peerdrive.Ino, idx int64, off, n int, b *chunkBuf) error {
	if off == 0 && n == chunkSize {
		return nil
	}
	if in, err := f.tree.Inode(ctx, ino); err == nil && uint64(idx)*chunkSize >= in.Size {
		return nil // every write extends the size: nothing was ever stored here
	}
	ref, ok, err := f.tree.ChunkRef(context.WithoutCancel(ctx), ino, idx)
	if err != nil {
		return err
	}
	b.base, b.baseKnown = ref.ID, true // zero for a hole
	if ok && !(off == 0 && n >= int(ref.Len)) {
		plain, err := f.tree.ReadChunk(ctx, ref)
		if err != nil {
			return err
		}
		b.n = copy(*b.data, plain)
		b.loaded = true
	}
	return nil
}

// write copies data at off into the file's dirty buffers; full chunks go to
// the sealers.
func (f *FS) write(ctx context.Context, ino peerdrive.Ino, data []byte, off int64) (int, error) {
	if f.opts.ReadOnly {
		return 0, ErrReadOnly
	}
	if err := f.checkSpace(int64(len(data))); err != nil {
		return 0, err
	}
	// The kernel's write-back of dirty pages (a shared mapping's) is not
	// held back: no caller waits in it whom a signal could interrupt, so
	// a wait for room would leave msync, munmap and the unmount in an
	// uninterruptible sleep for as long as no peer takes the data. The
	// kernel already bounds the dirty pages a writer may make.
	if f.opts.Admit != nil && !f.req(ctx).writeBack {
		f.opts.Admit(ctx.Done())
	}
	return f.writeData(ctx, ino, data, off)
}

// zeroRange writes zeros over [off, end) of the file, a chunk at a time.
// Chunks that end up all zeros become holes, so it frees space: it is not
// refused on a full disk or quota.
func (f *FS) zeroRange(ctx context.Context, ino peerdrive.Ino, off, end uint64) error {
	if f.opts.ReadOnly {
		return ErrReadOnly
	}
	zeros := make([]byte, min(end-off, chunkSize))
	for off < end {
		n := min(end-off, chunkSize-off%chunkSize)
		if _, err := f.writeData(ctx, ino, zeros[:n], int64(off)); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// writeData is write without the checks for space.
func (f *FS) writeData(ctx context.Context, ino peerdrive.Ino, data []byte, off int64) (int, error) {
	st := f.state(ino)
	st.mu.Lock()
	var full []sealJob
	end := off + int64(len(data))
	pos := off
	var err error
	for pos < end {
		idx := pos / chunkSize
		o := int(pos - idx*chunkSize)
		n := int(min(int64(chunkSize-o), end-pos))
		var b *chunkBuf
		b, err = f.bufFor(ctx, st, idx, o, n)
		if err != nil {
			break
		}
		if o > b.n {
			clear((*b.data)[b.n:o])
		}
		copy((*b.data)[o:o+n], data[pos-off:])
		b.n = max(b.n, o+n)
		b.track(o, o+n)
		if o+n == chunkSize {
			delete(st.dirty, idx)
			st.sealing[idx] = b
			full = append(full, sealJob{st, idx, b})
		}
		pos += int64(n)
	}
	if pos > off {
		now := tree.Now()
		_, terr := f.tree.Touch(ino, func(in *peerdrive.Inode) bool {
			if uint64(pos) > in.Size {
				in.Size = uint64(pos)
			}
			in.Mtime, in.Ctime = now, now
			return true
		})
		if err == nil {
			err = terr
		}
	}
	st.mu.Unlock()
	for _, j := range full {
		f.queue(j)
	}
	if f.bufBytes.Load() > maxBufBytes {
		if ferr := f.flushFile(context.WithoutCancel(ctx), st); err == nil {
			err = ferr
		}
	}
	return int(pos - off), err
}

// queue hands j to the sealers: a small file's data to the gatherer, which
// commits a run of them in one transaction, anything larger to the sealers,
// which work in parallel. It blocks while they are busy: back-pressure.
func (f *FS) queue(j sealJob) {
	if j.buf.n <= smallJob {
		f.small <- j
	} else {
		f.jobs <- j
	}
}

const (
	// smallJob is the most data a job of the gatherer holds; sealing it
	// costs less than its transaction.
	smallJob = 64 << 10
	// gatherWait is how long the gatherer waits for more small files after
	// the first. fsync and sync do not wait for it (urge).
	gatherWait = 2 * time.Millisecond
	// maxBatch bounds the files of one gatherer transaction.
	maxBatch = 32
)

// sealer seals and commits chunks in the background, one at a time.
func (f *FS) sealer() {
	defer f.workers.Done()
	for j := range f.jobs {
		f.sealBatch([]sealJob{j})
	}
}

// gatherer seals and commits small files' data in batches: the jobs that
// come within gatherWait of the first go into one store transaction with
// it, a commit per batch instead of one per file.
func (f *FS) gatherer() {
	defer f.workers.Done()
	var batch []sealJob
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for j := range f.small {
		batch = append(batch[:0], j)
		timer.Reset(gatherWait)
	gather:
		for len(batch) < maxBatch {
			select {
			case j, ok := <-f.small:
				if !ok {
					break gather
				}
				batch = append(batch, j)
			case <-timer.C:
				break gather
			case <-f.urge:
				break gather
			}
		}
		timer.Stop()
		f.sealBatch(batch)
		clear(batch)
	}
}

// sealBatch seals the jobs' data and commits it in one transaction, or
// file by file if that fails.
func (f *FS) sealBatch(batch []sealJob) {
	ctx := context.Background()
	files := make([]tree.FileChunks, len(batch))
	for i, j := range batch {
		files[i] = tree.FileChunks{Ino: j.st.ino, Chunks: []tree.Sealed{f.tree.Seal(j.idx, (*j.buf.data)[:j.buf.n])}}
	}
	errs := make([]error, len(batch))
	if err := f.tree.CommitFiles(ctx, files); err != nil {
		// Commit one by one, so that each file gets its own error.
		for i := range files {
			errs[i] = f.tree.CommitFiles(ctx, files[i:i+1])
		}
	}
	for i, j := range batch {
		if errs[i] == nil {
			f.keepRewritten(files[i].Chunks[0], j.buf)
		}
		f.tree.Recycle(&files[i].Chunks[0])
		f.sealed(j, errs[i])
	}
}

// keepRewritten keeps the plaintext of b, just committed as s, if b was a
// partial rewrite of a stored chunk: the next read or partial write of the
// chunk would read and decrypt it again.
func (f *FS) keepRewritten(s tree.Sealed, b *chunkBuf) {
	if b.loaded && !s.Hole {
		f.tree.KeepChunk(s.ID, (*b.data)[:b.n])
	}
}

// sealed records the outcome of j's commit.
func (f *FS) sealed(j sealJob, err error) {
	if err != nil && f.purged(context.Background(), j.st.ino) {
		err = nil // nobody can read the data
	}
	st := j.st
	st.mu.Lock()
	delete(st.sealing, j.idx)
	if err != nil {
		// Keep the data: the next commit (fsync, the flusher) tries again.
		if _, newer := st.dirty[j.idx]; !newer {
			st.dirty[j.idx] = j.buf
			j.buf = nil
		}
		if st.err == nil {
			st.err = err
		}
	}
	st.cond.Broadcast()
	st.mu.Unlock()
	if j.buf != nil {
		f.freeBuf(j.buf)
	}
	f.forgetIfIdle(st)
}

// handOff gives every dirty chunk of st to the sealers and returns without
// waiting for them: a close returns while its data is sealed and committed
// in the background, and a run of small files is written at the speed of
// the kernel's round trips, not of the store's commits. fsync waits for the
// sealers (flushFile). It returns the error of an earlier background commit.
func (f *FS) handOff(st *fileState) error {
	st.mu.Lock()
	jobs := make([]sealJob, 0, len(st.dirty))
	for idx, b := range st.dirty {
		delete(st.dirty, idx)
		st.sealing[idx] = b
		jobs = append(jobs, sealJob{st, idx, b})
	}
	err := st.err
	st.err = nil
	st.mu.Unlock()
	for _, j := range jobs {
		f.queue(j)
	}
	return err
}

// flushFile seals and commits every dirty chunk of st and waits for the
// sealers, so that the store holds all data written so far, with the file's
// attributes if there was data to commit (others reach the store with the
// next tree Flush or Sync).
func (f *FS) flushFile(ctx context.Context, st *fileState) error {
	return f.commitFile(ctx, st, false)
}

// fsyncFile is flushFile for fsync: a chunk rewritten only in a few small
// extents since it was stored is committed as a patch of the stored chunk
// (docs/format.md §5.9) and stays buffered, to be sealed whole later (by the
// flusher, a close, or an fsync that finds too much rewritten). Sealing a
// chunk costs its whole megabyte of hashing and encryption; a database's
// fsync after a few page writes costs a few pages.
func (f *FS) fsyncFile(ctx context.Context, st *fileState) error {
	return f.commitFile(ctx, st, true)
}

func (f *FS) commitFile(ctx context.Context, st *fileState, patch bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	f.waitSealed(st)
	// A background commit that failed kept its data in st.dirty (or newer
	// data replaced it): committing st.dirty now decides. Once the data is
	// in, the earlier error is moot.
	st.err = nil
	whole := st.dirty
	var patches []tree.PatchAt
	if patch {
		whole = make(map[int64]*chunkBuf, len(st.dirty))
		for idx, b := range st.dirty {
			switch p, ok := f.patchOf(ctx, st.ino, idx, b); {
			case ok && len(p.Extents) == 0:
				// Nothing written since its last patch, which holds.
			case ok:
				patches = append(patches, tree.PatchAt{Idx: idx, Seq: b.patches, Patch: p})
			default:
				whole[idx] = b
			}
		}
	}
	sealed := f.sealAll(whole)
	defer func() {
		for i := range sealed {
			f.tree.Recycle(&sealed[i])
		}
	}()
	err := f.tree.CommitPatched(ctx, st.ino, sealed, patches)
	if errors.Is(err, tree.ErrStaleBase) {
		// Cannot happen while every change of the chunk map goes through
		// this file's buffers; if it does, the chunks are sealed whole.
		f.log.Warn("patch base moved; sealing whole chunks", "ino", st.ino, "err", err)
		for _, p := range patches {
			b := st.dirty[p.Idx]
			b.noPatch, b.ext = true, nil
			whole[p.Idx] = b
		}
		for i := range sealed {
			f.tree.Recycle(&sealed[i])
		}
		patches, sealed = nil, f.sealAll(whole)
		err = f.tree.Commit(ctx, st.ino, sealed)
	}
	if err != nil && f.purged(ctx, st.ino) {
		err = nil // nobody can read the data
	}
	if err == nil {
		for _, s := range sealed {
			b := st.dirty[s.Idx]
			f.keepRewritten(s, b)
			delete(st.dirty, s.Idx)
			f.freeBuf(b)
		}
		for _, p := range patches {
			b := st.dirty[p.Idx]
			b.patches++
			b.patchBytes += b.extBytes
			b.ext, b.extBytes = nil, 0
		}
	}
	return err
}

// patchOf returns the next patch of b, chunk idx of ino, if an fsync may
// store it instead of sealing the whole chunk; a patch without extents
// means the chunk's stored patches already hold everything written to it.
func (f *FS) patchOf(ctx context.Context, ino peerdrive.Ino, idx int64, b *chunkBuf) (peerdrive.Patch, bool) {
	if b.noPatch || (b.patchBytes+b.extBytes)*4 > b.n || b.patches >= maxPatches || b.patches == 0 && len(b.ext) == 0 {
		return peerdrive.Patch{}, false
	}
	if len(b.ext) == 0 {
		return peerdrive.Patch{}, true
	}
	base := b.base
	if !b.baseKnown {
		// The buffer started as zeros without asking the store: it is a
		// patch of a hole if the map has nothing at idx.
		_, ok, err := f.tree.ChunkRef(ctx, ino, idx)
		if err != nil || ok {
			return peerdrive.Patch{}, false
		}
		base = peerdrive.ChunkID{}
	}
	p := peerdrive.Patch{Base: base, Len: uint32(b.n), Extents: make([]peerdrive.PatchExtent, len(b.ext))}
	for i, e := range b.ext {
		// Marshalled within CommitPatched, under st.mu: no copy needed.
		p.Extents[i] = peerdrive.PatchExtent{Off: uint32(e.start), Data: (*b.data)[e.start:e.end]}
	}
	return p, true
}

// sealAll seals the chunks of dirty, as many at a time as there are CPUs:
// an fsync after random writes has many chunks to seal, and waits for all.
func (f *FS) sealAll(dirty map[int64]*chunkBuf) []tree.Sealed {
	idxs := slices.Sorted(maps.Keys(dirty))
	sealed := make([]tree.Sealed, len(idxs))
	if len(idxs) == 1 {
		b := dirty[idxs[0]]
		sealed[0] = f.tree.Seal(idxs[0], (*b.data)[:b.n])
		return sealed
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(idxs), runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(idxs); i = int(next.Add(1) - 1) {
				b := dirty[idxs[i]]
				sealed[i] = f.tree.Seal(idxs[i], (*b.data)[:b.n])
			}
		})
	}
	wg.Wait()
	return sealed
}

// purged reports whether ino is gone from the tree.
func (f *FS) purged(ctx context.Context, ino peerdrive.Ino) bool {
	_, err := f.tree.Inode(ctx, ino)
	return errors.Is(err, tree.ErrNotFound)
}

// read fills dest from the file at off; it returns the number of bytes.
// Only chunks fetched from peers honour the cancellation of ctx.
func (f *FS) read(ctx context.Context, ino peerdrive.Ino, dest []byte, off int64) (int, error) {
	in, err := f.tree.Inode(ctx, ino)
	if err != nil {
		return 0, err
	}
	if off >= int64(in.Size) {
		return 0, nil
	}
	end := min(off+int64(len(dest)), int64(in.Size))
	st := f.existing(ino)
	for pos := off; pos < end; {
		idx := pos / chunkSize
		o := int(pos - idx*chunkSize)
		n := int(min(int64(chunkSize-o), end-pos))
		out := dest[pos-off : pos-off+int64(n)]
		if st != nil && f.readBuffered(st, idx, o, out) {
			pos += int64(n)
			continue
		}
		ref, ok, err := f.tree.ChunkRef(context.WithoutCancel(ctx), ino, idx)
		if err != nil {
			return 0, err
		}
		if !ok {
			clear(out)
		} else {
			c, err := f.tree.ReadChunkAt(ctx, ref, o, out)
			if err != nil {
				return 0, err
			}
			clear(out[c:])
		}
		pos += int64(n)
	}
	if st != nil {
		f.readAhead(st, ino, (end-1)/chunkSize, int64(in.Size))
	}
	return int(end - off), nil
}

// A sequential reader's next readAheadChunks chunks are decrypted (or
// fetched from peers) in the background, so that disk or network, crypto
// and FUSE work overlap; up to GOMAXPROCS of them load at once (the FS's
// ahead channel), so that decryption uses every core. Further ahead,
// prefetchChunks chunks are read from the local disk into the page cache
// without waiting for them, so that the disk streams while loads decrypt:
// concurrent reads of the pack file instead defeat the kernel's own
// read-ahead on it.
const (
	readAheadChunks = 4
	prefetchChunks  = 16
)

// readAhead starts loading the chunks after idx into the tree's chunk cache
// when the file is being read sequentially. The kernel's own read-ahead
// sends several requests at once, which may arrive out of order: a read
// near the last one counts as sequential.
func (f *FS) readAhead(st *fileState, ino peerdrive.Ino, idx, size int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	seq := idx >= st.lastRead-readAheadChunks && idx <= st.lastRead+readAheadChunks
	st.lastRead = idx
	if !seq {
		st.aheadTo, st.fetchTo = 0, 0 // a new run of reads starts here
		return
	}
	last := (size - 1) / chunkSize
	if from := max(idx+1, st.fetchTo); from <= last && st.fetchTo <= idx+prefetchChunks/2 {
		to := min(idx+prefetchChunks, last)
		st.fetchTo = to + 1
		f.aheadMu.Lock()
		if !f.aheadOff {
			f.aheadWG.Add(1)
			go func() {
				defer f.aheadWG.Done()
				f.tree.PrefetchChunks(ino, from, to)
			}()
		}
		f.aheadMu.Unlock()
	}
	to := min(idx+readAheadChunks, last)
	for i := max(idx+1, st.aheadTo); i <= to; i++ {
		started := f.background(f.ahead, func() {
			ctx := context.Background()
			if ref, ok, err := f.tree.ChunkRef(ctx, ino, i); err == nil && ok {
				f.tree.ReadChunk(ctx, ref) // fills the cache; errors show on the real read
			}
		})
		if !started {
			return // enough read-ahead in flight (or closing); a later read starts the rest
		}
		st.aheadTo = i + 1
	}
}

// readBuffered copies chunk idx from the file's unsealed buffers, if it is
// there.
func (f *FS) readBuffered(st *fileState, idx int64, o int, out []byte) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	b, ok := st.dirty[idx]
	if !ok {
		b, ok = st.sealing[idx]
	}
	if !ok {
		return false
	}
	c := 0
	if o < b.n {
		c = copy(out, (*b.data)[o:b.n])
	}
	clear(out[c:])
	return true
}

// truncate sets the file's size, dropping or cutting chunks past it.
func (f *FS) truncate(ctx context.Context, ino peerdrive.Ino, size uint64) (peerdrive.Inode, error) {
	if f.opts.ReadOnly {
		return peerdrive.Inode{}, ErrReadOnly
	}
	f.pushMu.Lock() // a truncate by path has no writer's open (pushChunk)
	defer f.pushMu.Unlock()
	st := f.state(ino)
	defer f.forgetIfIdle(st)
	st.mu.Lock()
	defer st.mu.Unlock()
	f.waitSealed(st)
	last := int64(size / chunkSize) // the chunk the new end falls in
	cut := int(size - uint64(last)*chunkSize)
	var tailBuf *chunkBuf
	for idx, b := range st.dirty {
		switch {
		case idx > last || idx == last && cut == 0:
			delete(st.dirty, idx)
			f.freeBuf(b)
		case idx == last && cut < b.n:
			tailBuf = b
		}
	}
	var tail *tree.Sealed
	if tailBuf != nil {
		// A buffered tail that loses bytes is cut and committed with the
		// truncate: the store then never holds the new size over a tail
		// chunk (or patches of one) that still has the bytes past it,
		// which a later growth of the file would show.
		s := f.tree.Seal(last, (*tailBuf.data)[:cut])
		defer f.tree.Recycle(&s)
		tail = &s
	} else if _, buffered := st.dirty[last]; cut > 0 && !buffered {
		ref, ok, err := f.tree.ChunkRef(ctx, ino, last)
		if err != nil {
			return peerdrive.Inode{}, err
		}
		if ok && int(ref.Len) > cut {
			plain, err := f.tree.ReadChunk(ctx, ref)
			if err != nil {
				return peerdrive.Inode{}, err
			}
			s := f.tree.Seal(last, plain[:cut])
			tail = &s
		}
	}
	in, err := f.tree.Truncate(ctx, ino, size, tail)
	if err == nil && tailBuf != nil {
		delete(st.dirty, last)
		f.freeBuf(tailBuf)
	}
	return in, err
}

// forgetIfIdle drops a fileState that no open file uses and that holds no
// data.
func (f *FS) forgetIfIdle(st *fileState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.opens <= 0 && len(st.dirty) == 0 && len(st.sealing) == 0 && f.files[st.ino] == st {
		delete(f.files, st.ino)
	}
}

// checkSpace refuses a write of n bytes if the disk or the quota is full,
// after the purges that wait have freed what they hold.
func (f *FS) checkSpace(n int64) error {
	check := func() error {
		if err := f.db.CheckSpace(n); err != nil {
			return err
		}
		return f.checkQuota(n)
	}
	err := check()
	if err != nil && f.pendingPurges() {
		f.runPurges()
		err = check()
	}
	return err
}

func (f *FS) pendingPurges() bool {
	f.purgeMu.Lock()
	defer f.purgeMu.Unlock()
	return len(f.purges) > 0
}

func (f *FS) checkQuota(n int64) error {
	if f.opts.Quota == 0 {
		return nil
	}
	if f.tree.Stats().Used+uint64(f.bufBytes.Load())+uint64(n) > f.opts.Quota {
		return ErrQuota
	}
	return nil
}

// With CAP_HANDLE_KILLPRIV_V2 the kernel leaves it to the filesystem to
// clear set-user-ID, set-group-ID and security.capability when a file is
// written, truncated or chowned, and in exchange marks the superblock
// SB_NOSEC: it stops asking for security.capability (a GETXATTR round trip)
// before every write of a file once one write found none.

// killPrivs is called after a write: a caller without CAP_FSETID (the
// kernel flags its write) clears set-user-ID, and set-group-ID if the group
// may execute; the first write through a file's state drops a
// security.capability, as the VFS does for any writer.
func (f *FS) killPrivs(ctx context.Context, ino peerdrive.Ino) {
	if f.req(ctx).kill {
		in, err := f.tree.Inode(ctx, ino)
		if err == nil && in.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
			f.killSuidSgidOf(ino)
		}
	}
	st := f.existing(ino)
	if st == nil {
		return
	}
	st.mu.Lock()
	checked := st.capChecked
	st.capChecked = true
	st.mu.Unlock()
	if !checked {
		f.dropCapability(ctx, ino)
	}
}

// modified sets the modification and change times of ino to now, for a
// change of its data that wrote nothing (a fallocate that only reserves).
// A failure is logged: the data is as the caller asked.
func (f *FS) modified(ino peerdrive.Ino) {
	now := tree.Now()
	if _, err := f.tree.Touch(ino, func(in *peerdrive.Inode) bool {
		in.Mtime, in.Ctime = now, now
		return true
	}); err != nil {
		f.log.Warn("times not updated", "ino", ino, "err", err)
	}
}

// killSuidSgidOf applies killSuidSgid to the inode ino.
func (f *FS) killSuidSgidOf(ino peerdrive.Ino) {
	_, _ = f.tree.Touch(ino, func(in *peerdrive.Inode) bool {
		if !killSuidSgid(in) {
			return false
		}
		in.Ctime = tree.Now()
		return true
	})
}

// killSuidSgid clears set-user-ID, and set-group-ID when the group may
// execute (without group execute it marks mandatory locking and stays); it
// reports whether the mode changed.
func killSuidSgid(in *peerdrive.Inode) bool {
	old := in.Mode
	in.Mode &^= syscall.S_ISUID
	if in.Mode&syscall.S_IXGRP != 0 {
		in.Mode &^= syscall.S_ISGID
	}
	return in.Mode != old
}

// dropCapability removes the security.capability attribute of ino, if any.
// Best effort: failing to remove it is logged.
func (f *FS) dropCapability(ctx context.Context, ino peerdrive.Ino) {
	if _, err := f.tree.GetXattr(ctx, ino, xattrCapability); err != nil {
		return
	}
	if err := f.tree.RemoveXattr(ctx, ino, xattrCapability); err != nil && !errors.Is(err, tree.ErrNoData) {
		f.log.Warn("security.capability not removed after a write", "ino", ino, "err", err)
	}
}

const xattrCapability = "security.capability"

// buffered returns the bytes of ino's data that are not committed yet,
// holes (chunks of zeros) not counted, as the commit will not store them.
// The file's lock is held for moments by writes and the sealers' hand-overs,
// but through a whole seal by an fsync and through a fetch from peers by a
// write to a chunk not in the cache: a stat does not wait for it past
// countWait, and then takes what the last stat counted, which is what a
// stat of an unchanged file must show again (a sealer's commit moves bytes
// from here to the inode's count, and a stat must not see a different
// st_blocks for it). busy says the file was busy and never counted: n is
// unknown.
func (f *FS) buffered(ino peerdrive.Ino) (n int64, busy bool) {
	st := f.existing(ino)
	if st == nil {
		return 0, false
	}
	deadline := time.Now().Add(countWait)
	for !st.mu.TryLock() {
		if time.Now().After(deadline) {
			if c := st.counted.Load(); c > 0 {
				return c - 1, false
			}
			return 0, true
		}
		time.Sleep(countWait / 20)
	}
	defer st.mu.Unlock()
	for _, m := range []map[int64]*chunkBuf{st.dirty, st.sealing} {
		for _, b := range m {
			if data := (*b.data)[:b.n]; !tree.IsHole(data) {
				n += int64(len(data))
			}
		}
	}
	st.counted.Store(n + 1)
	return n, false
}

// countWait bounds a stat's wait for a busy file's lock (buffered).
const countWait = 2 * time.Millisecond
