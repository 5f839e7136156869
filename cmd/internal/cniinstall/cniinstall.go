// Package cniinstall is the command that puts weft-cni and its conflist on
// a node, each by an atomic rename, so that kubelet never sees half a file:
// `weft-cni install` in the DaemonSet's init container, and `weft cni
// install` for people.
package cniinstall

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/cmd/internal/cmdline"
	"github.com/weftnet/weft/internal/cni"
)

// Run parses the flags in args and installs; name is the command, for
// messages ("weft-cni install"). The conflist is checked before anything
// is installed.
func Run(name string, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.NewFlagSet(name, stderr)
	plugin := fs.String("plugin", "/opt/weft/weft-cni", "the weft-cni binary to install")
	binDir := fs.String("bin-dir", "/opt/cni/bin", "the host's CNI plugin directory")
	conflist := fs.String("conflist", "/etc/kube-flannel/cni-conf.json", "the network configuration list to install")
	confDir := fs.String("conf-dir", "/etc/cni/net.d", "the host's CNI configuration directory")
	confName := fs.String("conf-name", "10-weft.conflist", "file name of the installed conflist")
	if err := cmdline.Parse(fs, args); err != nil {
		return err
	}
	doc, err := os.ReadFile(*conflist)
	if err != nil {
		return err
	}
	if err := cni.CheckConflist(doc); err != nil {
		return fmt.Errorf("%s: %w", *conflist, err)
	}
	if err := cni.Install(*plugin, *binDir, "weft-cni", 0o755); err != nil {
		return err
	}
	if err := cni.Install(*conflist, *confDir, *confName, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "installed %s and %s\n", filepath.Join(*binDir, "weft-cni"), filepath.Join(*confDir, *confName))
	return nil
}
