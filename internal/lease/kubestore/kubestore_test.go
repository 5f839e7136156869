package kubestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/kubestore"
)

const netConf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`

func confFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(p, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// addNode registers a node as kube-controller-manager and kubelet would:
// a podCIDR and an InternalIP.
func addNode(t *testing.T, c kubernetes.Interface, name, podCIDR, ip string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if podCIDR != "" {
		n.Spec = corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}
	}
	if _, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"addresses": n.Status.Addresses}})
	if _, err := c.CoreV1().Nodes().PatchStatus(ctx, name, patch); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T, c *kubeclient.Client, node, conf string, readOnly bool) *kubestore.Store {
	t.Helper()
	s, err := kubestore.New(kubestore.Options{Client: c, NodeName: node, ConfigPath: conf, ReadOnly: readOnly, Log: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func vxlanAttrs(ip, mac string) lease.Attrs {
	return lease.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}
}

// TestLeaseFromPodCIDR: the lease is the podCIDR, the annotations are
// flannel's exactly, another node's store reads them back, a node without
// them is ignored, and MarkReady sets NetworkUnavailable=False.
func TestLeaseFromPodCIDR(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conf := confFile(t)
	addNode(t, srv.Admin, "n1", "10.244.7.0/24", "192.0.2.11")
	addNode(t, srv.Admin, "n2", "10.244.8.0/24", "192.0.2.12")
	addNode(t, srv.Admin, "n3", "10.244.9.0/24", "192.0.2.13") // runs no agent

	s1 := newStore(t, srv.Client, "n1", conf, false)
	l1, err := s1.Acquire(ctx, lease.Request{Attrs: vxlanAttrs("192.0.2.11", "0e:00:00:00:00:11")})
	if err != nil {
		t.Fatal(err)
	}
	if l1.Subnet != netip.MustParsePrefix("10.244.7.0/24") || !l1.Reservation() {
		t.Fatalf("lease %+v", l1)
	}
	n1, err := srv.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"0e:00:00:00:00:11"}`,
		"flannel.alpha.coreos.com/public-ip":           "192.0.2.11",
	}
	for k, v := range want {
		if n1.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n1.Annotations[k], v)
		}
	}
	if !fieldManagerUsed(n1, "status") {
		t.Errorf("annotations were not written through the status subresource: %+v", n1.ManagedFields)
	}

	s2 := newStore(t, srv.Client, "n2", conf, false)
	var events atomic.Int32
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() { _ = s2.Watch(wctx, func(lease.Event) { events.Add(1) }) }()
	if _, err := s2.Acquire(ctx, lease.Request{Attrs: vxlanAttrs("192.0.2.12", "0e:00:00:00:00:12")}); err != nil {
		t.Fatal(err)
	}
	leases := waitLeases(t, s2, 2)
	got := leases[0]
	if got.Subnet != l1.Subnet || got.Attrs.PublicIP != l1.Attrs.PublicIP || got.Attrs.BackendType != "vxlan" ||
		string(got.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"0e:00:00:00:00:11"}` {
		t.Errorf("n2 reads n1's lease as %+v", got)
	}
	// A node added later (flannel's annotations, written by anyone) is seen.
	before := events.Load()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true", "flannel.alpha.coreos.com/backend-type": "host-gw",
		"flannel.alpha.coreos.com/backend-data": "null", "flannel.alpha.coreos.com/public-ip": "192.0.2.13"}}})
	if _, err := srv.Admin.CoreV1().Nodes().Patch(ctx, "n3", types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	leases = waitLeases(t, s2, 3)
	// The informer fills its cache before it calls the handlers, so the
	// lease can be listed a moment before the event arrives.
	for deadline := time.Now().Add(5 * time.Second); events.Load() == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("no watch event for n3's annotations within 5s")
			break
		}
	}
	if l := leases[2]; l.Attrs.BackendType != "host-gw" || l.Attrs.BackendData != nil {
		t.Errorf("n3: %+v (backend-data \"null\" means none)", l)
	}

	if err := s1.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	n1, _ = srv.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	found := false
	for _, c := range n1.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			found = c.Status == corev1.ConditionFalse
		}
	}
	if !found {
		t.Errorf("NetworkUnavailable is not False: %+v", n1.Status.Conditions)
	}
}

// fieldManagerUsed reports whether some managed-fields entry was written
// through subresource sub.
func fieldManagerUsed(n *corev1.Node, sub string) bool {
	for _, m := range n.ManagedFields {
		if m.Subresource == sub {
			return true
		}
	}
	return false
}

func waitLeases(t *testing.T, s *kubestore.Store, n int) []lease.Lease {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == n || time.Now().After(deadline) {
			if len(ls) != n {
				t.Fatalf("%d leases, want %d: %+v", len(ls), n, ls)
			}
			return ls
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMistakes: the common mistakes fail with errors that say what to do.
func TestMistakes(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx := context.Background()
	conf := confFile(t)
	addNode(t, srv.Admin, "bare", "", "192.0.2.21")
	addNode(t, srv.Admin, "outside", "10.99.1.0/24", "192.0.2.22")
	req := lease.Request{Attrs: vxlanAttrs("192.0.2.21", "0e:00:00:00:00:21")}

	_, err := newStore(t, srv.Client, "bare", conf, false).Acquire(ctx, req)
	if err == nil || !strings.Contains(err.Error(), `node "bare" has no podCIDR: start kube-controller-manager with --allocate-node-cidrs and --cluster-cidr, or set it`) {
		t.Errorf("no podCIDR: %v", err)
	}
	_, err = newStore(t, srv.Client, "outside", conf, false).Acquire(ctx, req)
	if err == nil || !errors.Is(err, lease.ErrMisconfigured) || !strings.Contains(err.Error(), "10.99.1.0/24") || !strings.Contains(err.Error(), "10.244.0.0/16") {
		t.Errorf("podCIDR outside Network: %v", err)
	}
	_, err = newStore(t, srv.Client, "ghost", conf, false).Acquire(ctx, req)
	if err == nil || !strings.Contains(err.Error(), `node "ghost" does not exist`) {
		t.Errorf("unknown node: %v", err)
	}
}

// saClient returns a client for a fresh service account bound to the
// shipped cluster role named role, and nothing else.
func saClient(t *testing.T, srv *kubeapitest.Server, sa, role string) *kubeclient.Client {
	t.Helper()
	ctx := context.Background()
	objs, err := deploy.Objects()
	if err != nil {
		t.Fatal(err)
	}
	roles := deploy.Only(objs, func(o runtime.Object) bool { r, ok := o.(*rbacv1.ClusterRole); return ok && r.Name == role })
	if len(roles) != 1 {
		t.Fatalf("deploy/weft.yaml has no ClusterRole %q", role)
	}
	if err := deploy.Create(ctx, srv.Client, roles, false); err != nil {
		t.Fatal(err)
	}
	b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: "default"}}}
	if _, err := srv.Admin.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := srv.Client.ServiceAccountToken(ctx, "default", sa, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubeclient.New(srv.Files.Config(srv.URL, tok, nil))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestShippedRoles: with the shipped ClusterRole through a service-account
// token, the store does all it needs; with the read-only role, it works
// and writes nothing (the role permits no write at all).
func TestShippedRoles(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conf := confFile(t)
	addNode(t, srv.Admin, "n1", "10.244.1.0/24", "192.0.2.11")
	addNode(t, srv.Admin, "n2", "10.244.2.0/24", "192.0.2.12")

	full := saClient(t, srv, "weft-full", "weft")
	s1 := newStore(t, full, "n1", conf, false)
	if _, err := s1.Acquire(ctx, lease.Request{Attrs: vxlanAttrs("192.0.2.11", "0e:00:00:00:00:11")}); err != nil {
		t.Fatalf("acquire with the shipped role: %v", err)
	}
	if err := s1.MarkReady(ctx); err != nil {
		t.Fatalf("mark ready with the shipped role: %v", err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	live := make(chan struct{}, 1)
	go func() {
		_ = s1.Watch(wctx, func(lease.Event) {
			select {
			case live <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-live:
	case <-ctx.Done():
		t.Fatal("watch with the shipped role never went live")
	}
	if ls := waitLeases(t, s1, 1); ls[0].Subnet != netip.MustParsePrefix("10.244.1.0/24") {
		t.Errorf("leases %+v", ls)
	}

	ro := saClient(t, srv, "weft-ro", "weft-read-only")
	n2, _ := srv.Admin.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	s2 := newStore(t, ro, "n2", conf, true)
	own, err := s2.Acquire(ctx, lease.Request{Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("192.0.2.12"), BackendType: "vxlan"}})
	if err != nil {
		t.Fatalf("read-only acquire: %v", err)
	}
	if err := s2.MarkReady(ctx); err != nil {
		t.Fatalf("read-only mark ready: %v", err)
	}
	ls := waitLeases(t, s2, 2) // n1 by its InternalIP, n2 its own
	if ls[0].Attrs.PublicIP != netip.MustParseAddr("192.0.2.11") || ls[0].Attrs.BackendType != "vxlan" || ls[1].Subnet != own.Subnet {
		t.Errorf("read-only leases %+v", ls)
	}
	after, _ := srv.Admin.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	if after.ResourceVersion != n2.ResourceVersion {
		t.Errorf("the read-only store changed node n2 (resourceVersion %s -> %s)", n2.ResourceVersion, after.ResourceVersion)
	}
	// And the role really permits no write: the same patch the full mode
	// makes is refused.
	patch := []byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.12"}}}`)
	err = ro.Patch(ctx, kubeclient.Nodes, "", "n2", types.MergePatchType, patch, "status")
	if !apierrors.IsForbidden(err) {
		t.Errorf("a write with the read-only role: %v, want Forbidden", err)
	}
}

// TestManifestDryRun: every object of deploy/weft.yaml passes the API
// server's validation and admission (server-side dry run).
func TestManifestDryRun(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx := context.Background()
	objs, err := deploy.Objects()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[reflect.TypeOf(o).Elem().Name()]++
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"} {
		if kinds[k] == 0 {
			t.Errorf("deploy/weft.yaml has no %s", k)
		}
	}
	// Namespaced objects need their namespace to exist for admission, so
	// the namespace, once it passes its own dry run, is created for real.
	ns := deploy.Only(objs, func(o runtime.Object) bool { _, ok := o.(*corev1.Namespace); return ok })
	if err := deploy.Create(ctx, srv.Client, ns, true); err != nil {
		t.Fatal(err)
	}
	if err := deploy.Create(ctx, srv.Client, ns, false); err != nil {
		t.Fatal(err)
	}
	if err := deploy.Create(ctx, srv.Client, objs, true); err != nil {
		t.Fatal(err)
	}
	// A dry run stores nothing.
	if _, err := srv.Admin.AppsV1().DaemonSets("weft-system").Get(ctx, "weft", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run stored the DaemonSet: %v", err)
	}
	// The ConfigMap's net-conf.json is a valid config, and its conflist chains portmap.
	for _, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			if _, err := kubestore.New(kubestore.Options{Client: srv.Client, NodeName: "x", ConfigPath: writeTemp(t, cm.Data["net-conf.json"])}); err != nil {
				t.Errorf("ConfigMap net-conf.json: %v", err)
			}
			if !strings.Contains(cm.Data["cni-conf.json"], `"type": "portmap"`) {
				t.Error("the conflist does not chain portmap")
			}
		}
	}
}

func writeTemp(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// annotate writes flannel's annotations on a node, as an agent would.
func annotate(t *testing.T, c kubernetes.Interface, node string, ann map[string]string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if _, err := c.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}

func flannelAnnotations(ip string) map[string]string {
	return map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true", "flannel.alpha.coreos.com/backend-type": "vxlan",
		"flannel.alpha.coreos.com/backend-data": `{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`, "flannel.alpha.coreos.com/public-ip": ip}
}

// TestWatchEvents: the watch sends a Reset with every node that is a lease
// once the cache is full, then one event per node whose lease changes,
// nothing for a heartbeat, Deleted when a node goes or stops being a lease,
// and a record with Err for a node whose annotations do not decode.
// Created is the Node's creation time.
func TestWatchEvents(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conf := confFile(t)
	addNode(t, srv.Admin, "n1", "10.244.1.0/24", "192.0.2.11")
	annotate(t, srv.Admin, "n1", flannelAnnotations("192.0.2.11"))
	time.Sleep(1100 * time.Millisecond) // creation times have one-second resolution
	addNode(t, srv.Admin, "n2", "10.244.2.0/24", "192.0.2.12")
	annotate(t, srv.Admin, "n2", flannelAnnotations("192.0.2.12"))
	addNode(t, srv.Admin, "plain", "10.244.3.0/24", "192.0.2.13") // no annotations: not a lease
	addNode(t, srv.Admin, "me", "10.244.4.0/24", "192.0.2.14")

	s := newStore(t, srv.Client, "me", conf, false)
	own, err := s.Acquire(ctx, lease.Request{Attrs: vxlanAttrs("192.0.2.14", "0e:00:00:00:00:14")})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan lease.Event, 64)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Watch(wctx, func(e lease.Event) { events <- e })
	}()
	t.Cleanup(func() { wcancel(); <-done })
	next := func(what string) lease.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatalf("no watch event after %s", what)
		}
		return lease.Event{}
	}
	none := func(what string) {
		t.Helper()
		select {
		case e := <-events:
			t.Fatalf("event %+v after %s, want none", e, what)
		case <-time.After(time.Second):
		}
	}

	e := next("start")
	if !e.Reset || e.Cause != lease.CauseStart || len(e.Invalid) != 0 {
		t.Fatalf("first event %+v, want a Reset", e)
	}
	byKey := map[string]lease.Lease{}
	for _, r := range e.Leases {
		byKey[r.Key] = r.Lease
	}
	if len(byKey) != 3 || byKey["node/me"].Attrs.PublicIP != own.Attrs.PublicIP || byKey["node/n1"].Subnet != netip.MustParsePrefix("10.244.1.0/24") ||
		byKey["node/n2"].Attrs.PublicIP != netip.MustParseAddr("192.0.2.12") {
		t.Fatalf("Reset holds %+v, want node/me, node/n1, node/n2", e.Leases)
	}
	n1, err := srv.Admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := byKey["node/n1"].Created; c != n1.CreationTimestamp.UnixNano() || c >= byKey["node/n2"].Created {
		t.Errorf("Created: n1 %d (created %v), n2 %d; want n1's creation time, older than n2", c, n1.CreationTimestamp, byKey["node/n2"].Created)
	}
	if byKey["node/me"].Created != own.Created || own.Created == 0 {
		t.Errorf("own Created %d in the Reset, %d from Acquire", byKey["node/me"].Created, own.Created)
	}

	// A kubelet heartbeat changes no lease.
	hb, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()}}}})
	for _, n := range []string{"n1", "me", "plain"} {
		if _, err := srv.Admin.CoreV1().Nodes().PatchStatus(ctx, n, hb); err != nil {
			t.Fatal(err)
		}
	}
	none("heartbeats")

	annotate(t, srv.Admin, "n1", map[string]string{"flannel.alpha.coreos.com/public-ip": "192.0.2.21"})
	if e := next("n1's public-ip changed"); e.Reset || e.Deleted || e.Record.Key != "node/n1" ||
		e.Record.Lease.Attrs.PublicIP != netip.MustParseAddr("192.0.2.21") || e.Record.Lease.Created != byKey["node/n1"].Created {
		t.Fatalf("event %+v, want node/n1 at 192.0.2.21 with its Created", e)
	}
	annotate(t, srv.Admin, "n2", map[string]string{"flannel.alpha.coreos.com/kube-subnet-manager": "false"})
	if e := next("n2 stopped being a lease"); !e.Deleted || e.Record.Key != "node/n2" {
		t.Fatalf("event %+v, want node/n2 deleted", e)
	}
	annotate(t, srv.Admin, "plain", flannelAnnotations("not-an-address"))
	if e := next("a node with a bad public-ip"); e.Record.Key != "node/plain" || e.Record.Err == nil {
		t.Fatalf("event %+v, want node/plain with Err", e)
	}
	annotate(t, srv.Admin, "plain", flannelAnnotations("192.0.2.13"))
	if e := next("the bad public-ip fixed"); e.Record.Key != "node/plain" || e.Record.Err != nil || e.Record.Lease.Attrs.PublicIP != netip.MustParseAddr("192.0.2.13") {
		t.Fatalf("event %+v, want node/plain at 192.0.2.13", e)
	}
	if err := srv.Admin.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := next("n1 deleted"); !e.Deleted || e.Record.Key != "node/n1" {
		t.Fatalf("event %+v, want node/n1 deleted", e)
	}

	// Someone overwrites this node's annotations; Reclaim publishes them
	// again. The watch reports this node's lease as acquired, throughout.
	annotate(t, srv.Admin, "me", map[string]string{"flannel.alpha.coreos.com/public-ip": "192.0.2.66"})
	none("this node's annotations overwritten")
	r, err := s.Acquire(ctx, lease.Request{Attrs: vxlanAttrs("192.0.2.14", "0e:00:00:00:00:14"), Prefer: []netip.Prefix{own.Subnet}, Reclaim: true})
	if err != nil || r.Subnet != own.Subnet || r.Attrs.PublicIP != own.Attrs.PublicIP {
		t.Fatalf("reclaim: %+v, %v", r, err)
	}
	me, err := srv.Admin.CoreV1().Nodes().Get(ctx, "me", metav1.GetOptions{})
	if err != nil || me.Annotations["flannel.alpha.coreos.com/public-ip"] != "192.0.2.14" {
		t.Fatalf("after reclaim the node's public-ip is %q (%v), want 192.0.2.14", me.Annotations["flannel.alpha.coreos.com/public-ip"], err)
	}
	none("reclaim of an unchanged lease")
	// A new lease of this node's (another MAC) is sent.
	if _, err := s.Acquire(ctx, lease.Request{Attrs: vxlanAttrs("192.0.2.14", "0e:00:00:00:00:99")}); err != nil {
		t.Fatal(err)
	}
	if e := next("this node's lease changed"); e.Record.Key != "node/me" || !strings.Contains(string(e.Record.Lease.Attrs.BackendData), "0e:00:00:00:00:99") {
		t.Fatalf("event %+v, want node/me with the new MAC", e)
	}
}
