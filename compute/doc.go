// Package compute runs shared computing jobs: a requester splits a job into
// WebAssembly units, assigns them to supplier peers over the libp2p protocol
// /peerdrive/compute/1.0.0 with leases and heartbeats, moves them (resuming
// from their last checkpoint) when a supplier goes silent, and validates
// replicated results by majority vote. A supplier runs the units it accepts
// in sandboxed worker processes (package wasm) inside the hours it offers.
// docs/compute.md specifies the protocol, the stored job records and the
// scheduling rules.
package compute
