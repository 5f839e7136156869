// Command weft-bgp is weft-agent's BGP speaker, GoBGP, in a process of
// its own: weft-agent starts it when BGP is on and drives it over its
// stdin and stdout (internal/bgp/proc), so that an agent with BGP off
// does not pay for GoBGP's memory. It is not run by hand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/proc"
	"github.com/weftnet/weft/internal/bgp/speaker"
)

var version = "dev"

const usage = `weft-bgp is the BGP speaker of weft-agent (GoBGP), in a child process of
its own. weft-agent starts it, beside its own program or from PATH, when
net-conf.json has a BGP object, hands it its configuration on stdin, and
stops it when it stops. It is not run by hand.

Flags:
  -h, --help   print this and exit
  --version    print the version and exit
`

func main() {
	err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var se *proc.StartError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, &se):
		os.Exit(1) // told weft-agent already
	default:
		fmt.Fprintln(os.Stderr, "weft-bgp:", err)
		os.Exit(2)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft-bgp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, usage) }
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: weft-bgp takes its configuration on stdin from weft-agent", fs.Args())
	}
	if *showVersion {
		fmt.Fprintln(stdout, version)
		return nil
	}
	// It stops when the agent does: its stdin closes (graceful restart),
	// or the kernel kills it with the agent (Pdeathsig). SIGTERM and
	// SIGINT sent to the agent's whole group (a service manager, a
	// Ctrl-C) are the agent's to act on: taken here too, they would stop
	// the speaker first and the agent would start it again.
	signal.Ignore(syscall.SIGTERM, os.Interrupt)
	return proc.Serve(context.Background(), stdin, stdout, stderr, func(c bgp.Config, o bgp.Options) (proc.Engine, error) { return speaker.New(c, o) })
}
