package snapshot

import (
	"context"
	"fmt"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/store"
)

// Fetcher rebuilds segments from peers (replica.Replica implements it).
type Fetcher interface {
	FetchSegment(ctx context.Context, rec replica.Segment) ([]byte, error)
}

// FetchObject fetches a placed object and opens it with the drive's keys.
func FetchObject(ctx context.Context, f Fetcher, keys *crypto.Keys, ref PieceRef) ([]byte, error) {
	seg, err := f.FetchSegment(ctx, ref.Seg)
	if err != nil {
		return nil, fmt.Errorf("tree piece %s: %w", ref.ID.Short(), err)
	}
	if int(ref.Off)+int(ref.Len) > len(seg) {
		return nil, fmt.Errorf("tree piece %s: past its segment's end: %w", ref.ID.Short(), store.ErrCorrupt)
	}
	sealed := seg[ref.Off : ref.Off+ref.Len]
	if peerdrive.ChunkID(crypto.ContentID(sealed)) != ref.ID {
		return nil, fmt.Errorf("tree piece %s: rebuilt bytes do not match: %w", ref.ID.Short(), store.ErrCorrupt)
	}
	plain, err := keys.OpenChunk(nil, sealed)
	if err != nil {
		return nil, fmt.Errorf("tree piece %s: %w", ref.ID.Short(), err)
	}
	return plain, nil
}

// LoadManifest fetches every piece of m and writes their records into db
// (an empty store), calling progress after each piece.
func LoadManifest(ctx context.Context, f Fetcher, keys *crypto.Keys, m *Manifest, db *store.DB, progress func(done, total int)) error {
	pieces := make([][]byte, 0, len(m.Pieces))
	for i, ref := range m.Pieces {
		b, err := FetchObject(ctx, f, keys, ref)
		if err != nil {
			return err
		}
		pieces = append(pieces, b)
		if progress != nil {
			progress(i+1, len(m.Pieces))
		}
	}
	_, err := Load(db, pieces)
	return err
}

// FetchManifest fetches the manifest of a retained snapshot.
func FetchManifest(ctx context.Context, f Fetcher, keys *crypto.Keys, info Info) (*Manifest, error) {
	b, err := FetchObject(ctx, f, keys, info.Manifest)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("snapshot %d manifest: %w", info.Seq, err)
	}
	if m.Seq != info.Seq {
		return nil, fmt.Errorf("snapshot %d manifest says %d: %w", info.Seq, m.Seq, store.ErrCorrupt)
	}
	return &m, nil
}
