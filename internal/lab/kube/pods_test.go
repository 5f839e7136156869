package kube

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/internal/lab/pod"
)

func TestPodObjectAndStatus(t *testing.T) {
	ports, _ := pod.ParsePorts("80,53/udp")
	p := &pod.Pod{Name: "a", Namespace: "x", Node: "n2", Addr: netip.MustParseAddr("10.244.2.3"), Labels: map[string]string{"app": "web"}, Ports: ports}
	o := PodObject(p)
	got := fmt.Sprintf("%s/%s node=%s labels=%v grace=%d", o.Namespace, o.Name, o.Spec.NodeName, o.Labels, *o.Spec.TerminationGracePeriodSeconds)
	for _, cp := range o.Spec.Containers[0].Ports {
		got += fmt.Sprintf(" %s:%d/%s", cp.Name, cp.ContainerPort, cp.Protocol)
	}
	want := "x/a node=n2 labels=map[app:web] grace=0 serve-80-tcp:80/TCP serve-80-udp:80/UDP serve-53-udp:53/UDP"
	if got != want || len(o.Spec.Containers) != 1 || o.Spec.Containers[0].Image == "" {
		t.Errorf("PodObject:\n got %s\nwant %s", got, want)
	}
	if d := PodObject(&pod.Pod{Name: "n1-p1", Node: "n1"}); d.Namespace != "default" {
		t.Errorf("a pod without namespace is in %q", d.Namespace)
	}
	st := PodStatus(p, netip.MustParseAddr("192.0.2.12"), time.Unix(1e9, 0))
	ready := map[corev1.PodConditionType]bool{}
	for _, c := range st.Conditions {
		ready[c.Type] = c.Status == corev1.ConditionTrue
	}
	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.2.3" || len(st.PodIPs) != 1 || st.PodIPs[0].IP != "10.244.2.3" ||
		st.HostIP != "192.0.2.12" || !ready[corev1.PodReady] || !ready[corev1.ContainersReady] || !ready[corev1.PodScheduled] ||
		len(st.ContainerStatuses) != 1 || !st.ContainerStatuses[0].Ready || st.ContainerStatuses[0].Name != o.Spec.Containers[0].Name {
		t.Errorf("PodStatus: %+v", st)
	}
}
