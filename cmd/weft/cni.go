package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/internal/cni"
)

// runCNI is `weft cni install`: the DaemonSet's init container puts
// weft-cni and the conflist on the host, each by an atomic rename.
func runCNI(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "install" {
		return errors.New("usage: weft cni install --plugin FILE --bin-dir DIR --conflist FILE --conf-dir DIR [--conf-name NAME]")
	}
	fs := newFlags("weft cni install", stderr)
	plugin := fs.String("plugin", "/opt/weft/weft-cni", "the weft-cni binary to install")
	binDir := fs.String("bin-dir", "/opt/cni/bin", "the host's CNI plugin directory")
	conflist := fs.String("conflist", "/etc/kube-flannel/cni-conf.json", "the network configuration list to install")
	confDir := fs.String("conf-dir", "/etc/cni/net.d", "the host's CNI configuration directory")
	confName := fs.String("conf-name", "10-weft.conflist", "file name of the installed conflist")
	if err := parse(fs, args[1:]); err != nil {
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
