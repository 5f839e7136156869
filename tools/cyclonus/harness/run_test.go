package harness

import (
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/connectivity"
	"github.com/mattfenwick/cyclonus/pkg/connectivity/probe"
	"github.com/mattfenwick/cyclonus/pkg/generator"
	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCasesCI(t *testing.T) {
	cases, err := Cases(CITags, nil, "10.244.1.5")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 40 {
		t.Errorf("the CI subset has %d cases, want at least 40", len(cases))
	}
	all, err := Cases(nil, nil, "10.244.1.5")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		if c.Tags["sctp"] {
			t.Errorf("case %q probes SCTP", c.Description)
		}
		for _, s := range c.Steps {
			if s.Probe.Mode != "pod-ip" {
				t.Errorf("case %q probes in mode %s", c.Description, s.Probe.Mode)
			}
		}
	}
	t.Logf("%d cases in CI (%s), %d in all", len(cases), tagCounts(cases), len(all))
	if _, err := Cases([]string{"no-such-tag"}, nil, "10.244.1.5"); err == nil {
		t.Error("an unknown tag was accepted")
	}
}

// TestRetried: the probes of a try that disagreed with the truth table are
// listed, loopback aside, and the last try (the verdict) is not.
func TestRetried(t *testing.T) {
	conts := []*probe.Container{probe.NewDefaultContainer(80, corev1.ProtocolTCP, false, "")}
	res := &probe.Resources{Namespaces: map[string]map[string]string{"x": {"ns": "x"}}, Pods: []*probe.Pod{
		probe.NewPod("x", "a", map[string]string{"pod": "a"}, "10.244.1.2", conts),
		probe.NewPod("x", "b", map[string]string{"pod": "b"}, "10.244.2.2", conts),
	}}
	jobs := &probe.JobBuilder{TimeoutSeconds: 1}
	allowAll := matcher.BuildNetworkPolicies(true, nil)
	denyIngress := matcher.BuildNetworkPolicies(true, []*networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: "x"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}})
	cfg := &generator.ProbeConfig{AllAvailable: true, Mode: generator.ProbeModePodIP}
	want := probe.NewSimulatedRunner(allowAll, jobs).RunProbeForConfig(cfg, res)
	denied := probe.NewSimulatedRunner(denyIngress, jobs).RunProbeForConfig(cfg, res)
	st := connectivity.NewStepResult(want, allowAll, nil)
	st.AddKubeProbe(denied)
	st.AddKubeProbe(want)
	good := connectivity.NewStepResult(want, allowAll, nil)
	good.AddKubeProbe(want)
	got := retried(&connectivity.Result{Steps: []*connectivity.StepResult{good, st}}, true)
	exp := []string{
		"step 2 try 1: x/a -> x/b TCP/80 got blocked, want allowed",
		"step 2 try 1: x/b -> x/a TCP/80 got blocked, want allowed",
	}
	if !slices.Equal(got, exp) {
		t.Errorf("retried:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(exp, "\n"))
	}
}
