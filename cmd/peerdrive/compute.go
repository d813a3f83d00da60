package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerdrive/peerdrive/compute"
	"github.com/peerdrive/peerdrive/node"
)

// computeCmd is `peerdrive compute …`: jobs of WebAssembly units run by
// peers (docs/compute.md). Every subcommand talks to the home's running node.
func computeCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "compute",
		Short: "Run WebAssembly jobs on peers' spare CPU: submit, status, results, cancel, reassign",
	}
	c.AddCommand(computeSubmitCmd(g), computeStatusCmd(g), computeResultsCmd(g), computeCancelCmd(g), computeReassignCmd(g))
	return c
}

func computeSubmitCmd(g *globals) *cobra.Command {
	var inputs []string
	var spec compute.Spec
	c := &cobra.Command{
		Use:   "submit UNIT.wasm [--input FILE]… [--units N] [--deadline D] [--replicas R] [--urgency X] [-- ARGS…]",
		Short: "Submit a job; print its ID alone on the last line",
		Long: "Submit a job of N units of a WebAssembly (WASI preview 1) module. Unit i gets ARGS and\n" +
			"PEERDRIVE_UNIT=i; each --input FILE appears read-only as /in/BASENAME. Every unit runs on\n" +
			"R different suppliers and their results must agree (majority). --deadline bounds one\n" +
			"unit's run time on a supplier; --urgency X (1..100) puts the job ahead of others and\n" +
			"pays X times the CPU time in credit.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || dash == 0 {
				return fmt.Errorf("%w: one module, then -- and its arguments", errUsage)
			}
			spec.Args = args[1:]
			module, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			in := map[string][]byte{}
			for _, f := range inputs {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				name := filepath.Base(f)
				if _, dup := in[name]; dup {
					return fmt.Errorf("%w: two inputs named %s", errUsage, name)
				}
				in[name] = b
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			id, err := node.Dial(g.home).ComputeSubmit(ctx, module, in, spec)
			if errors.Is(err, compute.ErrBadJob) {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "submitted %d units × %d replicas; follow with: peerdrive compute status %s\n", max(spec.Units, 1), max(spec.Replicas, 1), id)
			fmt.Println(id)
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&inputs, "input", nil, "input file, read-only under /in (repeatable)")
	f.IntVar(&spec.Units, "units", 1, "number of units; unit i gets PEERDRIVE_UNIT=i")
	f.DurationVar(&spec.Deadline, "deadline", compute.DefaultDeadline, "run time one unit may take on a supplier")
	f.IntVar(&spec.Replicas, "replicas", 1, "run each unit on this many different suppliers and compare")
	f.Float64Var(&spec.Urgency, "urgency", 1, "priority factor 1..100, paid in credit (CPU time × X)")
	f.Var(sizeValue{&spec.Memory}, "memory", "memory limit of one unit (default 256MiB)")
	return c
}

func computeStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status JOB",
		Short: "Show every unit of a job: state, supplier, progress, last checkpoint, retries",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := node.Dial(g.home).ComputeStatus(ctx, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(st)
			}
			fmt.Printf("job %s: %s (%d units × %d replicas)\n", st.ID, st.State, len(st.Units), st.Replicas)
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "UNIT\tSTATE\tSUPPLIER\tPROGRESS\tCHECKPOINT\tRETRIES\tREASON")
			for _, u := range st.Units {
				sup := u.Supplier
				if sup == "" {
					sup = "-"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f%%\t%d\t%d\t%s\n", u.Index, u.State, sup, 100*u.Progress, u.CkptSeq, u.Retries, u.Reason)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}

func computeResultsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "results JOB DIR",
		Short: "Write unit i's stdout, /out files and stderr (if any) under DIR/i/",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := node.Dial(g.home).ComputeResults(ctx, args[0])
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range res {
				dir := filepath.Join(args[1], strconv.Itoa(r.Index))
				if r.State != compute.StateDone {
					failed++
					fmt.Fprintf(os.Stderr, "unit %d %s: %s\n", r.Index, r.State, r.Reason)
					continue
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, "stdout"), r.Stdout, 0o644); err != nil {
					return err
				}
				if len(r.Stderr) > 0 {
					if err := os.WriteFile(filepath.Join(dir, "stderr"), r.Stderr, 0o644); err != nil {
						return err
					}
				}
				for name, b := range r.Out {
					p := filepath.Join(dir, filepath.FromSlash(name))
					if !strings.HasPrefix(p, dir+string(filepath.Separator)) || name == "stdout" || name == "stderr" {
						fmt.Fprintf(os.Stderr, "unit %d: output %q skipped\n", r.Index, name)
						continue
					}
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						return err
					}
					if err := os.WriteFile(p, b, 0o644); err != nil {
						return err
					}
				}
			}
			fmt.Printf("%d units written to %s\n", len(res)-failed, args[1])
			if failed > 0 {
				return fmt.Errorf("%d of %d units failed", failed, len(res))
			}
			return nil
		},
	}
}

func computeCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel JOB",
		Short: "Stop a job: its running units are cancelled on their suppliers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return node.Dial(g.home).ComputeCancel(ctx, args[0])
		},
	}
}

func computeReassignCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reassign JOB UNIT",
		Short: "Move a unit to other suppliers; it resumes from its last checkpoint",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("%w: UNIT must be a number", errUsage)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return node.Dial(g.home).ComputeReassign(ctx, args[0], u)
		},
	}
}

// computeWindows is --compute-window: repeatable, each checked as given.
type computeWindows struct{ v *[]string }

func (w computeWindows) String() string {
	if w.v == nil {
		return ""
	}
	return strings.Join(*w.v, "; ")
}

func (w computeWindows) Set(s string) error {
	if _, err := compute.ParseWindow(s); err != nil {
		return err
	}
	*w.v = append(*w.v, s)
	return nil
}

func (computeWindows) Type() string { return "window" }
