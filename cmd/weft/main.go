// Command weft is weft for people: the lab, the embedded store and its
// administration, the config checker and the CNI installer. Nodes run
// weft-agent; CNI runtimes run weft-cni.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/weftnet/weft/cmd/internal/cmdline"
	"github.com/weftnet/weft/cmd/internal/cniinstall"
	"github.com/weftnet/weft/internal/netns"
)

const usage = `weft — a container network fabric

Usage:
  weft store serve [flags]           run the embedded etcd store
  weft store init [flags]            write the network config to the store
  weft store leases [flags]          list leases
  weft store evict SUBNET [flags]    delete a node's lease
  weft config check FILE             validate a net-conf.json and print it resolved
  weft cni install [flags]           install weft-cni and a conflist atomically
                                     (the DaemonSet's init container)
  weft policy explain|bench ...     NetworkPolicy: why a connection is allowed or
                                     denied; the engine's benchmarks
  weft lab up|down|status|check|exec|agent|node ...
                                     a multi-node cluster in network namespaces
  weft version

Run 'weft COMMAND -h' for a command's flags. The node agent is the
weft-agent binary (weft-agent -h), the CNI plugin is weft-cni.
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
	case errors.Is(err, flag.ErrHelp): // -h, --help: the usage was asked for
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
		return execAgent(args[1:], stderr)
	case "store":
		return runStore(ctx, args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "cni":
		const cniUsage = "usage: weft cni install --plugin FILE --bin-dir DIR --conflist FILE --conf-dir DIR [--conf-name NAME]"
		if len(args) == 2 && (helpFlag(args[1]) || args[1] == "help") {
			fmt.Fprintln(stdout, cniUsage)
			return nil
		}
		if len(args) < 2 || args[1] != "install" {
			return errors.New(cniUsage)
		}
		return cniinstall.Run("weft cni install", args[2:], stdout, stderr)
	case "lab":
		return runLab(ctx, args[1:], stdout, stderr)
	case "policy":
		return runPolicy(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "weft", version)
		return nil
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// helpFlag reports whether arg is a flag that asks for a command's usage
// (as the flag package takes it), which is then printed to stdout, with
// exit status 0.
func helpFlag(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help"
}

// The command files here name cmdline's helpers briefly.
var (
	newFlags  = cmdline.NewFlagSet
	parse     = cmdline.Parse
	newLogger = cmdline.Logger
)

// execAgent keeps `weft agent FLAGS`, as scripts and units written before
// the node agent became its own binary say, working: it replaces this
// process with the weft-agent beside it, with the same flags.
func execAgent(args []string, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("the node agent is the weft-agent binary: run weft-agent with the same flags (%w)", err)
	}
	path := filepath.Join(filepath.Dir(exe), "weft-agent")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("the node agent is the weft-agent binary, which is not beside %s: build it with 'go build -o bin/ ./cmd/...' and run weft-agent with the same flags", exe)
	}
	fmt.Fprintf(stderr, "weft agent: the node agent is its own binary; running %s\n", path)
	return syscall.Exec(path, append([]string{path}, args...), os.Environ())
}
