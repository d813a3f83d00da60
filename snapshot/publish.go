package snapshot

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/store"
)

// BodyVersion is the version of the root body format (docs/format.md §14).
const BodyVersion = 1

// PieceRef names a sealed object placed on peers and says where it is.
type PieceRef struct {
	ID  peerdrive.ChunkID `cbor:"1,keyasint"`
	Seg replica.Segment   `cbor:"2,keyasint"`
	Off uint32            `cbor:"3,keyasint"`
	Len uint32            `cbor:"4,keyasint"`
}

// Manifest lists the pieces of one snapshot of the metadata.
type Manifest struct {
	Seq    uint64     `cbor:"1,keyasint"`
	Time   int64      `cbor:"2,keyasint"` // unix ns
	Files  uint64     `cbor:"3,keyasint"`
	Bytes  uint64     `cbor:"4,keyasint"`
	Pieces []PieceRef `cbor:"5,keyasint"`
}

// Info describes a retained snapshot: its figures and where its manifest is.
type Info struct {
	Seq      uint64   `cbor:"1,keyasint"`
	Time     int64    `cbor:"2,keyasint"`
	Files    uint64   `cbor:"3,keyasint"`
	Bytes    uint64   `cbor:"4,keyasint"`
	Manifest PieceRef `cbor:"5,keyasint"`
}

// Body is the sealed content of a root record.
type Body struct {
	Version  int    `cbor:"1,keyasint"`
	DriveKey []byte `cbor:"2,keyasint"` // the drive key, age-wrapped to the recovery key
	// Current is the newest snapshot's manifest, inline, so a restore needs
	// one round of fetches less.
	Current Manifest `cbor:"3,keyasint"`
	History []Info   `cbor:"4,keyasint"` // retained snapshots, newest first
}

// Network is what snapshots need of the peer network.
type Network interface {
	// PublishRoot stores rec on the connected storage peers and in the DHT,
	// returning how many peers took it.
	PublishRoot(ctx context.Context, rec *peerdrive.RootRecord) (int, error)
	// FindRoot returns the newest valid root record of owner.
	FindRoot(ctx context.Context, owner ed25519.PublicKey) (*peerdrive.RootRecord, error)
}

// Sealer seals root bodies; crypto.RootSealer implements it.
type Sealer interface {
	Seal(dst, ad, plain []byte) []byte
	Open(dst, ad, sealed []byte) ([]byte, error)
}

// ErrNoRoot reports that no root record of the drive was found.
var ErrNoRoot = errors.New("no root record of this drive found on the network")

// Retention says which snapshots to keep: the newest Last, one per hour for
// the last Hourly hours and one per day for the last Daily days.
type Retention struct {
	Last, Hourly, Daily int
}

// DefaultRetention keeps 10 + 24 hourly + 30 daily snapshots.
var DefaultRetention = Retention{Last: 10, Hourly: 24, Daily: 30}

// Publisher publishes the drive's tree as signed root records.
type Publisher struct {
	DB        *store.DB
	Keys      *crypto.Keys
	Rep       *replica.Replica
	Net       Network
	Owner     ed25519.PrivateKey
	RootKey   Sealer
	DriveKey  []byte // contents of drive-key.age
	Writer    string // this node's peer ID
	Lease     time.Duration
	Retention Retention
	Stats     func() (files, bytes uint64)
	Log       *slog.Logger

	mu       sync.Mutex
	last     *peerdrive.RootRecord
	body     *Body
	searched bool // the network was asked for the newest root
}

// findTimeout bounds the search for a drive's root record when none is
// known: a drive never published has none, and FindRoot waits for one
// until its context ends.
const findTimeout = 3 * time.Second

// MarkSearched records that the network has been asked for the newest root
// (whether or not one was found).
func (p *Publisher) MarkSearched() {
	p.mu.Lock()
	p.searched = true
	p.mu.Unlock()
}

// Latest returns the newest root record known and its body, asking the
// network once if none is known yet.
func (p *Publisher) Latest(ctx context.Context) (*peerdrive.RootRecord, *Body, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil {
		return p.last, p.body, nil
	}
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	rec, err := p.Net.FindRoot(fctx, p.Owner.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNoRoot, err)
	}
	body, err := OpenBody(p.RootKey, rec)
	if err != nil {
		return nil, nil, err
	}
	p.last, p.body = rec, body
	return rec, body, nil
}

// Known returns the newest root record known here, without asking the
// network (nil if none).
func (p *Publisher) Known() (*peerdrive.RootRecord, *Body) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.body
}

// Adopt makes rec (with its opened body) the newest known root.
func (p *Publisher) Adopt(rec *peerdrive.RootRecord, body *Body) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.searched = true
	if p.last == nil || rec.Seq > p.last.Seq {
		p.last, p.body = rec, body
	}
}

// Snapshots lists the retained snapshots, newest first.
func (p *Publisher) Snapshots(ctx context.Context) ([]Info, error) {
	_, body, err := p.Latest(ctx)
	if err != nil {
		return nil, err
	}
	return body.History, nil
}

// Publish uploads the current tree and publishes a new root record: a new
// snapshot. The caller has flushed and synced the drive first.
func (p *Publisher) Publish(ctx context.Context) (Info, error) {
	// The snapshot's time is when its tree is read: the garbage collector
	// relies on it (docs/gc.md §2.1).
	dumped := time.Now()
	pieces, queued, err := Dump(p.DB)
	if err != nil {
		return Info{}, fmt.Errorf("dump tree: %w", err)
	}
	var ids []peerdrive.ChunkID
	for _, pc := range pieces {
		id, err := p.putObject(pc)
		if err != nil {
			return Info{}, err
		}
		ids = append(ids, id)
	}
	if err := p.Rep.Sync(ctx, nil); err != nil {
		return Info{}, fmt.Errorf("upload tree: %w", err)
	}
	// Chunks that waited for upload when the tree was read are placed now:
	// add their placement records so that the snapshot can read them.
	if late, err := p.lateRecords(queued); err != nil {
		return Info{}, err
	} else if len(late) > 0 {
		id, err := p.putObject(late)
		if err != nil {
			return Info{}, err
		}
		ids = append(ids, id)
		if err := p.Rep.Sync(ctx, nil); err != nil {
			return Info{}, fmt.Errorf("upload tree: %w", err)
		}
	}
	m := Manifest{Time: dumped.UnixNano()}
	if p.Stats != nil {
		m.Files, m.Bytes = p.Stats()
	}
	for _, id := range ids {
		ref, err := p.locate(id)
		if err != nil {
			return Info{}, err
		}
		m.Pieces = append(m.Pieces, ref)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	var prev *Body
	seq := uint64(1)
	if p.last == nil && !p.searched {
		fctx, cancel := context.WithTimeout(ctx, findTimeout)
		if rec, err := p.Net.FindRoot(fctx, p.Owner.Public().(ed25519.PublicKey)); err == nil {
			if b, err := OpenBody(p.RootKey, rec); err == nil {
				p.last, p.body = rec, b
			}
		}
		cancel()
		p.searched = true
	}
	if p.last != nil {
		seq, prev = p.last.Seq+1, p.body
	}
	m.Seq = seq
	mb, err := peerdrive.Marshal(&m)
	if err != nil {
		return Info{}, err
	}
	mid, err := p.putObject(mb)
	if err != nil {
		return Info{}, err
	}
	if err := p.Rep.Sync(ctx, nil); err != nil {
		return Info{}, fmt.Errorf("upload manifest: %w", err)
	}
	mref, err := p.locate(mid)
	if err != nil {
		return Info{}, err
	}
	info := Info{Seq: seq, Time: m.Time, Files: m.Files, Bytes: m.Bytes, Manifest: mref}
	body := &Body{Version: BodyVersion, DriveKey: p.DriveKey, Current: m, History: []Info{info}}
	if prev != nil {
		body.History = append(body.History, prev.History...)
	}
	body.History = p.Retention.Apply(body.History, time.Now())
	rec, err := p.sign(seq, body)
	if err != nil {
		return Info{}, err
	}
	if _, err := p.Net.PublishRoot(ctx, rec); err != nil {
		return Info{}, fmt.Errorf("publish root: %w", err)
	}
	p.last, p.body = rec, body
	return info, nil
}

// Renew republishes the newest root with a later lease and the same tree.
func (p *Publisher) Renew(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		return nil
	}
	rec, err := p.sign(p.last.Seq+1, p.body)
	if err != nil {
		return err
	}
	if _, err := p.Net.PublishRoot(ctx, rec); err != nil {
		return err
	}
	p.last = rec
	return nil
}

func (p *Publisher) sign(seq uint64, body *Body) (*peerdrive.RootRecord, error) {
	b, err := peerdrive.Marshal(body)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rec := &peerdrive.RootRecord{
		Owner:      p.Owner.Public().(ed25519.PublicKey),
		Seq:        seq,
		Time:       now.UnixNano(),
		Writer:     p.Writer,
		LeaseUntil: now.Add(p.Lease).UnixNano(),
	}
	rec.Body = p.RootKey.Seal(nil, bodyAD(rec), b)
	rec.Sign(p.Owner)
	return rec, nil
}

// bodyAD binds a body to its owner and sequence number.
func bodyAD(rec *peerdrive.RootRecord) []byte {
	ad := append([]byte("peerdrive root body v1\x00"), rec.Owner...)
	return fmt.Appendf(ad, "/%d", rec.Seq)
}

// OpenBody verifies rec and opens its body.
func OpenBody(key Sealer, rec *peerdrive.RootRecord) (*Body, error) {
	if err := rec.Verify(); err != nil {
		return nil, err
	}
	b, err := key.Open(nil, bodyAD(rec), rec.Body)
	if err != nil {
		return nil, fmt.Errorf("root record %d: %w", rec.Seq, err)
	}
	var body Body
	if err := unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("root record %d: %w", rec.Seq, err)
	}
	if body.Version != BodyVersion {
		return nil, fmt.Errorf("root record %d: body version %d, want %d", rec.Seq, body.Version, BodyVersion)
	}
	return &body, nil
}

// putObject seals plain as a chunk and queues it for upload, unless the same
// plaintext was stored before.
func (p *Publisher) putObject(plain []byte) (peerdrive.ChunkID, error) {
	dk := p.Keys.DedupHash(plain)
	key := append([]byte{'Y'}, dk[:]...)
	var id peerdrive.ChunkID
	err := p.DB.View(func(tx *store.Txn) error {
		v, err := tx.Get(key)
		if err != nil {
			return err
		}
		copy(id[:], v)
		return nil
	})
	if err == nil {
		if _, _, err := p.Rep.Locate(id); err == nil {
			return id, nil
		}
		if ok, _ := p.hasChunk(id); ok {
			return id, nil
		}
	}
	sealed := p.Keys.SealChunk(nil, plain)
	id = peerdrive.ChunkID(crypto.ContentID(sealed))
	if err := p.Rep.QueueObject(id, sealed); err != nil {
		return id, err
	}
	err = p.DB.Update(64, func(tx *store.Txn) error { return tx.Set(key, id[:]) })
	return id, err
}

func (p *Publisher) hasChunk(id peerdrive.ChunkID) (bool, error) {
	var ok bool
	err := p.DB.View(func(tx *store.Txn) error {
		var err error
		ok, err = tx.HasChunk(id)
		return err
	})
	return ok, err
}

func (p *Publisher) locate(id peerdrive.ChunkID) (PieceRef, error) {
	seg, loc, err := p.Rep.Locate(id)
	if err != nil {
		return PieceRef{}, fmt.Errorf("tree piece %s not placed: %w", id.Short(), err)
	}
	return PieceRef{ID: id, Seg: seg, Off: loc.Off, Len: loc.Len}, nil
}

// lateRecords returns, as one piece, the placement records (L and its G)
// of chunks that were queued when the tree was dumped.
func (p *Publisher) lateRecords(queued [][]byte) ([]byte, error) {
	if len(queued) == 0 {
		return nil, nil
	}
	var recs []Record
	seen := map[string]bool{}
	err := p.DB.View(func(tx *store.Txn) error {
		for _, id := range queued {
			lk := append([]byte{'L'}, id...)
			lv, err := tx.Get(lk)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			recs = append(recs, Record{lk, lv})
			var loc replica.Location
			if err := peerdrive.Unmarshal(lv, &loc); err != nil {
				return err
			}
			gk := segKey(loc.Seg)
			if seen[string(gk)] {
				continue
			}
			seen[string(gk)] = true
			gv, err := tx.Get(gk)
			if err != nil {
				return err
			}
			recs = append(recs, Record{gk, gv})
		}
		return nil
	})
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	sort.Slice(recs, func(i, j int) bool { return string(recs[i].Key) < string(recs[j].Key) })
	var b []byte
	for _, r := range recs {
		b = appendRecordBytes(b, r.Key, r.Value)
	}
	return b, nil
}

func segKey(n uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'G'
	for i := 0; i < 8; i++ {
		k[8-i] = byte(n >> (8 * i))
	}
	return k
}

// Apply keeps the snapshots the policy retains, newest first.
func (r Retention) Apply(h []Info, now time.Time) []Info {
	sort.Slice(h, func(i, j int) bool { return h[i].Seq > h[j].Seq })
	keep := make([]bool, len(h))
	for i := range h {
		if i < r.Last {
			keep[i] = true
		}
	}
	bucket := func(n int, size time.Duration) {
		seen := map[int64]bool{}
		for i, s := range h {
			age := now.Sub(time.Unix(0, s.Time))
			if age < 0 || age >= time.Duration(n)*size {
				continue
			}
			b := s.Time / int64(size)
			if !seen[b] { // the newest snapshot of each bucket
				seen[b] = true
				keep[i] = true
			}
		}
	}
	bucket(r.Hourly, time.Hour)
	bucket(r.Daily, 24*time.Hour)
	var out []Info
	for i, s := range h {
		if keep[i] {
			out = append(out, s)
		}
	}
	return out
}
