//go:build wasip1

package main

// checkpoint commits /ckpt (docs/compute.md, "Sandbox").
//
//go:wasmimport peerdrive checkpoint
func checkpoint(progress float64)
