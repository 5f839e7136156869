package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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
		TLSClientConfig: rest.TLSClientConfig{CAFile: st.Kube.Dir + "/ca.crt"}, Dial: netns.Dialer(l.name + "-ctl")}
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
