// Package kube is the lab's Kubernetes control plane (`weft lab up --store
// kube`): a real kube-apiserver in the control namespace on the lab's etcd,
// weft's RBAC from deploy/weft.yaml, the agents' kubeconfig, and the Node
// objects kubelet and kube-controller-manager would create.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/kubeapi"
	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netns"
)

// Kube is the control plane's state, kept in the lab's state file.
type Kube struct {
	Binary     string `json:"binary"`
	PID        int    `json:"pid"`
	Dir        string `json:"dir"` // certificates, keys, kubeconfig, net-conf.json
	URL        string `json:"url"`
	ReadOnly   bool   `json:"readOnly"`
	Kubeconfig string `json:"agentKubeconfig"` // the agents' service-account token
	NetConf    string `json:"netConf"`
	AdminToken string `json:"adminToken"`
}

const kubePort = 6443

// Find locates kube-apiserver: path, else beside weft.
func Find(path, weft string) (string, error) {
	if path == "" {
		path = filepath.Join(filepath.Dir(weft), "kube-apiserver")
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no kube-apiserver at %s: build it with 'tools/kube/build.sh kube-apiserver' (about 10 minutes) or give --kube-apiserver", path)
	}
	return filepath.Abs(path)
}

func (k *Kube) files() *kubeapi.Files {
	return &kubeapi.Files{Dir: k.Dir, CA: filepath.Join(k.Dir, "ca.crt"), Cert: filepath.Join(k.Dir, "apiserver.crt"),
		Key: filepath.Join(k.Dir, "apiserver.key"), SAKey: filepath.Join(k.Dir, "sa.key"),
		Tokens: filepath.Join(k.Dir, "tokens.csv"), AdminToken: k.AdminToken}
}

// admin is a client with the admin token, dialing from the control
// namespace ctl.
// Its writes show as field manager weft-lab, the agents' as weft.
func (k *Kube) admin(ctl string) (*kubeclient.Client, error) {
	return kubeclient.New(k.AdminConfig(ctl))
}

// Control is where the control plane runs.
type Control struct {
	NS   string // the control namespace
	Dir  string // the lab's directory for it (ctl/)
	Etcd string // the store's client URL
}

// Start runs kube-apiserver in the control namespace on the store's etcd,
// installs weft's RBAC from deploy/weft.yaml, and writes the agents'
// kubeconfig (a service-account token bound to the shipped role) and
// net-conf.json (netConf). record is called once the API server's PID is
// known, so that the lab can stop it after any later failure.
func (k *Kube) Start(ctx context.Context, ctl Control, netConf string, record func() error, w io.Writer) error {
	k.Dir = filepath.Join(ctl.Dir, "kube")
	files, err := kubeapi.Prepare(k.Dir, []netip.Addr{topology.StoreIP})
	if err != nil {
		return err
	}
	k.AdminToken = files.AdminToken
	k.URL = kubeapi.URL(topology.StoreIP, kubePort)
	logPath := filepath.Join(ctl.Dir, "kube-apiserver.log")
	pid, err := process.Start(ctl.NS, logPath, nil, append([]string{k.Binary}, files.Args(ctl.Etcd, topology.StoreIP, kubePort)...)...)
	if err != nil {
		return err
	}
	k.PID = pid
	if err := record(); err != nil {
		return err
	}
	alive := func() error {
		if !k.Running() {
			return fmt.Errorf("kube-apiserver exited; its log:\n%s", process.TailFile(logPath, 20))
		}
		return nil
	}
	if err := files.WaitReady(ctx, k.URL, netns.Dialer(ctl.NS), 120*time.Second, alive); err != nil {
		return err
	}
	sa, role, err := k.installRBAC(ctx, ctl.NS)
	if err != nil {
		return err
	}
	if err := k.writeFiles(ctx, ctl.NS, files, sa, netConf); err != nil {
		return err
	}
	mode := "publishing flannel's annotations"
	if k.ReadOnly {
		mode = "read-only"
	}
	fmt.Fprintf(w, "store: kube-apiserver at %s in %s on etcd %s; agents use service account %s/%s with ClusterRole %s (%s)\n",
		k.URL, ctl.NS, ctl.Etcd, sa.Namespace, sa.Name, role, mode)
	return nil
}

// installRBAC creates the DaemonSet's RBAC: namespace, service account,
// the roles and a binding to the role of the chosen mode.
func (k *Kube) installRBAC(ctx context.Context, ctl string) (*corev1.ServiceAccount, string, error) {
	c, err := k.admin(ctl)
	if err != nil {
		return nil, "", err
	}
	objs, err := deploy.Objects()
	if err != nil {
		return nil, "", err
	}
	role := "weft"
	if k.ReadOnly {
		role = "weft-read-only"
	}
	var sa *corev1.ServiceAccount
	rbac := deploy.Only(objs, func(o runtime.Object) bool {
		switch o := o.(type) {
		case *corev1.Namespace, *rbacv1.ClusterRole:
			return true
		case *corev1.ServiceAccount:
			sa = o
			return true
		case *rbacv1.ClusterRoleBinding:
			o.RoleRef.Name = role
			return true
		}
		return false
	})
	if sa == nil {
		return nil, "", fmt.Errorf("deploy/weft.yaml has no ServiceAccount")
	}
	if err := deploy.Create(ctx, c, rbac, false); err != nil {
		return nil, "", err
	}
	return sa, role, nil
}

// writeFiles writes the agents' kubeconfig (a token of sa), the admin's,
// and net-conf.json.
func (k *Kube) writeFiles(ctx context.Context, ctl string, files *kubeapi.Files, sa *corev1.ServiceAccount, netConf string) error {
	c, err := k.admin(ctl)
	if err != nil {
		return err
	}
	tok, err := c.ServiceAccountToken(ctx, sa.Namespace, sa.Name, 48*time.Hour)
	if err != nil {
		return err
	}
	k.Kubeconfig = filepath.Join(k.Dir, "agent.kubeconfig")
	if err := files.WriteKubeconfig(k.Kubeconfig, k.URL, tok); err != nil {
		return err
	}
	if err := files.WriteKubeconfig(filepath.Join(k.Dir, "admin.kubeconfig"), k.URL, k.AdminToken); err != nil {
		return err
	}
	k.NetConf = filepath.Join(k.Dir, "net-conf.json")
	return os.WriteFile(k.NetConf, []byte(netConf), 0o644)
}

// Running reports whether the lab's kube-apiserver runs.
func (k *Kube) Running() bool { return process.Ours(k.PID, k.certDirArg()) }

// Stop ends the API server.
func (k *Kube) Stop() error { return process.Stop(k.PID, k.certDirArg(), 15*time.Second) }

// certDirArg is the argument that tells the lab's API server from others.
func (k *Kube) certDirArg() string { return "--cert-dir=" + k.Dir }

// PodNetwork is a cluster network Nodes get a podCIDR of, SubnetLen long.
type PodNetwork struct {
	Prefix    netip.Prefix
	SubnetLen int
}

// RegisterNode creates the Node object of a lab node as kubelet and
// kube-controller-manager would: its InternalIPs addrs (one per family)
// and a free podCIDR of each network in nets (podCIDRs in nets' order,
// IPv4 first in a dual-stack cluster), which it returns, with the
// annotations ann added (the node's BGP settings, as an administrator
// sets them). A Node that exists keeps its podCIDRs.
func (k *Kube) RegisterNode(ctx context.Context, ctl, name string, addrs []netip.Addr, nets []PodNetwork, ann map[string]string) ([]string, error) {
	c, err := k.admin(ctl)
	if err != nil {
		return nil, err
	}
	list := &corev1.NodeList{}
	if err := c.List(ctx, kubeclient.Nodes, "", list); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	used := map[string]bool{}
	var podCIDRs []string
	for _, o := range list.Items {
		for _, p := range append([]string{o.Spec.PodCIDR}, o.Spec.PodCIDRs...) {
			used[p] = true
		}
		if o.Name == name {
			podCIDRs = o.Spec.PodCIDRs
		}
	}
	if len(podCIDRs) == 0 {
		for _, n := range nets {
			p := freePodCIDR(n, used)
			if p == "" {
				return nil, fmt.Errorf("node %s: no free podCIDR /%d left in %s", name, n.SubnetLen, n.Prefix)
			}
			podCIDRs = append(podCIDRs, p)
		}
	}
	// The annotations kubelet sets when it registers a node (flanneld
	// panics on a Node that has no annotations at all).
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name},
		Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Spec: corev1.NodeSpec{PodCIDR: podCIDRs[0], PodCIDRs: podCIDRs}}
	for k, v := range ann {
		node.Annotations[k] = v
	}
	if err := c.Create(ctx, kubeclient.Nodes, node, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) && len(ann) > 0 {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
		if err := c.Patch(ctx, kubeclient.Nodes, "", name, types.StrategicMergePatchType, patch, ""); err != nil {
			return nil, fmt.Errorf("annotate node %s: %w", name, err)
		}
	} else if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create node %s: %w", name, err)
	}
	var na []corev1.NodeAddress
	for _, a := range addrs {
		na = append(na, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"addresses": append(na,
		corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})}})
	if err := c.Patch(ctx, kubeclient.Nodes, "", name, types.StrategicMergePatchType, patch, "status"); err != nil {
		return nil, fmt.Errorf("set the addresses of node %s: %w", name, err)
	}
	return podCIDRs, nil
}

// freePodCIDR is the first subnet of n after its first (flannel's
// SubnetMin) that no Node has, among its first 256, or "" when all are
// taken.
func freePodCIDR(n PodNetwork, used map[string]bool) string {
	count := uint64(1) << min(n.SubnetLen-n.Prefix.Bits(), 8)
	for i := uint64(1); i < count; i++ {
		p := netip.PrefixFrom(config.NthSubnet(n.Prefix.Masked().Addr(), n.SubnetLen, i), n.SubnetLen).String()
		if !used[p] {
			return p
		}
	}
	return ""
}

// DeleteNode deletes a node's Node object: the other nodes drop its
// routes. A Node that is gone already is success.
func (k *Kube) DeleteNode(ctx context.Context, ctl, name string) error {
	c, err := k.admin(ctl)
	if err != nil {
		return err
	}
	if err := c.Delete(ctx, kubeclient.Nodes, "", name); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	return nil
}

// Summary is one line on the control plane for `lab status`.
func (k *Kube) Summary() string {
	state := "running"
	if !k.Running() {
		state = "NOT running"
	}
	mode := "agents publish flannel's annotations"
	if k.ReadOnly {
		mode = "agents read-only"
	}
	return fmt.Sprintf("kube-apiserver %s (pid %d, %s; %s); admin kubeconfig %s",
		k.URL, k.PID, state, mode, filepath.Join(k.Dir, "admin.kubeconfig"))
}
