// Command agnhost-probe is agnhost with only the two commands the
// NetworkPolicy conformance harness runs: `connect` (cyclonus's probe) and
// `serve-hostname` (the pods' servers), from the same upstream packages
// (k8s.io/kubernetes/test/images/agnhost/...) behind the same cobra root,
// so the probe semantics are upstream's. The full agnhost initialises its
// thirty commands' packages at every start (about 150 ms of CPU here);
// this one about 26 ms, which matters for thousands of probes a run.
package main

import (
	"os"

	"github.com/spf13/cobra"
	"k8s.io/kubernetes/test/images/agnhost/connect"
	servehostname "k8s.io/kubernetes/test/images/agnhost/serve-hostname"
)

func main() {
	rootCmd := &cobra.Command{Use: "app", Version: "development"}
	rootCmd.AddCommand(connect.CmdConnect)
	rootCmd.AddCommand(servehostname.CmdServeHostname)
	if err := rootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
