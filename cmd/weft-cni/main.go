// Command weft-cni is weft's CNI plugin. It links neither the etcd client
// nor client-go: the agent hands it the node's subnet through subnet.env.
//
// `weft-cni install [flags]` installs the plugin itself and a conflist on
// the node, each by an atomic rename (the DaemonSet's init container). A
// CNI runtime executes plugins without arguments, so the word is never
// mistaken for a runtime's call.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/cmd/internal/cniinstall"
	"github.com/weftnet/weft/internal/cni"
)

const usage = `weft-cni — weft's CNI plugin: connects pods to the node's bridge with
addresses from the node's subnet, which the agent writes to subnet.env.

Usage:
  weft-cni                    as a CNI runtime runs it: CNI_COMMAND (ADD, DEL, CHECK,
                              STATUS, GC, VERSION) and the others in the environment,
                              the network config on stdin
  weft-cni install [flags]    install the plugin and a conflist (weft-cni install -h)
`

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "-help") {
		fmt.Print(usage)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "install" {
		err := cniinstall.Run("weft-cni install", os.Args[2:], os.Stdout, os.Stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp): // -h: the usage was asked for
			return
		default:
			fmt.Fprintf(os.Stderr, "weft-cni install: %v\n", err)
			os.Exit(1)
		}
	}
	// skel checks that CNI_NETNS is not the plugin's own namespace only
	// after ADD or DEL has run: an ADD there has already printed its result
	// and made its veth, and a DEL there can never succeed. weft-cni checks
	// it itself, before touching anything (cni.Add), so skel's late check
	// is turned off, as a runtime would with CNI_NETNS_OVERRIDE.
	os.Setenv("CNI_NETNS_OVERRIDE", "1")
	skel.PluginMainFuncs(cni.Funcs, version.All, "weft-cni: connects pods to the node bridge with addresses from the weft subnet")
}
