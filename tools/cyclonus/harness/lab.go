package harness

import (
	"context"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/internal/lab"
)

// LabRuntime runs pods on the nodes of a running lab: lab.AddPod creates
// each pod's network namespace, attached by weft-cni on its node (the Pod
// objects are cyclonus's, so the lab neither registers nor serves them);
// the pod's processes are the harness's own children.
type LabRuntime struct {
	Lab string // the lab's name
}

var _ Runtime = LabRuntime{}

// AddPod implements Runtime.
func (l LabRuntime) AddPod(ctx context.Context, p PodSpec) (Sandbox, error) {
	o := lab.PodOptions{Name: p.Name, Namespace: p.Namespace, Node: p.Node, Labels: p.Labels}
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

// Start implements Runtime.
func (LabRuntime) Start(netns string, argv []string, log io.Writer) (func(), error) {
	return startKillable(netns, argv, log)
}

// Serving implements Runtime.
func (LabRuntime) Serving(ctx context.Context, netns string, proto corev1.Protocol, port int32) error {
	return serving(ctx, netns, proto, port)
}
