package snapshot

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/peerdrive/peerdrive"
)

// Bodies and manifests nest deeper than the tree's records (body →
// manifest → piece → segment → shard), so they get their own limits.
var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		MaxNestedLevels:  12,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      64,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		UTF8:             cbor.UTF8DecodeInvalid, // names are bytes (docs/format.md §5)
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", peerdrive.ErrMalformed, err)
	}
	return nil
}
