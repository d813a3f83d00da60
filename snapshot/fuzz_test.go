package snapshot

import (
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/replica"
	"github.com/peerdrive/peerdrive/segment"
)

// FuzzBody: a root body or manifest that opened under the root key but is
// malformed never panics the decoder.
func FuzzBody(f *testing.F) {
	m := Manifest{Seq: 2, Time: 3, Files: 4, Bytes: 5, Pieces: []PieceRef{{
		Seg: replica.Segment{Params: segment.Params{K: 4, M: 2}, Shards: []replica.ShardLoc{{Peer: []byte("p")}}}, Off: 1, Len: 2}}}
	b, _ := peerdrive.Marshal(&Body{Version: BodyVersion, DriveKey: []byte("age"), Current: m, History: []Info{{Seq: 2}}})
	f.Add(b)
	mb, _ := peerdrive.Marshal(&m)
	f.Add(mb)
	f.Fuzz(func(t *testing.T, b []byte) {
		var body Body
		_ = unmarshal(b, &body)
		var man Manifest
		_ = unmarshal(b, &man)
	})
}
