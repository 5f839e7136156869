package lab

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftnet/weft/internal/lab/check"
	"github.com/weftnet/weft/internal/lab/kube"
	"github.com/weftnet/weft/internal/policy"
	"github.com/weftnet/weft/internal/policy/source"
)

// policyCheck probes every pod pair, port and protocol against the
// matrix the API server's NetworkPolicies imply, when there are any
// (--store kube); ok is false when there are none (the plain check
// applies). An error says the API server could not be read.
func (s *State) policyCheck(ctx context.Context) (rep *check.PolicyReport, ok bool, err error) {
	if s.Kube == nil {
		return nil, false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second) // an API server stopped by a test must not hang the check
	kc, err := s.Kube.ReadCluster(rctx, s.Ctl.NS)
	cancel()
	if err != nil {
		return nil, false, fmt.Errorf("read the NetworkPolicies: %w", err)
	}
	if len(kc.Policies) == 0 {
		return nil, false, nil
	}
	c, err := engineCluster(kc)
	if err != nil {
		return nil, false, err
	}
	targets, nodeOf, skipped := s.policyTargets(kc)
	rep = check.RunPolicy(ctx, targets, expectation(c, nodeOf), time.Second)
	rep.Lab, rep.Skipped = s.Name, skipped
	for _, p := range kc.Policies {
		rep.Policies = append(rep.Policies, p.Namespace+"/"+p.Name)
	}
	slices.Sort(rep.Policies)
	return rep, true, ctx.Err()
}

// policyTargets are the lab's pods that the API server knows at their
// address, and the node of each; the others are skipped, with why.
func (s *State) policyTargets(kc *kube.Cluster) (targets []*check.Target, nodeOf map[string]string, skipped []string) {
	objs := map[string]*corev1.Pod{}
	for i := range kc.Pods {
		objs[kc.Pods[i].Namespace+"/"+kc.Pods[i].Name] = &kc.Pods[i]
	}
	nodeOf = map[string]string{}
	for _, p := range s.Pods {
		o := objs[p.Key()]
		switch {
		case o == nil:
			skipped = append(skipped, fmt.Sprintf("%s: no Pod object", p.Display()))
			continue
		case o.Status.PodIP != p.Addr.String():
			skipped = append(skipped, fmt.Sprintf("%s: its Pod object's podIP is %q, its address %s", p.Display(), o.Status.PodIP, p.Addr))
			continue
		}
		t := &check.Target{Name: p.Display(), NS: p.NS, Addr: p.Addr, Ports: p.Ports}
		if p.Serves {
			t.Answer = p.Key()
		}
		targets = append(targets, t)
		nodeOf[t.Name] = p.Node
	}
	return targets, nodeOf, skipped
}

// engineCluster is the API server's cluster as the policy engine reads
// it: converted as the agents' informers convert it (source.FromObjects).
func engineCluster(kc *kube.Cluster) (*policy.Cluster, error) {
	pods := &corev1.PodList{Items: kc.Pods}
	nss := &corev1.NamespaceList{Items: kc.Namespaces}
	pols := &networkingv1.NetworkPolicyList{Items: kc.Policies}
	return source.FromObjects([]runtime.Object{pods, nss, pols})
}

// expectation says what the policies of c allow, as the nodes enforce
// them: the source's node checks egress, the destination's ingress, each
// with the Ruleset it compiles (policy.Compile, the agents' compiler).
func expectation(c *policy.Cluster, nodeOf map[string]string) check.Expect {
	rulesets := map[string]*policy.Ruleset{}
	rs := func(node string) *policy.Ruleset {
		if rulesets[node] == nil {
			rulesets[node] = policy.Compile(c, node)
		}
		return rulesets[node]
	}
	return func(from, to *check.Target, port check.Port) bool {
		pkt := policy.Packet{Src: from.Addr, Dst: to.Addr, Protocol: policy.Protocol(port.Protocol), Port: port.Port}
		return rs(nodeOf[from.Name]).Evaluate(policy.Egress, pkt).Allowed && rs(nodeOf[to.Name]).Evaluate(policy.Ingress, pkt).Allowed
	}
}
