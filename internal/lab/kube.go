package lab

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
	"github.com/weftnet/weft/internal/kubeapi"
	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/netns"
)

// Kube is the lab's Kubernetes control plane (`lab up --store kube`): a
// real kube-apiserver in the control namespace, on the store's etcd.
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

// findKubeAPIServer locates kube-apiserver: path, else beside weft.
func findKubeAPIServer(path, weft string) (string, error) {
	if path == "" {
		path = filepath.Join(filepath.Dir(weft), "kube-apiserver")
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no kube-apiserver at %s: build it with '(cd tools/kube && go build -o ../../bin/kube-apiserver ./kube-apiserver)' (about 10 minutes) or give --kube-apiserver", path)
	}
	return filepath.Abs(path)
}

func (k *Kube) files() *kubeapi.Files {
	return &kubeapi.Files{Dir: k.Dir, CA: filepath.Join(k.Dir, "ca.crt"), Cert: filepath.Join(k.Dir, "apiserver.crt"),
		Key: filepath.Join(k.Dir, "apiserver.key"), SAKey: filepath.Join(k.Dir, "sa.key"),
		Tokens: filepath.Join(k.Dir, "tokens.csv"), AdminToken: k.AdminToken}
}

// admin is a client with the admin token, dialing from the control
// namespace.
func (s *State) admin() (*kubeclient.Client, error) {
	cfg := s.Kube.files().Config(s.Kube.URL, s.Kube.AdminToken, netns.Dialer(s.Ctl.NS))
	cfg.UserAgent = "weft-lab" // its writes show as field manager weft-lab, the agents' as weft
	return kubeclient.New(cfg)
}

// startKube runs kube-apiserver in the control namespace on the store's
// etcd, installs weft's RBAC from deploy/weft.yaml, and writes the agents'
// kubeconfig (a service-account token bound to the shipped role) and
// net-conf.json.
func (s *State) startKube(ctx context.Context, w io.Writer) error {
	k := s.Kube
	k.Dir = filepath.Join(dir(s.Name), "ctl", "kube")
	files, err := kubeapi.Prepare(k.Dir, []netip.Addr{storeIP})
	if err != nil {
		return err
	}
	k.AdminToken = files.AdminToken
	k.URL = kubeapi.URL(storeIP, kubePort)
	logPath := filepath.Join(dir(s.Name), "ctl", "kube-apiserver.log")
	pid, err := start(s.Ctl.NS, logPath, append([]string{k.Binary}, files.Args(s.Endpoint, storeIP, kubePort)...)...)
	if err != nil {
		return err
	}
	k.PID = pid
	if err := s.save(); err != nil {
		return err
	}
	alive := func() error {
		if !ours(pid, "--cert-dir="+k.Dir) {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("kube-apiserver exited; its log:\n%s", tail(string(b), 20))
		}
		return nil
	}
	if err := files.WaitReady(ctx, k.URL, netns.Dialer(s.Ctl.NS), 120*time.Second, alive); err != nil {
		return err
	}
	c, err := s.admin()
	if err != nil {
		return err
	}
	// The DaemonSet's RBAC: namespace, service account, the roles and a
	// binding to the role of the chosen mode.
	objs, err := deploy.Objects()
	if err != nil {
		return err
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
	if err := deploy.Create(ctx, c, rbac, false); err != nil {
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
	if err := os.WriteFile(k.NetConf, []byte(s.netConf()), 0o644); err != nil {
		return err
	}
	mode := "publishing flannel's annotations"
	if k.ReadOnly {
		mode = "read-only"
	}
	fmt.Fprintf(w, "store: kube-apiserver at %s in %s on etcd %s; agents use service account %s/%s with ClusterRole %s (%s)\n",
		k.URL, s.Ctl.NS, s.Endpoint, sa.Namespace, sa.Name, role, mode)
	return s.save()
}

// netConf is the lab's net-conf.json.
func (s *State) netConf() string {
	b := map[string]any{"Type": s.Backend}
	if s.DirectRouting {
		b["DirectRouting"] = true
	}
	doc, _ := json.Marshal(map[string]any{"Network": network, "Backend": b})
	return string(doc) + "\n"
}

// registerNode creates n's Node object as kubelet and
// kube-controller-manager would: its InternalIP and a free /24 podCIDR.
func (s *State) registerNode(ctx context.Context, n *Node) error {
	c, err := s.admin()
	if err != nil {
		return err
	}
	used := map[string]bool{}
	list := &corev1.NodeList{}
	if err := c.List(ctx, kubeclient.Nodes, "", list); err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, o := range list.Items {
		used[o.Spec.PodCIDR] = true
	}
	net := netip.MustParsePrefix(network)
	for i := 1; i < 256 && n.PodCIDR == ""; i++ {
		a := net.Addr().As4()
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{a[0], a[1], byte(i), 0}), 24).String()
		if !used[p] {
			n.PodCIDR = p
		}
	}
	// The annotations kubelet sets when it registers a node (flanneld
	// panics on a Node that has no annotations at all).
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name},
		Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR}}}
	if err := c.Create(ctx, kubeclient.Nodes, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", n.Name, err)
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"addresses": []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.Addr.String()}, {Type: corev1.NodeHostName, Address: n.Name}}}})
	if err := c.Patch(ctx, kubeclient.Nodes, "", n.Name, types.StrategicMergePatchType, patch, "status"); err != nil {
		return fmt.Errorf("set the addresses of node %s: %w", n.Name, err)
	}
	return s.save()
}

// deleteNode deletes n's Node object: the other nodes drop its routes.
func (s *State) deleteNode(ctx context.Context, n *Node) error {
	c, err := s.admin()
	if err != nil {
		return err
	}
	if err := c.Delete(ctx, kubeclient.Nodes, "", n.Name); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete node %s: %w", n.Name, err)
	}
	return nil
}

// kubeAgentArgs are the agent's flags in Kubernetes mode; NODE_NAME goes
// in its environment, as the DaemonSet sets it.
func (s *State) kubeAgentArgs(n *Node) []string {
	if n.Agent == "flannel" {
		return []string{s.Flanneld, "--kube-subnet-mgr", "--kubeconfig-file", s.Kube.Kubeconfig,
			"--net-config-path", s.Kube.NetConf, "--iface", "eth0", "--subnet-file", n.SubnetFile,
			"--ip-masq", "--healthz-port", fmt.Sprint(healthz)}
	}
	args := []string{s.Weft, "agent", "--kube-subnet-mgr", "--kubeconfig-file", s.Kube.Kubeconfig,
		"--net-config-path", s.Kube.NetConf, "--iface", "eth0", "--subnet-file", n.SubnetFile, "--ip-masq",
		"--healthz-port", fmt.Sprint(healthz), "--resync-interval", "10s", "--pprof"}
	if s.Kube.ReadOnly {
		args = append(args, "--kube-read-only")
	}
	return args
}

// kubeSummary is one line on the control plane for `lab status`.
func (s *State) kubeSummary() string {
	state := "running"
	if !ours(s.Kube.PID, "--cert-dir="+s.Kube.Dir) {
		state = "NOT running"
	}
	mode := "agents publish flannel's annotations"
	if s.Kube.ReadOnly {
		mode = "agents read-only"
	}
	return fmt.Sprintf("kube-apiserver %s (pid %d, %s; %s); admin kubeconfig %s",
		s.Kube.URL, s.Kube.PID, state, mode, filepath.Join(s.Kube.Dir, "admin.kubeconfig"))
}
