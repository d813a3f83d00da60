//go:build liar

package compute

// lie: this build is a supplier that corrupts every result it returns, for
// the tests of the vote (go build -tags liar).
const lie = true
