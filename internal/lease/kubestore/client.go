package kubestore

import (
	"context"
	"errors"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftnet/weft/internal/kubeclient"
)

// Client connects to the API server: through apiURL and/or kubeconfig when
// given (flannel's --kube-api-url and --kubeconfig-file), else with the
// pod's service account. It speaks protobuf, which costs the agent less
// memory and CPU than JSON.
func Client(apiURL, kubeconfig, userAgent string) (*kubeclient.Client, error) {
	var cfg *rest.Config
	var err error
	if apiURL == "" && kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: not in a pod (%w): set --kubeconfig-file or --kube-api-url", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client from --kube-api-url %q and --kubeconfig-file %q: %w", apiURL, kubeconfig, err)
		}
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.UserAgent = userAgent
	c, err := kubeclient.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// NodeName is this node's name: NODE_NAME, else the spec.nodeName of the
// agent's own pod (POD_NAME in POD_NAMESPACE), as flannel finds it.
func NodeName(ctx context.Context, c *kubeclient.Client) (string, error) {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	pod, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if pod == "" || ns == "" {
		return "", errors.New("cannot tell which node this is: set NODE_NAME (the DaemonSet sets it from spec.nodeName), or POD_NAME and POD_NAMESPACE")
	}
	p := &corev1.Pod{}
	if err := c.Get(ctx, kubeclient.Pods, ns, pod, p); err != nil {
		return "", fmt.Errorf("find this node from pod %s/%s: %w", ns, pod, err)
	}
	if p.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled to a node", ns, pod)
	}
	return p.Spec.NodeName, nil
}
