//go:build freeloader

package net

// Built with -tags freeloader, the node is a freeloader: its shard server
// refuses every PUT, so it holds nothing for anyone while it stores its own
// data on others. Only the integration tests build it (docs/ledger.md §6).
func init() { refuseAllPuts = true }
