package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
	"github.com/weftnet/weft/internal/netns"
)

// kubeLab brings up a lab whose store is a real kube-apiserver.
func kubeLab(t *testing.T, args ...string) *lab {
	t.Helper()
	if bin == "" {
		t.Skip("needs root")
	}
	api := kubeapitest.Binary(t)
	l, _ := newLab(t, append([]string{"--store", "kube", "--kube-apiserver", api}, args...)...)
	return l
}

// admin is a client of the lab's API server with its admin token,
// connecting from the control namespace.
func (l *lab) admin() kubernetes.Interface {
	l.t.Helper()
	b, err := os.ReadFile("/run/weft-lab/" + l.name + "/state.json")
	if err != nil {
		l.t.Fatal(err)
	}
	var st struct {
		Kube struct {
			URL, Dir, AdminToken string
		}
	}
	if err := json.Unmarshal(b, &st); err != nil {
		l.t.Fatal(err)
	}
	cfg := &rest.Config{Host: st.Kube.URL, BearerToken: st.Kube.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: st.Kube.Dir + "/ca.crt"}, Dial: netns.Dialer(l.name + "-ctl"),
		QPS: 500, Burst: 1000, UserAgent: "weft-e2e"}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	return c
}

func (l *lab) subnetOf(node string) netip.Prefix {
	l.t.Helper()
	for _, n := range l.status().Nodes {
		if n.Name == node {
			return netip.MustParsePrefix(n.Subnet)
		}
	}
	l.t.Fatalf("no node %s", node)
	return netip.Prefix{}
}

// waitRoutes waits up to limit until every node in nodes has (want) or
// lacks (!want) a route to subnet, and returns how long it took.
func (l *lab) waitRoutes(nodes []string, subnet netip.Prefix, want bool, start time.Time, limit time.Duration) time.Duration {
	l.t.Helper()
	for _, n := range nodes {
		h := l.handle(n)
		for (len(entries(h, subnet)) > 0) != want {
			if time.Since(start) > limit {
				l.t.Fatalf("%s: route to %s present=%v after %s: %v", n, subnet, !want, limit, entries(h, subnet))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return time.Since(start)
}

func TestKubeVXLAN(t *testing.T) {
	l := kubeLab(t)
	ctx := context.Background()
	c := l.admin()

	t.Run("AnnotationsAndCondition", func(t *testing.T) {
		n, err := c.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := n.Annotations
		if a["flannel.alpha.coreos.com/kube-subnet-manager"] != "true" || a["flannel.alpha.coreos.com/backend-type"] != "vxlan" ||
			a["flannel.alpha.coreos.com/public-ip"] != "192.0.2.12" || !strings.HasPrefix(a["flannel.alpha.coreos.com/backend-data"], `{"VNI":1,"VtepMAC":"`) {
			t.Errorf("annotations of n2: %v", a)
		}
		if n.Spec.PodCIDR != l.subnetOf("n2").String() {
			t.Errorf("n2 leased %s, its podCIDR is %s", l.subnetOf("n2"), n.Spec.PodCIDR)
		}
		ok := false
		for _, cond := range n.Status.Conditions {
			ok = ok || cond.Type == corev1.NodeNetworkUnavailable && cond.Status == corev1.ConditionFalse
		}
		if !ok {
			t.Errorf("NetworkUnavailable is not False on n2: %+v", n.Status.Conditions)
		}
	})

	t.Run("RestartLosesNoPing", func(t *testing.T) {
		out, err := l.pingAcrossRestarts(t)
		if err != nil || !strings.Contains(out, "200 sent, 200 received, 0 lost") {
			t.Fatalf("ping across restarts: %v\n%s", err, out)
		}
	})

	t.Run("NodeAddedAndDeletedWithin2s", func(t *testing.T) {
		// A node joins: its agent publishes its lease as annotations.
		subnet := netip.MustParsePrefix("10.244.99.0/24")
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "joiner", Annotations: map[string]string{
			"flannel.alpha.coreos.com/kube-subnet-manager": "true",
			"flannel.alpha.coreos.com/backend-type":        "vxlan",
			"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"0e:00:00:00:00:99"}`,
			"flannel.alpha.coreos.com/public-ip":           "192.0.2.99",
		}}, Spec: corev1.NodeSpec{PodCIDR: subnet.String(), PodCIDRs: []string{subnet.String()}}}
		start := time.Now()
		if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		took := l.waitRoutes([]string{"n1", "n2", "n3"}, subnet, true, start, 2*time.Second)
		t.Logf("every node routes to the added Node's podCIDR %s after %s", subnet, took.Round(time.Millisecond))
		start = time.Now()
		if err := c.CoreV1().Nodes().Delete(ctx, "joiner", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		took = l.waitRoutes([]string{"n1", "n2", "n3"}, subnet, false, start, 2*time.Second)
		t.Logf("every node dropped the deleted Node's routes after %s", took.Round(time.Millisecond))
	})

	t.Run("LabNodeAddRemove", func(t *testing.T) {
		l.must("node", "add")
		if _, err := c.CoreV1().Nodes().Get(ctx, "n4", metav1.GetOptions{}); err != nil {
			t.Fatalf("node add created no Node object: %v", err)
		}
		if out := l.must("check"); !passRE.MatchString(out) {
			t.Fatalf("check after node add:\n%s", out)
		}
		n4 := l.subnetOf("n4")
		l.must("node", "remove", "n4")
		l.waitRoutes([]string{"n1", "n2", "n3"}, n4, false, time.Now(), 2*time.Second)
		if _, err := c.CoreV1().Nodes().Get(ctx, "n4", metav1.GetOptions{}); err == nil {
			t.Error("node remove left the Node object")
		}
	})
}

func TestKubeHostGW(t *testing.T) {
	l := kubeLab(t, "--backend", "host-gw")
	out, err := l.pingAcrossRestarts(t)
	if err != nil || !strings.Contains(out, "200 sent, 200 received, 0 lost") {
		t.Fatalf("ping across restarts: %v\n%s", err, out)
	}
}

// TestKubeReadOnly: agents with the read-only role write nothing, and
// vxlan works with VTEP MACs derived from node addresses.
func TestKubeReadOnly(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			l := kubeLab(t, "--read-only", "--backend", backend)
			c := l.admin()
			nodes, err := c.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes.Items {
				for k := range n.Annotations {
					if strings.HasPrefix(k, "flannel.alpha.coreos.com/") {
						t.Errorf("node %s has %s: a read-only agent wrote it", n.Name, k)
					}
				}
				for _, m := range n.ManagedFields {
					if m.Manager == "weft" { // the agents' user agent; the lab's is weft-lab
						t.Errorf("node %s was written by %s", n.Name, m.Manager)
					}
				}
			}
			out, err := l.pingAcrossRestarts(t)
			if err != nil || !strings.Contains(out, "200 sent, 200 received, 0 lost") {
				t.Fatalf("ping across restarts: %v\n%s", err, out)
			}
		})
	}
}

// TestKubeMigrationUnderLoad: a cluster on flanneld in Kubernetes mode
// moves to weft node by node under load, and one node rolls back.
func TestKubeMigrationUnderLoad(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	fl := flanneld(t)
	api := kubeapitest.Binary(t)
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) { migrate(t, fl, backend, "--store", "kube", "--kube-apiserver", api) })
	}
}

// TestKubeMixedWithFlanneld: one node runs the reference flanneld in
// Kubernetes mode; peers learn each other through Node annotations.
func TestKubeMixedWithFlanneld(t *testing.T) {
	fl := flanneld(t)
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			l := kubeLab(t, "--backend", backend, "--flannel-nodes", "n3", "--flanneld", fl)
			if st := l.status(); st.Nodes[2].Agent != "flannel" {
				t.Fatalf("n3 runs %s", st.Nodes[2].Agent)
			}
			if out := l.must("check"); !passRE.MatchString(out) {
				t.Fatalf("check:\n%s", out)
			}
		})
	}
}

// kubeletNode is a Node as a kubelet and a fabric agent leave it: labels,
// conditions, addresses, capacity, node info, a list of cached images, and
// flannel's annotations. Its size is what the agents' informers must digest.
func kubeletNode(i int, podCIDR netip.Prefix) *corev1.Node {
	name := fmt.Sprintf("load-%04d", i)
	ip := fmt.Sprintf("203.0.113.%d", i%250+1)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"node.kubernetes.io/instance-type": "m5.xlarge", "topology.kubernetes.io/region": "test-1", "topology.kubernetes.io/zone": "test-1a"},
		Annotations: map[string]string{
			"node.alpha.kubernetes.io/ttl":                           "0",
			"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			"flannel.alpha.coreos.com/kube-subnet-manager":           "true",
			"flannel.alpha.coreos.com/backend-type":                  "vxlan",
			"flannel.alpha.coreos.com/backend-data":                  fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:01:00:00:%02x:%02x"}`, i>>8, i&0xff),
			"flannel.alpha.coreos.com/public-ip":                     ip,
		}},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR.String(), PodCIDRs: []string{podCIDR.String()}, ProviderID: "test://" + name}}
	st := &n.Status
	st.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	st.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")}
	st.Allocatable = st.Capacity
	st.NodeInfo = corev1.NodeSystemInfo{MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("%032x", i+1), BootID: fmt.Sprintf("%032x", i+2),
		KernelVersion: "6.1.0-18-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.13",
		KubeletVersion: "v1.36.3", OperatingSystem: "linux", Architecture: "amd64"}
	now := metav1.Now()
	for _, c := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
		st.Conditions = append(st.Conditions, corev1.NodeCondition{Type: c, Status: corev1.ConditionFalse, LastHeartbeatTime: now, LastTransitionTime: now, Reason: "KubeletHasSufficient" + string(c), Message: "kubelet reports " + string(c)})
	}
	for j := range 30 {
		st.Images = append(st.Images, corev1.ContainerImage{SizeBytes: int64(10_000_000 + j),
			Names: []string{fmt.Sprintf("registry.example/team/app-%02d@sha256:%064x", j, j), fmt.Sprintf("registry.example/team/app-%02d:v1.%d", j, j)}})
	}
	return n
}

// rss reads a process's resident set, and the anonymous part of it (its
// heap and stacks, without the pages of its executable), in KiB.
func rss(t *testing.T, pid int) (total, anon int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			total = v
		case "RssAnon:":
			anon = v
		}
	}
	if total == 0 {
		t.Fatalf("no VmRSS for pid %d", pid)
	}
	return total, anon
}

// TestKubeAgentMemory measures the agents' RSS in a 3-node lab and again
// with 1000 more Node objects, weft beside the reference flanneld in one
// run. The figures go to docs/benchmarks.md.
func TestKubeAgentMemory(t *testing.T) {
	fl := flanneld(t)
	const extra = 1000
	l := kubeLab(t, "--flannel-nodes", "n3", "--flanneld", fl, "--pods-per-node", "1")
	c := l.admin()
	ctx := context.Background()
	type agent struct {
		name, kind string
		pid        int
	}
	var agents []agent
	for _, n := range l.statusPIDs() {
		agents = append(agents, agent{n.Name, n.Agent, n.AgentPID})
	}
	before, beforeAnon := map[string]int{}, map[string]int{}
	for _, a := range agents {
		before[a.name], beforeAnon[a.name] = rss(t, a.pid)
	}
	// 1000 /27s from 10.244.100.0 on, inside the lab's 10.244.0.0/16.
	start := time.Now()
	sem := make(chan struct{}, 16)
	errs := make(chan error, extra)
	for i := range extra {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			base := 100*256 + i*32
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(base >> 8), byte(base)}), 27)
			n := kubeletNode(i, p)
			status := n.Status
			created, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
			if err == nil {
				created.Status = status
				_, err = c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
			}
			errs <- err
		}()
	}
	for range extra {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("created %d Node objects in %s", extra, time.Since(start).Round(time.Millisecond))
	// Wait until every agent has programmed all peers: 1002 FDB entries.
	for _, a := range agents {
		h := l.handle(a.name)
		deadline := time.Now().Add(60 * time.Second)
		for fdbCount(h) < extra+2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s) has %d FDB entries after 60s, want %d", a.name, a.kind, fdbCount(h), extra+2)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second) // let the informers' initial churn settle
	var weftMax, flannel, weftAnon, flannelAnon int
	var b strings.Builder
	fmt.Fprintf(&b, "agent RSS in MiB, 3-node lab -> with %d more Node objects (anonymous part: heap and stacks)\n", extra)
	for _, a := range agents {
		after, anon := rss(t, a.pid)
		fmt.Fprintf(&b, "  %-3s %-8s RSS %6.1f -> %6.1f   anon %6.1f -> %6.1f\n", a.name, a.kind,
			float64(before[a.name])/1024, float64(after)/1024, float64(beforeAnon[a.name])/1024, float64(anon)/1024)
		if a.kind == "flannel" {
			flannel, flannelAnon = after, anon
		} else {
			weftMax, weftAnon = max(weftMax, after), max(weftAnon, anon)
		}
	}
	fmt.Fprintf(&b, "  weft / flanneld with %d nodes: RSS %.2f, anon %.2f", extra+3,
		float64(weftMax)/float64(flannel), float64(weftAnon)/float64(flannelAnon))
	t.Log(b.String())
	if out := l.must("check"); !passRE.MatchString(out) {
		t.Fatalf("check with %d nodes:\n%s", extra+3, out)
	}
}

type nodePID struct {
	Name, Agent string
	AgentPID    int
}

func (l *lab) statusPIDs() []nodePID {
	l.t.Helper()
	var st struct{ Nodes []nodePID }
	if err := json.Unmarshal([]byte(l.must("status", "--json")), &st); err != nil {
		l.t.Fatal(err)
	}
	return st.Nodes
}
