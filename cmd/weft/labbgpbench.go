package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/lab/bgpbench"
	"github.com/weftnet/weft/internal/lab/router"
)

// labBenchBGPSynopsis is the synopsis of `weft lab bench-bgp`.
const labBenchBGPSynopsis = `  weft lab bench-bgp [--rounds N] [--bgp-router bird|frr] [--nodes N] [--settle D] [--backend B]
              lease -> route at the router -> ext's first reply; agents' RSS with BGP on against off
`

func labBenchBGP(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o bgpbench.Options
	fs.IntVar(&o.Rounds, "rounds", 5, "nodes added one at a time to the BGP lab, each timed")
	fs.StringVar(&o.Router, "bgp-router", router.BIRD, "the router: "+strings.Join(router.Kinds(), " or "))
	fs.IntVar(&o.Nodes, "nodes", 2, "nodes of each lab before the adds")
	fs.DurationVar(&o.Settle, "settle", 10*time.Second, "how long after up the agents' memory is read")
	fs.StringVar(&o.Backend, "backend", "", "the data path (default: the lab's)")
	// The synopsis is this command's own, with its flags below it.
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage:\n%s\nflags:\n", labBenchBGPSynopsis)
		fs.PrintDefaults()
	}
	return func(ctx context.Context, _, _ []string, stdout, _ io.Writer) error {
		o.Name = *name
		if o.Name == "weft" {
			// two labs, <base>on and <base>of, under names of this run
			// only; a lab under the default name is left alone
			o.Name = fmt.Sprintf("bb%d", os.Getpid()%10000)
		}
		o.Command = strings.Join(os.Args, " ")
		return bgpbench.Run(ctx, o, stdout)
	}
}
