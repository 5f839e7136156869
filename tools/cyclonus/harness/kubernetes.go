package harness

import (
	"context"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/mattfenwick/cyclonus/pkg/kube"
)

// Kubernetes is cyclonus's view of the lab (its only plug point,
// kube.IKubernetes): every create, read, update and delete goes to the
// real API server through the embedded kube.Kubernetes; only
// ExecuteRemoteCommand differs, running the probe inside the source pod's
// network namespace instead of through `kubectl exec`.
type Kubernetes struct {
	*kube.Kubernetes
	Pods    *Kubelet // where pods run
	Agnhost string   // stands for the image's /agnhost
	// Limit bounds one command's run, past agnhost's own --timeout.
	Limit time.Duration
}

var _ kube.IKubernetes = (*Kubernetes)(nil)

// ExecuteRemoteCommand runs command in the pod namespace/pod as `kubectl
// exec` would (the container does not matter: a pod's containers share its
// network namespace). The command is cyclonus's probe, `/agnhost connect
// HOST:PORT --timeout=Ns --protocol=P`; the image's /agnhost is ours.
// Following kube.Kubernetes: commandErr is the command's own failure (the
// probe says "blocked"), err a failure to run it at all ("check failed").
func (k *Kubernetes) ExecuteRemoteCommand(namespace, pod, container string, command []string) (stdout, stderr string, commandErr, err error) {
	if len(command) == 0 || path.Base(command[0]) != "agnhost" {
		return "", "", nil, fmt.Errorf("exec in %s/%s: %q is not an agnhost command", namespace, pod, command)
	}
	sb, ok := k.Pods.Lookup(namespace, pod)
	if !ok {
		return "", "", nil, fmt.Errorf("exec in %s/%s: the pod does not run", namespace, pod)
	}
	argv := slices.Clone(command)
	argv[0] = k.Agnhost
	limit := k.Limit
	if limit <= 0 {
		limit = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return runIn(ctx, sb.NetNS, argv)
}
