// Command weft is the node agent, the embedded store, the config checker
// and the lab, in one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/weftnet/weft/internal/netns"
)

const usage = `weft — a container network fabric

Usage:
  weft agent [flags]                 run the node agent
  weft store serve [flags]           run the embedded etcd store
  weft store init [flags]            write the network config to the store
  weft store leases [flags]          list leases
  weft store evict SUBNET [flags]    delete a node's lease
  weft config check FILE             validate a net-conf.json and print it resolved
  weft cni install [flags]           install weft-cni and a conflist atomically
                                     (the DaemonSet's init container)
  weft lab up|down|status|check|exec|agent|node ...
                                     a multi-node cluster in network namespaces
  weft version

Run 'weft COMMAND -h' for a command's flags.
`

var version = "dev"

func main() {
	netns.HandleExec()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(int(ee))
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "weft: %v\n", err)
		os.Exit(1)
	}
}

// exitError is a plain exit status, for commands that already said why.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	switch args[0] {
	case "agent":
		return runAgent(ctx, args[1:], stderr)
	case "store":
		return runStore(ctx, args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "cni":
		return runCNI(args[1:], stdout, stderr)
	case "lab":
		return runLab(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "weft", version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// newFlags returns a flag set whose flags may also be set from the
// environment: WEFT_<NAME> or, as flannel reads them, FLANNELD_<NAME>.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args, allowing flags after positional arguments (kept in
// order as fs.Args()), then fills every flag not given on the command line
// from the environment.
func parse(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if args = fs.Args(); len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := fs.Parse(append([]string{"--"}, pos...)); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		for _, prefix := range []string{"WEFT_", "FLANNELD_"} {
			if v, ok := os.LookupEnv(prefix + env); ok {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%s%s=%q: %w", prefix, env, v, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
