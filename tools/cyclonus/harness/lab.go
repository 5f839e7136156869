package harness

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/internal/lab"
)

// LabRuntime runs pods on the nodes of a running lab through lab.AddPod:
// a network namespace attached by weft-cni on the node, with the pod's
// commands as lab-managed processes (stopped by RemovePod, or by `weft lab
// down` if the harness dies). The Pod objects are cyclonus's, so the lab
// neither registers nor serves them.
type LabRuntime struct {
	Lab string // the lab's name
}

var _ Runtime = LabRuntime{}

// AddPod implements Runtime.
func (l LabRuntime) AddPod(ctx context.Context, p PodSpec) (Sandbox, error) {
	o := lab.PodOptions{Name: p.Name, Namespace: p.Namespace, Node: p.Node, Labels: p.Labels, Commands: p.Commands}
	for _, cp := range p.Ports {
		o.Ports = append(o.Ports, lab.PodPort{Name: cp.Name, Protocol: strings.ToUpper(string(cp.Protocol)), Port: uint16(cp.ContainerPort)})
	}
	info, err := lab.AddPod(ctx, l.Lab, o)
	if err != nil {
		return Sandbox{}, err
	}
	return Sandbox{NetNS: info.NetNS, IP: info.IP, Node: info.Node}, nil
}

// RemovePod implements Runtime.
func (l LabRuntime) RemovePod(ctx context.Context, namespace, name string) error {
	return lab.RemovePod(ctx, l.Lab, namespace, name)
}

// Serving implements Runtime.
func (LabRuntime) Serving(ctx context.Context, netns string, proto corev1.Protocol, port int32) error {
	return serving(ctx, netns, proto, port)
}
