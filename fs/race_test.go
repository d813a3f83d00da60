//go:build race

package fs

// raceEnabled is set when the race detector is on: it slows the FUSE server
// several times over, so the longest tests do less.
const raceEnabled = true
