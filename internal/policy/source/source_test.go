package source

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/policy"
)

// TestStripPod: the transform keeps what the engine uses and nothing else;
// finished pods and pods with an address that does not parse are left out
// of the snapshot, the latter logged once by name.
func TestStripPod(t *testing.T) {
	var logs bytes.Buffer
	s := &Source{log: slog.New(slog.NewTextHandler(&logs, nil)), bad: map[string]string{}}
	always := corev1.ContainerRestartPolicyAlways
	in := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
			Annotations:   map[string]string{"big": strings.Repeat("x", 1000)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.PodSpec{NodeName: "n1",
			Containers: []corev1.Container{{Name: "c", Image: "img", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {ContainerPort: 81}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}},
			InitContainers: []corev1.Container{
				{Name: "once", Ports: []corev1.ContainerPort{{Name: "init", ContainerPort: 9}}},
				{Name: "sidecar", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5",
			PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00::5"}}},
	}
	out, err := s.stripPod(in)
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*podObj)
	want := policy.Pod{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web"}, Node: "n1",
		IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00::5")},
		Ports: []policy.ContainerPort{{Name: "http", Protocol: policy.TCP, Port: 80}, {Name: "dns", Protocol: policy.UDP, Port: 53},
			{Name: "metrics", Protocol: policy.TCP, Port: 9090}}}
	if p.skip || p.rv != "7" || !samePod(p, &podObj{Pod: want}) {
		t.Errorf("stripped pod %+v, want %+v", p.Pod, want)
	}
	if m := p.GetObjectMeta(); m.GetNamespace() != "ns" || m.GetName() != "web" || m.GetResourceVersion() != "7" {
		t.Errorf("object meta %v", m)
	}
	if again, _ := s.stripPod(p); again != p {
		t.Error("the transform is not idempotent")
	}

	for _, phase := range []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed} {
		done := in.DeepCopy()
		done.Status.Phase = phase
		out, _ := s.stripPod(done)
		if !out.(*podObj).skip {
			t.Errorf("a %s pod is kept", phase)
		}
	}
	bad := in.DeepCopy()
	bad.Name = "broken"
	bad.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.300"}}
	for range 2 {
		out, _ := s.stripPod(bad)
		if !out.(*podObj).skip {
			t.Error("a pod whose address does not parse is kept")
		}
	}
	if n := strings.Count(logs.String(), "pod left out"); n != 1 || !strings.Contains(logs.String(), "ns/broken") || !strings.Contains(logs.String(), "10.244.1.300") {
		t.Errorf("logged %d times, want once with the pod's name and address:\n%s", n, logs.String())
	}
	fixed := in.DeepCopy()
	fixed.Name = "broken"
	if out, _ := s.stripPod(fixed); out.(*podObj).skip || !strings.Contains(logs.String(), "no longer left out") {
		t.Errorf("a fixed pod stays left out:\n%s", logs.String())
	}
}

// TestStripPolicy: a policy keeps its spec and name, not its annotations
// (kubectl's last-applied copy) or managed fields; an update that changes
// only those is no change.
func TestStripPolicy(t *testing.T) {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "deny", ResourceVersion: "3",
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	out, _ := stripPolicy(np)
	p := out.(*networkingv1.NetworkPolicy)
	if p.Name != "deny" || p.Namespace != "ns" || p.Annotations != nil || p.ManagedFields != nil || len(p.Spec.PolicyTypes) != 1 {
		t.Errorf("stripped policy %+v", p)
	}
	np2 := np.DeepCopy()
	np2.ResourceVersion, np2.Annotations = "4", nil
	out2, _ := stripPolicy(np2)
	if !samePolicy(out, out2) {
		t.Error("an annotation change counts as a change")
	}
	np2.Spec.PolicyTypes = append(np2.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
	out2, _ = stripPolicy(np2)
	if samePolicy(out, out2) {
		t.Error("a spec change does not count")
	}
}

func newSource(t *testing.T, srv *kubeapitest.Server) *Source {
	t.Helper()
	s, err := New(Options{Client: srv.Client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := s.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func mkNamespace(t *testing.T, c kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Pods need their service account; no controller manager makes it here.
	if _, err := c.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// mkPod creates a pod on node and gives it ip, as kubelet would.
func mkPod(t *testing.T, c kubernetes.Interface, ns, name, node, ip string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "agnhost",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	p, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip == "" {
		return
	}
	p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// eventually waits up to 10 s for the snapshot to satisfy ok.
func eventually(t *testing.T, s *Source, what string, ok func(*policy.Cluster) bool) *policy.Cluster {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := s.Snapshot()
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen in 10s; the snapshot has %d pods, %d namespaces, %d policies", what, len(c.Pods), len(c.Namespaces), len(c.Policies))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func findPod(c *policy.Cluster, key string) *policy.Pod {
	i := slices.IndexFunc(c.Pods, func(p *policy.Pod) bool { return p.Key() == key })
	if i < 0 {
		return nil
	}
	return c.Pods[i]
}

func findNamespace(c *policy.Cluster, name string) *policy.Namespace {
	i := slices.IndexFunc(c.Namespaces, func(n *policy.Namespace) bool { return n.Name == name })
	if i < 0 {
		return nil
	}
	return c.Namespaces[i]
}

func findPolicy(c *policy.Cluster, ns, name string) *networkingv1.NetworkPolicy {
	i := slices.IndexFunc(c.Policies, func(p *networkingv1.NetworkPolicy) bool { return p.Namespace == ns && p.Name == name })
	if i < 0 {
		return nil
	}
	return c.Policies[i]
}

// drain empties the change channel.
func drain(s *Source) {
	for {
		select {
		case <-s.Changed():
		default:
			return
		}
	}
}

// TestFollowsTheAPIServer: against a real kube-apiserver, the snapshot
// follows creates, updates and deletes of pods, namespaces and policies,
// and a change notification comes with each change that matters.
func TestFollowsTheAPIServer(t *testing.T) {
	srv := kubeapitest.Start(t)
	c := srv.Admin
	ctx := context.Background()
	mkNamespace(t, c, "shop", map[string]string{"team": "a"})
	mkPod(t, c, "shop", "before", "n1", "10.244.1.2", map[string]string{"app": "db"})

	s := newSource(t, srv)
	snap := s.Snapshot()
	if p := findPod(snap, "shop/before"); p == nil || !slices.Equal(p.IPs, []netip.Addr{netip.MustParseAddr("10.244.1.2")}) || p.Node != "n1" || p.Labels["app"] != "db" ||
		!slices.Equal(p.Ports, []policy.ContainerPort{{Name: "http", Protocol: policy.TCP, Port: 8080}}) {
		t.Fatalf("pod listed at start: %+v", p)
	}
	if n := findNamespace(snap, "shop"); n == nil || n.Labels["team"] != "a" || n.Labels["kubernetes.io/metadata.name"] != "shop" {
		t.Fatalf("namespace listed at start: %+v", n)
	}
	if findNamespace(snap, "default") == nil {
		t.Fatal("namespace default is missing")
	}

	// Pods: created, given an address, relabelled, finished, deleted.
	drain(s)
	mkPod(t, c, "shop", "web", "n2", "", map[string]string{"app": "web"})
	<-s.Changed()
	snap = eventually(t, s, "a new pod without an address", func(c *policy.Cluster) bool { p := findPod(c, "shop/web"); return p != nil && len(p.IPs) == 0 })
	p, err := c.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase, p.Status.PodIPs = corev1.PodRunning, []corev1.PodIP{{IP: "10.244.2.7"}}
	if _, err := c.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "the pod's address", func(c *policy.Cluster) bool {
		p := findPod(c, "shop/web")
		return p != nil && slices.Equal(p.IPs, []netip.Addr{netip.MustParseAddr("10.244.2.7")})
	})
	if _, err := c.CoreV1().Pods("shop").Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"web","tier":"front"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "the pod's new label", func(c *policy.Cluster) bool {
		p := findPod(c, "shop/web")
		return p != nil && p.Labels["tier"] == "front"
	})

	// An update the engine does not see (an annotation) sends nothing.
	drain(s)
	if _, err := c.CoreV1().Pods("shop").Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"annotations":{"note":"x"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Changed():
		t.Error("an annotation on a pod sent a change")
	case <-time.After(time.Second):
	}

	p, err = c.CoreV1().Pods("shop").Get(ctx, "before", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodSucceeded
	if _, err := c.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "a finished pod left out", func(c *policy.Cluster) bool { return findPod(c, "shop/before") == nil })
	if err := c.CoreV1().Pods("shop").Delete(ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "a deleted pod gone", func(c *policy.Cluster) bool { return findPod(c, "shop/web") == nil })

	// Namespaces: created, relabelled.
	mkNamespace(t, c, "bank", nil)
	eventually(t, s, "a new namespace", func(c *policy.Cluster) bool { return findNamespace(c, "bank") != nil })
	if _, err := c.CoreV1().Namespaces().Patch(ctx, "bank", types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"b"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "the namespace's label", func(c *policy.Cluster) bool {
		n := findNamespace(c, "bank")
		return n != nil && n.Labels["team"] == "b"
	})

	// Policies: created, changed, deleted.
	port := intstr.FromString("http")
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "allow-web",
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 500)}},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}}}}
	if _, err := c.NetworkingV1().NetworkPolicies("shop").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	snap = eventually(t, s, "a new policy", func(c *policy.Cluster) bool { return findPolicy(c, "shop", "allow-web") != nil })
	got := findPolicy(snap, "shop", "allow-web")
	if got.Annotations != nil || got.ManagedFields != nil || len(got.Spec.PolicyTypes) != 1 || got.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("the policy as kept: %+v", got)
	}
	if _, err := c.NetworkingV1().NetworkPolicies("shop").Patch(ctx, "allow-web", types.MergePatchType,
		[]byte(`{"spec":{"podSelector":{"matchLabels":{"app":"db"}}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "the policy's new selector", func(c *policy.Cluster) bool {
		p := findPolicy(c, "shop", "allow-web")
		return p != nil && p.Spec.PodSelector.MatchLabels["app"] == "db"
	})
	if err := c.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "allow-web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, "a deleted policy gone", func(c *policy.Cluster) bool { return findPolicy(c, "shop", "allow-web") == nil })
	if err := s.Err(); err != nil {
		t.Errorf("watch error: %v", err)
	}

	// Many changes while nobody reads: one wake-up waits.
	drain(s)
	for i := range 20 {
		mkPod(t, c, "bank", "p"+string(rune('a'+i)), "n1", "", nil)
	}
	eventually(t, s, "20 new pods", func(c *policy.Cluster) bool {
		return len(slices.DeleteFunc(slices.Clone(c.Pods), func(p *policy.Pod) bool { return p.Namespace != "bank" })) == 20
	})
	<-s.Changed()
	select {
	case <-s.Changed():
		t.Error("20 changes made more than one wake-up while nobody read")
	default:
	}
}

// TestShippedRoles: each ClusterRole shipped in deploy/weft.yaml lets the
// source list and watch all it needs, through a service account's token.
func TestShippedRoles(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx := context.Background()
	objs, err := deploy.Objects()
	if err != nil {
		t.Fatal(err)
	}
	roles := deploy.Only(objs, func(o runtime.Object) bool { _, ok := o.(*rbacv1.ClusterRole); return ok })
	if err := deploy.Create(ctx, srv.Client, roles, false); err != nil {
		t.Fatal(err)
	}
	mkNamespace(t, srv.Admin, "shop", nil)
	mkPod(t, srv.Admin, "shop", "web", "n1", "10.244.1.9", nil)
	for _, role := range []string{"weft", "weft-read-only"} {
		b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: role, Namespace: "default"}}}
		if _, err := srv.Admin.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tok, err := srv.Client.ServiceAccountToken(ctx, "default", role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := kubeclient.New(srv.Files.Config(srv.URL, tok, nil))
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Options{Client: c, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { s.Run(sctx); close(done) }()
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		err = s.WaitSynced(wctx)
		t.Logf("role %s: listed in %s", role, time.Since(start).Round(time.Millisecond))
		wcancel()
		if err != nil {
			t.Errorf("role %s: %v (last watch error: %v)", role, err, s.Err())
		} else if findPod(s.Snapshot(), "shop/web") == nil {
			t.Errorf("role %s: the pod is not seen", role)
		}
		cancel()
		<-done
	}
}
