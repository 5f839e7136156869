package harness

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mattfenwick/cyclonus/pkg/connectivity"
	"github.com/mattfenwick/cyclonus/pkg/connectivity/probe"
	"github.com/mattfenwick/cyclonus/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
)

func TestPlacement(t *testing.T) {
	const nodes = 3
	perNode := map[int]int{}
	for i := range 3 { // namespaces x, y, z
		on := map[int]int{}
		for n := range 3 { // pods a, b, c
			node := Placement(i, n, nodes)
			on[node]++
			perNode[node]++
		}
		pair := false
		for _, c := range on {
			pair = pair || c >= 2
		}
		if len(on) < 2 || !pair {
			t.Errorf("namespace %d: pods per node %v: want a same-node pair and at least two nodes", i, on)
		}
	}
	for n := range nodes {
		if perNode[n] != 3 {
			t.Errorf("node %d holds %d pods, want 3 (all: %v)", n, perNode[n], perNode)
		}
	}
}

// fakeRuntime hands out addresses per node and records what runs.
type fakeRuntime struct {
	mu      sync.Mutex
	next    map[string]int
	running map[string]PodSpec    // by namespace/name
	procs   map[string][][]string // argv by netns
	killed  int
	removed []string
}

func (f *fakeRuntime) AddPod(_ context.Context, p PodSpec) (Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := p.Namespace + "/" + p.Name
	if _, ok := f.running[key]; ok {
		return Sandbox{}, fmt.Errorf("pod %s already runs", key)
	}
	f.next[p.Node]++
	node := int(p.Node[1] - '0')
	f.running[key] = p
	return Sandbox{NetNS: "fake-" + p.Namespace + "_" + p.Name, IP: netip.AddrFrom4([4]byte{10, 244, byte(node), byte(f.next[p.Node])}), Node: p.Node}, nil
}

func (f *fakeRuntime) RemovePod(_ context.Context, namespace, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := namespace + "/" + name
	if _, ok := f.running[key]; !ok {
		return fmt.Errorf("pod %s does not run", key)
	}
	delete(f.running, key)
	f.removed = append(f.removed, key)
	return nil
}

func (f *fakeRuntime) Start(netns string, argv []string, _ io.Writer) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs[netns] = append(f.procs[netns], argv)
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.killed++
	}, nil
}

func (f *fakeRuntime) Serving(context.Context, string, corev1.Protocol, int32) error { return nil }

func (f *fakeRuntime) spec(key string) (PodSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.running[key]
	return p, ok
}

// TestKubeletOnAPIServer drives the kubelet with cyclonus's own code on a
// real API server (no lab: a fake runtime): cyclonus's pods get bound,
// spread, started with their agnhost commands and reported ready; pods and
// namespaces that cyclonus's action cases create and delete come and go.
func TestKubeletOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver")
	}
	api := kubeapitest.Start(t)
	cs := api.Admin.(*kubernetes.Clientset)
	rt := &fakeRuntime{next: map[string]int{}, running: map[string]PodSpec{}, procs: map[string][][]string{}}
	kl, err := NewKubelet(KubeletConfig{Client: cs, Runtime: rt, Agnhost: "/opt/agnhost", Nodes: []string{"n1", "n2", "n3"},
		Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan error, 1), make(chan struct{})
	go func() { done <- kl.Run(ctx, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kubelet: %v", err)
		}
		if len(rt.running) > 0 || rt.killed != 4*(9+3) {
			t.Errorf("after the kubelet stopped: pods left running %v, %d processes killed (want 48)", rt.running, rt.killed)
		}
	})
	<-ready

	k := &kube.Kubernetes{ClientSet: cs}
	res, err := probe.NewDefaultResources(k, Namespaces, PodNames, Ports, Protocols, nil, 60, false, "registry.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]map[string]int{} // namespace -> node -> pods
	for _, p := range res.Pods {
		sb, ok := kl.Lookup(p.Namespace, p.Name)
		if !ok || sb.IP.String() != p.IP {
			t.Fatalf("pod %s/%s: cyclonus sees IP %s, the kubelet runs %+v (%v)", p.Namespace, p.Name, p.IP, sb, ok)
		}
		kp, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if kp.Spec.NodeName != sb.Node {
			t.Errorf("pod %s/%s bound to %s, runs on %s", p.Namespace, p.Name, kp.Spec.NodeName, sb.Node)
		}
		if nodes[p.Namespace] == nil {
			nodes[p.Namespace] = map[string]int{}
		}
		nodes[p.Namespace][sb.Node]++
		ready := false
		for _, c := range kp.Status.Conditions {
			ready = ready || c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		}
		if !ready || len(kp.Status.ContainerStatuses) != 4 || !kp.Status.ContainerStatuses[3].Ready || kp.Status.PodIPs[0].IP != p.IP {
			t.Errorf("pod %s/%s status: %+v", p.Namespace, p.Name, kp.Status)
		}
		spec, _ := rt.spec(p.Namespace + "/" + p.Name)
		rt.mu.Lock()
		procs := rt.procs[sb.NetNS]
		rt.mu.Unlock()
		want := []string{"/opt/agnhost", "serve-hostname", "--udp", "--http=false", "--port", "81"}
		if len(procs) != 4 || !slices.Equal(procs[3], want) || len(spec.Ports) != 4 || spec.Ports[3].Name != "serve-81-udp" {
			t.Errorf("pod %s/%s runs %q with ports %+v; want 4 commands, the last %q", p.Namespace, p.Name, procs, spec.Ports, want)
		}
	}
	for ns, on := range nodes {
		pair := false
		for _, c := range on {
			pair = pair || c >= 2
		}
		if len(on) < 2 || !pair {
			t.Errorf("namespace %s: pods per node %v: want a same-node pair and at least two nodes", ns, on)
		}
	}

	// The actions of cyclonus's "Create/delete namespace" and
	// "Create/delete pod" cases, through its own code.
	st := &connectivity.TestCaseState{Kubernetes: k, Resources: res}
	if err := st.CreateNamespace("y-2", map[string]string{"ns": "y"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b"} {
		if err := st.CreatePod("y-2", p, map[string]string{"pod": p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreatePod("x", "d", map[string]string{"pod": "d"}); err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePod("x", "d"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteNamespace("y-2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "y-2", metav1.GetOptions{})
		_, xd := rt.spec("x/d")
		_, ya := rt.spec("y-2/a")
		if apierrors.IsNotFound(err) && !xd && !ya {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: namespace y-2: %v; x/d runs %v, y-2/a runs %v", err, xd, ya)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rt.mu.Lock()
	removed := slices.Sorted(slices.Values(rt.removed))
	rt.mu.Unlock()
	if want := []string{"x/d", "y-2/a", "y-2/b"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if rt.killed != 3*4 {
		t.Errorf("%d processes killed, want 12 (4 in each pod removed)", rt.killed)
	}
	// A namespace of the same name can come back, empty.
	if err := st.CreateNamespace("y-2", map[string]string{"ns": "y"}); err != nil {
		t.Fatalf("re-create y-2: %v", err)
	}
	if pods, err := cs.CoreV1().Pods("y-2").List(ctx, metav1.ListOptions{}); err != nil || len(pods.Items) > 0 {
		t.Errorf("re-created y-2 has pods %v (%v)", pods, err)
	}
}
