package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/internal/netns"
)

// writeConflist writes the node's CNI config: weft-cni, chained with the
// standard portmap plugin when it is installed.
func writeConflist(n *Node) error {
	plugins := []map[string]any{{
		"type":       "weft-cni",
		"subnetFile": n.SubnetFile,
		"dataDir":    filepath.Join(n.Dir, "ipam"),
	}}
	cniVersion := "1.1.0"
	if path, err := invoke.FindInPath("portmap", n.CNIBinDirs); err == nil {
		plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
		// Chained plugins must all speak the list's version: older
		// packaged plugins stop at 1.0.0, which loses STATUS and GC.
		info, err := invoke.GetVersionInfo(context.Background(), path, nil)
		if err != nil {
			return fmt.Errorf("ask %s for its CNI versions: %w", path, err)
		}
		if !slices.Contains(info.SupportedVersions(), cniVersion) {
			cniVersion = "1.0.0"
		}
	}
	doc, err := json.MarshalIndent(map[string]any{"cniVersion": cniVersion, "name": "weft", "plugins": plugins}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.CNIConfDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.CNIConfDir, "10-weft.conflist"), doc, 0o644)
}

// nsExec runs CNI plugins inside a node's namespace, as a container runtime
// on that node would: it is libcni's RawExec with the process started there.
type nsExec struct {
	ns string
}

var _ invoke.Exec = nsExec{}

func (e nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := netns.Command(e.ns, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			var te types.Error
			if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr == nil && te.Code != 0 {
				return nil, &te
			}
		}
		return nil, fmt.Errorf("%s: %w: %s%s", filepath.Base(pluginPath), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (nsExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

func (s *State) cni(n *Node) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	b, err := os.ReadFile(filepath.Join(n.CNIConfDir, "10-weft.conflist"))
	if err != nil {
		return nil, nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", n.CNIConfDir, err)
	}
	c := libcni.NewCNIConfigWithCacheDir(n.CNIBinDirs, filepath.Join(n.Dir, "cni", "cache"), nsExec{ns: n.NS})
	return c, list, nil
}

func (p *Pod) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ID, NetNS: netns.Path(p.NS), IfName: "eth0"}
}

// addPod creates pod j of node n and runs CNI ADD for it.
func (s *State) addPod(ctx context.Context, n *Node, j int) (*Pod, error) {
	name := fmt.Sprintf("%s-p%d", n.Name, j)
	p := &Pod{Name: name, NS: s.Name + "-" + name, Node: n.Name, ID: "lab-" + s.Name + "-" + name}
	s.Pods = append(s.Pods, p)
	if err := s.addNS(p.NS); err != nil {
		return p, err
	}
	c, list, err := s.cni(n)
	if err != nil {
		return p, err
	}
	res, err := c.AddNetworkList(ctx, list, p.rt())
	if err != nil {
		return p, fmt.Errorf("CNI ADD for %s: %w", p.Name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return p, err
	}
	if len(r.IPs) == 0 {
		return p, fmt.Errorf("CNI ADD for %s returned no address", p.Name)
	}
	p.Addr, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	return p, s.save()
}

// delPod runs CNI DEL and removes the pod's namespace.
func (s *State) delPod(ctx context.Context, p *Pod) error {
	n, err := s.node(p.Node)
	if err != nil {
		return err
	}
	c, list, err := s.cni(n)
	if err == nil {
		err = c.DelNetworkList(ctx, list, p.rt())
	}
	if err != nil && !strings.Contains(err.Error(), "no such file") {
		return fmt.Errorf("CNI DEL for %s: %w", p.Name, err)
	}
	return netns.Delete(p.NS)
}
