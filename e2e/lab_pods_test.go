package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	weftlab "github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/netns"
)

// TestLabPods adds namespaced, labelled pods with ports to a kube lab on
// two nodes: each gets a Pod object as a kubelet would make it and
// servers that answer with its name on its ports, across nodes; removing
// a pod removes its object, servers and namespace.
func TestLabPods(t *testing.T) {
	l := kubeLab(t, "--nodes", "2", "--pods-per-node", "1", "--pod-ports", "80")
	l.must("pod", "add", "a", "--node", "n1", "--namespace", "x", "--labels", "app=web,pod=a", "--ports", "80,81/udp")
	l.must("pod", "add", "b", "--node", "n2", "--namespace", "y", "--labels", "pod=b", "--ports", "80/tcp")
	c := l.admin()
	addr := map[string]string{}
	var st struct {
		Pods []struct {
			Name, Namespace, Netns, Node, Addr string
			Labels                             map[string]string
		}
	}
	if err := json.Unmarshal([]byte(l.must("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Pods {
		ns := p.Namespace
		if ns == "" {
			ns = "default"
		}
		addr[ns+"/"+p.Name] = p.Addr
	}
	want := map[string]struct {
		node, labels, ports string
	}{
		"x/a":           {"n1", "app=web,pod=a", "serve-80-tcp 80/TCP,serve-80-udp 80/UDP,serve-81-udp 81/UDP"},
		"y/b":           {"n2", "pod=b", "serve-80-tcp 80/TCP"},
		"default/n1-p1": {"n1", "", "serve-80-tcp 80/TCP,serve-80-udp 80/UDP"},
		"default/n2-p1": {"n2", "", "serve-80-tcp 80/TCP,serve-80-udp 80/UDP"},
	}
	for key, w := range want {
		ns, name, _ := strings.Cut(key, "/")
		o, err := c.CoreV1().Pods(ns).Get(reqCtx(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("pod %s: %v", key, err)
		}
		var labels, ports []string
		for k, v := range o.Labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		for _, ct := range o.Spec.Containers {
			for _, p := range ct.Ports {
				ports = append(ports, fmt.Sprintf("%s %d/%s", p.Name, p.ContainerPort, p.Protocol))
			}
		}
		ready := false
		for _, cond := range o.Status.Conditions {
			ready = ready || (cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue)
		}
		if o.Spec.NodeName != w.node || strings.Join(labels, ",") != w.labels || strings.Join(ports, ",") != w.ports ||
			o.Status.Phase != corev1.PodRunning || !ready || o.Status.PodIP != addr[key] || len(o.Status.PodIPs) != 1 || addr[key] == "" {
			t.Errorf("pod %s: node %s, labels %v, ports %v, phase %s, ready %v, podIP %s (lab: %s)",
				key, o.Spec.NodeName, labels, ports, o.Status.Phase, ready, o.Status.PodIP, addr[key])
		}
	}
	for _, ns := range []string{"x", "y"} {
		if _, err := c.CoreV1().Namespaces().Get(reqCtx(t), ns, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s: %v", ns, err)
		}
	}
	// The servers, from a pod on the other node: each answers its name.
	ask := func(from, proto, to string, port uint16) (string, error) {
		return pod.Ask(from, proto, netip.AddrPortFrom(netip.MustParseAddr(addr[to]), port), 2*time.Second)
	}
	for _, tc := range []struct {
		from, proto, to string
		port            uint16
	}{{l.name + "-y_b", pod.TCP, "x/a", 80}, {l.name + "-y_b", pod.UDP, "x/a", 81}, {l.name + "-x_a", pod.TCP, "y/b", 80},
		{l.name + "-n1-p1", pod.UDP, "default/n2-p1", 80}} {
		if got, err := ask(tc.from, tc.proto, tc.to, tc.port); err != nil || got != tc.to {
			t.Errorf("%s -> %s %d/%s: %q, %v", tc.from, tc.to, tc.port, tc.proto, got, err)
		}
	}
	if got, err := ask(l.name+"-y_b", pod.TCP, "x/a", 81); err == nil {
		t.Errorf("x/a serves 81/UDP only, but 81/TCP answered %q", got)
	}
	// No NetworkPolicy: the plain check, pods in other namespaces included.
	if out := l.must("check"); !strings.Contains(out, "x/a") || !strings.Contains(out, " 0 failed") {
		t.Errorf("check:\n%s", out)
	}
	serveProcs := func() int {
		n := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if strings.Contains(string(b), "serve\x00--answer\x00x/a\x00") {
				n++
			}
		}
		return n
	}
	if n := serveProcs(); n != 1 {
		t.Errorf("%d servers of x/a run, want 1", n)
	}
	l.must("pod", "remove", "a", "--namespace", "x")
	if _, err := c.CoreV1().Pods("x").Get(reqCtx(t), "a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod x/a after remove: %v", err)
	}
	if netns.Exists(l.name + "-x_a") {
		t.Error("the network namespace of x/a is left after remove")
	}
	if n := serveProcs(); n != 0 {
		t.Errorf("%d servers of x/a run after remove", n)
	}
	apiPod(t, l, c)
}

// apiPod is the NetworkPolicy harness's path through the Go API: a Pod
// object created unbound (as cyclonus creates it), then lab.AddPod binds
// it, attaches it and runs agnhost serve-hostname in it; RemovePod stops
// agnhost and deletes the object.
func apiPod(t *testing.T, l *lab, c kubernetes.Interface) {
	agnhost, err := os.Getenv("WEFT_AGNHOST"), error(nil) // test.sh sets it
	if agnhost == "" {
		agnhost, err = filepath.Abs("../bin/agnhost")
	}
	if err == nil {
		_, err = os.Stat(agnhost)
	}
	if err != nil {
		t.Logf("no agnhost (set WEFT_AGNHOST or run tools/kube/build.sh agnhost): the Go API part is skipped")
		return
	}
	if _, err := c.CoreV1().Namespaces().Create(reqCtx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "z"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ServiceAccounts("z").Create(reqCtx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "z", Labels: map[string]string{"pod": "c"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "cont-8080-tcp", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{Name: "serve-8080-tcp", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}}}
	if _, err := c.CoreV1().Pods("z").Create(reqCtx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := weftlab.AddPod(reqCtx(t), l.name, weftlab.PodOptions{Name: "c", Namespace: "z", Node: "n2", Register: true,
		Ports:    []weftlab.PodPort{{Protocol: "TCP", Port: 8080}},
		Commands: [][]string{{agnhost, "serve-hostname", "--tcp", "--http=false", "--port", "8080"}}})
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.CoreV1().Pods("z").Get(reqCtx(t), "c", metav1.GetOptions{})
	if err != nil || o.Spec.NodeName != "n2" || o.Status.Phase != corev1.PodRunning || o.Status.PodIP != info.IP.String() ||
		info.NetNS != l.name+"-z_c" || info.Node != "n2" || o.Spec.Containers[0].Name != "cont-8080-tcp" {
		t.Fatalf("pod z/c after AddPod (%+v): %v %+v", info, err, o)
	}
	var out []byte
	for range 50 { // agnhost needs a moment to listen
		out, err = netns.Command(l.name+"-n1-p1", agnhost, "connect", info.IP.String()+":8080", "--timeout=1s").CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("agnhost connect to z/c: %v\n%s", err, out)
	}
	if err := weftlab.RemovePod(reqCtx(t), l.name, "z", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Pods("z").Get(reqCtx(t), "c", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod z/c after RemovePod: %v", err)
	}
	if out, err := netns.Command(l.name+"-n1-p1", agnhost, "connect", info.IP.String()+":8080", "--timeout=1s").CombinedOutput(); err == nil {
		t.Errorf("z/c still answers after RemovePod: %s", out)
	}
}
