// Package pod is the lab's container runtime: it writes a node's CNI
// configuration and runs the CNI plugins (ADD, CHECK, DEL) for pod
// namespaces through libcni, inside the node's namespace, as a runtime on
// that node would.
package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
)

// Pod is a pod namespace attached to a node through CNI, with the
// identity Kubernetes gives a pod (namespace, labels, container ports)
// and the processes that serve its ports.
type Pod struct {
	Name string `json:"name"` // n1-p1
	NS   string `json:"netns"`
	Node string `json:"node"`
	// Addr is its first address (Kubernetes' podIP): IPv4 in an ipv4 or
	// dual lab, IPv6 in an ipv6 lab; Addrs all of them, one per family
	// (podIPs).
	Addr  netip.Addr   `json:"addr"`
	Addrs []netip.Addr `json:"addrs,omitempty"`
	ID    string       `json:"containerID"`
	// Namespace is the pod's Kubernetes namespace; "" is "default" (a lab
	// state written before pods had one).
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Ports     []Port            `json:"ports,omitempty"`
	// Procs run in the pod's namespace: its servers (`weft lab serve`,
	// or commands such as agnhost serve-hostname); stopped when the pod
	// is removed.
	Procs []process.Handle `json:"procs,omitempty"`
	// Serves: one of Procs is `weft lab serve`, answering Key().
	Serves bool `json:"serves,omitempty"`
	// Registered: the lab created (or bound) the pod's Pod object and
	// deletes it with the pod.
	Registered bool `json:"registered,omitempty"`
}

// DefaultNamespace is the namespace of a pod that names none.
const DefaultNamespace = "default"

// KubeNamespace is p's namespace, "default" when it names none.
func (p *Pod) KubeNamespace() string {
	if p.Namespace == "" {
		return DefaultNamespace
	}
	return p.Namespace
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.KubeNamespace() + "/" + p.Name }

// Display is how the lab shows p: its name in the default namespace,
// "namespace/name" elsewhere.
func (p *Pod) Display() string {
	if p.KubeNamespace() == DefaultNamespace {
		return p.Name
	}
	return p.Key()
}

// Is reports whether t names p: its name (in the default namespace), its
// "namespace/name", or its network namespace.
func (p *Pod) Is(t string) bool {
	return t == p.NS || t == p.Key() || (t == p.Name && p.KubeNamespace() == DefaultNamespace)
}

// AllAddrs are p's addresses, one per family (a state written before pods
// had Addrs: Addr alone).
func (p *Pod) AllAddrs() []netip.Addr {
	if len(p.Addrs) == 0 {
		return []netip.Addr{p.Addr}
	}
	return p.Addrs
}

// AddrOf is p's address of the family is6 says, or the zero Addr.
func (p *Pod) AddrOf(is6 bool) netip.Addr {
	for _, a := range p.AllAddrs() {
		if a.Is6() == is6 {
			return a
		}
	}
	return netip.Addr{}
}

// Runtime is one node's CNI set-up.
type Runtime struct {
	NS         string   // the node's namespace, where plugins run
	Dir        string   // the node's directory: IPAM data and the CNI cache
	SubnetFile string   // the agent's subnet.env, which weft-cni reads
	ConfDir    string   // holds 10-weft.conflist
	BinDirs    []string // where plugins are found
}

// conflist is the name of the configuration file in ConfDir.
const conflist = "10-weft.conflist"

// BinDirs are where a node's plugins come from: weft-cni beside the weft
// binary, then the standard plugins.
func BinDirs(weft string) []string {
	return []string{filepath.Dir(weft), "/usr/lib/cni", "/opt/cni/bin"}
}

// WriteConflist writes the node's CNI config: weft-cni, chained with the
// standard portmap plugin when it is installed.
func (r Runtime) WriteConflist(ctx context.Context) error {
	plugins := []map[string]any{{
		"type":       "weft-cni",
		"subnetFile": r.SubnetFile,
		"dataDir":    filepath.Join(r.Dir, "ipam"),
	}}
	cniVersion := "1.1.0"
	if path, err := invoke.FindInPath("portmap", r.BinDirs); err == nil {
		plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
		// Chained plugins must all speak the list's version: older
		// packaged plugins stop at 1.0.0, which loses STATUS and GC.
		info, err := invoke.GetVersionInfo(ctx, path, nil)
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
	if err := os.MkdirAll(r.ConfDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.ConfDir, conflist), doc, 0o644)
}

// cni loads the node's conflist and a libcni client that runs plugins in
// the node's namespace.
func (r Runtime) cni() (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	b, err := os.ReadFile(filepath.Join(r.ConfDir, conflist))
	if err != nil {
		return nil, nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r.ConfDir, err)
	}
	c := libcni.NewCNIConfigWithCacheDir(r.BinDirs, filepath.Join(r.Dir, "cni", "cache"), nsExec{ns: r.NS})
	return c, list, nil
}

func (p *Pod) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ID, NetNS: netns.Path(p.NS), IfName: "eth0"}
}

// Add runs CNI ADD for p, whose namespace exists, and sets p.Addrs to
// the addresses the plugins gave it (IPv4 first) and p.Addr to the first.
func (r Runtime) Add(ctx context.Context, p *Pod) error {
	c, list, err := r.cni()
	if err != nil {
		return err
	}
	res, err := c.AddNetworkList(ctx, list, p.rt())
	if err != nil {
		return fmt.Errorf("CNI ADD for %s: %w", p.Name, err)
	}
	cr, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("CNI ADD for %s: %w", p.Name, err)
	}
	p.Addrs = resultAddrs(cr)
	if len(p.Addrs) == 0 {
		return fmt.Errorf("CNI ADD for %s returned no address", p.Name)
	}
	p.Addr = p.Addrs[0]
	return nil
}

// Check runs CNI CHECK for p, as a runtime does: its interface, address
// and routes are still what ADD made.
func (r Runtime) Check(ctx context.Context, p *Pod) error {
	c, list, err := r.cni()
	if err != nil {
		return err
	}
	return c.CheckNetworkList(ctx, list, p.rt())
}

// Del runs CNI DEL for p. A node whose CNI config is gone has nothing to
// delete: that is success.
func (r Runtime) Del(ctx context.Context, p *Pod) error {
	c, list, err := r.cni()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = c.DelNetworkList(ctx, list, p.rt())
	}
	if err != nil {
		return fmt.Errorf("CNI DEL for %s: %w", p.Name, err)
	}
	return nil
}

// resultAddrs are the addresses of a CNI result, IPv4 before IPv6, one
// per family (the first the result lists).
func resultAddrs(r *current.Result) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, ip := range r.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return append(v4[:min(len(v4), 1)], v6[:min(len(v6), 1)]...)
}
