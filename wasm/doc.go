// Package wasm runs compute units, WebAssembly (WASI preview 1) modules, in a
// sandbox: wazero in compiled mode, no host filesystem, capped memory and
// output, a deterministic clock and random source, and checkpoints the guest
// commits through the host function peerdrive.checkpoint. Start runs a unit in
// its own niced worker process so a crash or runaway unit cannot take the
// node down. The guest ABI and the worker's pipe protocol are specified in
// docs/compute.md, section "Sandbox".
package wasm
