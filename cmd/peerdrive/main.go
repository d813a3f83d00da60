// Command peerdrive is the PeerDrive node: an encrypted drive mounted with
// FUSE, stored on peers. It only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/peerdrive/peerdrive/node"
)

func main() {
	// PEERDRIVE_CPUPROFILE=FILE writes a CPU profile of the whole run, for
	// the benchmarks (bench/).
	if f := os.Getenv("PEERDRIVE_CPUPROFILE"); f != "" {
		if out, err := os.Create(f); err == nil {
			pprof.StartCPUProfile(out)
			defer func() { pprof.StopCPUProfile(); out.Close() }()
		}
	}
	// PEERDRIVE_MEMPROFILE=FILE writes a heap profile when the run ends
	// (after a mount's unmount and flush).
	if f := os.Getenv("PEERDRIVE_MEMPROFILE"); f != "" {
		defer func() {
			if out, err := os.Create(f); err == nil {
				pprof.WriteHeapProfile(out)
				out.Close()
			}
		}()
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "peerdrive: %v\n", err)
		pprof.StopCPUProfile()
		os.Exit(exitCode(err))
	}
}

func run() error { return newRoot().Execute() }

func exitCode(err error) int {
	switch {
	case errors.Is(err, errUsage):
		return 2
	default:
		return 1
	}
}

var errUsage = errors.New("usage")

type globals struct {
	home    string
	verbose bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "peerdrive",
		Short:         "An encrypted, erasure-coded drive stored on your peers' spare disk",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelWarn
			if g.verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return fmt.Errorf("%w: %v", errUsage, err) })
	def := os.Getenv("PEERDRIVE_HOME")
	if def == "" {
		def = node.DefaultHome()
	}
	root.PersistentFlags().StringVar(&g.home, "home", def, "node home directory (env PEERDRIVE_HOME)")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages")
	root.AddCommand(initCmd(g), idCmd(g), mountCmd(g), serveCmd(g), statusCmd(g), syncCmd(g), shutdownCmd(g), snapshotsCmd(g), demoCmd(g))
	root.AddCommand(computeWorkerCmd())
	root.AddCommand(ledgerCommands(g)...) // ledger.go
	root.AddCommand(computeCmd(g))
	root.AddCommand(simulateCmd()) // simulate.go
	return root
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
