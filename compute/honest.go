//go:build !liar

package compute

// lie makes a supplier corrupt every result it returns; only the liar build
// tag (tests of the vote) sets it.
const lie = false
