package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/peerdrive/peerdrive/wasm"
)

// computeWorkerCmd is the hidden command a node re-executes itself with to
// run one compute unit in its own niced process (wasm.Start). It speaks the
// worker pipe protocol of docs/compute.md on stdin and stdout.
func computeWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "compute-worker",
		Short:  "Run one compute unit (internal; started by the node)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := wasm.WorkerMain(os.Stdin, os.Stdout); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}
