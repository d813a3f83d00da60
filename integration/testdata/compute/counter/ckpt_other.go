//go:build !wasip1

package main

// checkpoint does nothing outside the sandbox.
func checkpoint(progress float64) {}
