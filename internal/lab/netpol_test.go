package lab

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/internal/lab/check"
	"github.com/weftnet/weft/internal/lab/kube"
	"github.com/weftnet/weft/internal/lab/pod"
)

// TestPolicyExpectation plans a policy check over a cluster as the API
// server returns it: x/a on n1 admits only pods labelled app=client, on
// its named port serve-80-tcp; y/b on n2 is not isolated.
func TestPolicyExpectation(t *testing.T) {
	ports, _ := pod.ParsePorts("80,81")
	s := &State{Name: "t", Pods: []*pod.Pod{
		{Name: "a", Namespace: "x", NS: "t-x_a", Node: "n1", Addr: netip.MustParseAddr("10.244.1.2"), Ports: ports, Serves: true},
		{Name: "b", Namespace: "y", NS: "t-y_b", Node: "n2", Addr: netip.MustParseAddr("10.244.2.2"), Ports: ports},
		{Name: "c", NS: "t-c", Node: "n2", Addr: netip.MustParseAddr("10.244.2.3"), Ports: ports},
		{Name: "gone", NS: "t-gone", Node: "n1", Addr: netip.MustParseAddr("10.244.1.3")},
	}}
	kc := &kube.Cluster{}
	for _, p := range s.Pods[:3] {
		o := kube.PodObject(p)
		o.Status = kube.PodStatus(p, netip.MustParseAddr("192.0.2.11"), metav1.Now().Time)
		kc.Pods = append(kc.Pods, *o)
	}
	kc.Pods[1].Labels = map[string]string{"app": "client"} // relabelled through the API: that is what counts
	tcp := corev1.ProtocolTCP
	named := intstrName("serve-80-tcp")
	kc.Policies = []networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "clients-only"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{},
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}},
			}}},
	}}
	for _, ns := range []string{"x", "y", "default"} {
		kc.Namespaces = append(kc.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	targets, nodeOf, skipped := s.policyTargets(kc)
	if len(targets) != 3 || nodeOf["x/a"] != "n1" || nodeOf["c"] != "n2" || targets[0].Answer != "x/a" || targets[1].Answer != "" {
		t.Fatalf("targets %+v, nodes %v", targets, nodeOf)
	}
	if strings.Join(skipped, ";") != "gone: no Pod object" {
		t.Errorf("skipped: %q", skipped)
	}
	var got []string
	c, err := engineCluster(kc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range check.PlanPolicy(targets, expectation(c, nodeOf)) {
		if !p.Want {
			got = append(got, p.From+">"+p.To+":"+p.Protocol[:1]+itoa(p.Port))
		}
	}
	// Everything to x/a but y/b's TCP 80 is denied; nothing else is.
	want := "y/b>x/a:U80 y/b>x/a:T81 y/b>x/a:U81 c>x/a:T80 c>x/a:U80 c>x/a:T81 c>x/a:U81"
	if strings.Join(got, " ") != want {
		t.Errorf("denied:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func intstrName(s string) intstr.IntOrString { return intstr.FromString(s) }

func itoa(n uint16) string { return strconv.Itoa(int(n)) }
