package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/policy/source"
)

// Container is the name of the one container of a lab pod's Pod object,
// which declares the pod's ports.
const Container = "serve"

// image is the container's image: a name only, nothing pulls it.
const image = "weft.invalid/lab-serve:v1"

// AdminConfig is a client config with the admin token whose connections
// are made inside the control namespace ctl, where the API server is
// reachable (it has no address in the root namespace).
func (k *Kube) AdminConfig(ctl string) *rest.Config {
	cfg := k.files().Config(k.URL, k.AdminToken, netns.Dialer(ctl))
	cfg.UserAgent = "weft-lab"
	return cfg
}

// AdminKubeconfig is the path of the admin's kubeconfig.
func (k *Kube) AdminKubeconfig() string { return k.Dir + "/admin.kubeconfig" }

// PodObject is the Pod object of lab pod p, as it is created: bound to
// its node, with its labels and one container declaring its ports.
func PodObject(p *pod.Pod) *corev1.Pod {
	var ports []corev1.ContainerPort
	for _, pp := range p.Ports {
		ports = append(ports, corev1.ContainerPort{Name: pp.Name, Protocol: corev1.Protocol(pp.Protocol), ContainerPort: int32(pp.Port)})
	}
	grace, automount := int64(0), false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.KubeNamespace(), Labels: p.Labels},
		Spec: corev1.PodSpec{
			NodeName: p.Node,
			// No kubelet confirms a graceful deletion here: 0 lets `kubectl
			// delete` remove the object at once.
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &automount,
			Containers:                    []corev1.Container{{Name: Container, Image: image, Ports: ports}},
		},
	}
}

// PodStatus is the status kubelet would report for lab pod p, running on
// a node whose address is hostIP: phase Running, its addresses (podIP
// the first, podIPs one per family), Ready.
func PodStatus(p *pod.Pod, hostIP netip.Addr, now time.Time) corev1.PodStatus {
	t := metav1.NewTime(now.Truncate(time.Second))
	started := true
	var conds []corev1.PodCondition
	for _, c := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		conds = append(conds, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: t})
	}
	return corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: conds,
		HostIP:     hostIP.String(),
		HostIPs:    []corev1.HostIP{{IP: hostIP.String()}},
		PodIP:      p.Addr.String(),
		PodIPs:     podIPs(p),
		StartTime:  &t,
		ContainerStatuses: []corev1.ContainerStatus{{Name: Container, Ready: true, Started: &started, Image: image,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}}}},
	}
}

// RegisterPod does for lab pod p what the scheduler and kubelet do for a
// pod: its Namespace (and the namespace's default ServiceAccount, which
// admission requires and kube-controller-manager would create) made if
// missing, the Pod object created as PodObject says (an existing one is
// kept, and bound to p's node if it is not bound yet), then its status
// set as PodStatus says. Idempotent.
func (k *Kube) RegisterPod(ctx context.Context, ctl string, p *pod.Pod, hostIP netip.Addr) error {
	c, err := k.admin(ctl)
	if err != nil {
		return err
	}
	ns := p.KubeNamespace()
	if err := EnsureNamespace(ctx, c, ns); err != nil {
		return err
	}
	var cur corev1.Pod
	err = c.Get(ctx, kubeclient.Pods, ns, p.Name, &cur)
	switch {
	case apierrors.IsNotFound(err):
		if err := c.Create(ctx, kubeclient.Pods, PodObject(p), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", p.Key(), err)
		}
	case err != nil:
		return fmt.Errorf("get pod %s: %w", p.Key(), err)
	case cur.Spec.NodeName == "":
		// Bound as the scheduler binds: POST pods/NAME/binding.
		b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns},
			Target: corev1.ObjectReference{Kind: "Node", Name: p.Node}}
		if err := c.REST(kubeclient.Pods).Post().Namespace(ns).Resource("pods").Name(p.Name).SubResource("binding").
			Body(b).Do(ctx).Error(); err != nil {
			return fmt.Errorf("bind pod %s to node %s: %w", p.Key(), p.Node, err)
		}
	case cur.Spec.NodeName != p.Node:
		return fmt.Errorf("pod %s is bound to node %s, not %s", p.Key(), cur.Spec.NodeName, p.Node)
	}
	patch, err := json.Marshal(map[string]any{"status": PodStatus(p, hostIP, time.Now())})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, kubeclient.Pods, ns, p.Name, types.MergePatchType, patch, "status"); err != nil {
		return fmt.Errorf("set the status of pod %s: %w", p.Key(), err)
	}
	return nil
}

// EnsureNamespace creates namespace ns and its default ServiceAccount if
// they are missing.
func EnsureNamespace(ctx context.Context, c *kubeclient.Client, ns string) error {
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if err := c.Create(ctx, kubeclient.Namespaces, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
	if err := c.Create(ctx, kubeclient.ServiceAccounts, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/default: %w", ns, err)
	}
	return nil
}

// DeletePod deletes Pod namespace/name at once (grace period 0: no
// kubelet is there to finish a graceful deletion). A Pod that is gone is
// success.
func (k *Kube) DeletePod(ctx context.Context, ctl, namespace, name string) error {
	c, err := k.admin(ctl)
	if err != nil {
		return err
	}
	err = c.REST(kubeclient.Pods).Delete().Namespace(namespace).Resource("pods").Name(name).
		Param("gracePeriodSeconds", "0").Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Cluster is what the API server holds that NetworkPolicy depends on.
type Cluster struct {
	Pods       []corev1.Pod
	Namespaces []corev1.Namespace
	Policies   []networkingv1.NetworkPolicy
}

// ReadCluster lists every Pod, Namespace and NetworkPolicy.
func (k *Kube) ReadCluster(ctx context.Context, ctl string) (*Cluster, error) {
	c, err := k.admin(ctl)
	if err != nil {
		return nil, err
	}
	o, err := source.ListObjects(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Cluster{Pods: o.Pods.Items, Namespaces: o.Namespaces.Items, Policies: o.Policies.Items}, nil
}

// podIPs are p's addresses as Kubernetes lists them.
func podIPs(p *pod.Pod) []corev1.PodIP {
	var out []corev1.PodIP
	for _, a := range p.AllAddrs() {
		out = append(out, corev1.PodIP{IP: a.String()})
	}
	return out
}
