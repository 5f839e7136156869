// Package source keeps the cluster as the NetworkPolicy engine sees it:
// Pods, Namespaces and NetworkPolicies, watched through client-go informers
// that keep only the fields policies use, and handed out as a
// *policy.Cluster snapshot with a coalescing change notification.
//
// Each informer's transform turns an object into the engine's form as it
// arrives (a Pod into a policy.Pod: namespace, name, labels, addresses,
// node, hostNetwork and named container ports; a NetworkPolicy keeps its
// name and spec), so the cache holds a few hundred bytes per pod however
// large the objects are: managed fields, annotations, container specs and
// conditions are never kept. Finished pods (Succeeded, Failed) and pods
// whose addresses do not parse are kept only as a placeholder that the
// snapshot leaves out; the latter are logged by name.
package source

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/policy"
)

// Options configure a Source.
type Options struct {
	Client *kubeclient.Client
	Log    *slog.Logger
}

// Source watches Pods (all namespaces), Namespaces and NetworkPolicies.
type Source struct {
	log      *slog.Logger
	pods     cache.SharedIndexInformer
	spaces   cache.SharedIndexInformer
	policies cache.SharedIndexInformer
	regs     []cache.ResourceEventHandlerRegistration
	changed  chan struct{} // 1-slot: coalesced "something policies see changed"

	mu sync.Mutex // guards the fields below
	// bad holds the pods left out because their addresses do not parse,
	// by namespace/name, with why: each is logged once per reason.
	bad map[string]string
	// watchErr is the last list or watch error of any informer.
	watchErr error
}

// New prepares the informers; it makes no request to the API server.
func New(o Options) (*Source, error) {
	if o.Client == nil {
		return nil, errors.New("policy source: a Kubernetes client is required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Source{log: o.Log, changed: make(chan struct{}, 1), bad: map[string]string{}}
	inf := func(r kubeclient.Resource, example runtime.Object, transform cache.TransformFunc, same func(x, y any) bool) (cache.SharedIndexInformer, error) {
		lw := cache.NewListWatchFromClient(o.Client.REST(r), r.Name, metav1.NamespaceAll, fields.Everything())
		i := cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{})
		if err := i.SetTransform(transform); err != nil {
			return nil, fmt.Errorf("policy source: %s informer transform: %w", r.Name, err)
		}
		if err := i.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			s.mu.Lock()
			s.watchErr = fmt.Errorf("list or watch %s: %w", r.Name, err)
			s.mu.Unlock()
			s.log.Warn("NetworkPolicy: cannot list or watch "+r.Name+"; retrying", "err", err)
		}); err != nil {
			return nil, fmt.Errorf("policy source: %s informer error handler: %w", r.Name, err)
		}
		reg, err := i.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {
				if !skipped(obj) {
					s.trigger()
				}
			},
			UpdateFunc: func(old, obj any) {
				if !same(old, obj) {
					s.trigger()
				}
			},
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				if p, ok := obj.(*podObj); ok {
					s.forget(p.Key())
				}
				if !skipped(obj) {
					s.trigger()
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("policy source: %s event handler: %w", r.Name, err)
		}
		s.regs = append(s.regs, reg)
		return i, nil
	}
	var err error
	if s.pods, err = inf(kubeclient.Pods, &corev1.Pod{}, s.stripPod, samePod); err != nil {
		return nil, err
	}
	if s.spaces, err = inf(kubeclient.Namespaces, &corev1.Namespace{}, stripNamespace, sameNamespace); err != nil {
		return nil, err
	}
	if s.policies, err = inf(kubeclient.NetworkPolicies, &networkingv1.NetworkPolicy{}, stripPolicy, samePolicy); err != nil {
		return nil, err
	}
	return s, nil
}

// trigger notes a change; bursts coalesce into one wake-up.
func (s *Source) trigger() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Changed receives a value after something the policies see has changed
// (many changes: one value). Updates that touch nothing the engine uses
// (a pod's conditions, a policy's annotations) send nothing.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// Run runs the informers until ctx ends.
func (s *Source) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, i := range []cache.SharedIndexInformer{s.pods, s.spaces, s.policies} {
		wg.Go(func() { i.RunWithContext(ctx) })
	}
	wg.Wait()
}

// Synced reports whether every informer has delivered its first full list
// to the cache and the change handlers.
func (s *Source) Synced() bool {
	for _, r := range s.regs {
		if !r.HasSynced() {
			return false
		}
	}
	return true
}

// WaitSynced blocks until Synced, or ctx ends.
func (s *Source) WaitSynced(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !s.Synced() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("list pods, namespaces and networkpolicies: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Err returns the last list or watch error (nil if there was none); the
// informers retry on their own.
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watchErr
}

// Snapshot returns the cluster as the caches hold it now, each slice
// sorted by namespace and name. The objects are the caches' own, shared
// with later snapshots: read only.
func (s *Source) Snapshot() *policy.Cluster {
	c := &policy.Cluster{}
	for _, o := range s.pods.GetStore().List() {
		if p, ok := o.(*podObj); ok && !p.skip {
			c.Pods = append(c.Pods, &p.Pod)
		}
	}
	for _, o := range s.spaces.GetStore().List() {
		if n, ok := o.(*namespaceObj); ok {
			c.Namespaces = append(c.Namespaces, &n.Namespace)
		}
	}
	for _, o := range s.policies.GetStore().List() {
		if p, ok := o.(*networkingv1.NetworkPolicy); ok {
			c.Policies = append(c.Policies, p)
		}
	}
	slices.SortFunc(c.Pods, func(x, y *policy.Pod) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	slices.SortFunc(c.Namespaces, func(x, y *policy.Namespace) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(c.Policies, func(x, y *networkingv1.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	return c
}

// podObj is a Pod as the cache keeps it. The cache's key function reads
// its name, namespace and version through GetObjectMeta.
type podObj struct {
	policy.Pod
	rv string
	// skip: not part of the cluster as policies see it (finished, or its
	// addresses do not parse).
	skip bool
}

func (p *podObj) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, ResourceVersion: p.rv}
}

// namespaceObj is a Namespace as the cache keeps it.
type namespaceObj struct {
	policy.Namespace
	rv string
}

func (n *namespaceObj) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.rv}
}

// stripPod is the pods' transform. Objects that are not Pods (a
// DeletedFinalStateUnknown, a pod already stripped) pass as they are.
func (s *Source) stripPod(obj any) (any, error) {
	in, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	p := &podObj{Pod: policy.Pod{Namespace: in.Namespace, Name: in.Name, Labels: in.Labels,
		Node: in.Spec.NodeName, HostNetwork: in.Spec.HostNetwork}, rv: in.ResourceVersion}
	if ph := in.Status.Phase; ph == corev1.PodSucceeded || ph == corev1.PodFailed {
		// A finished pod's address may already be another pod's.
		p.skip, p.Labels = true, nil
		s.forget(p.Key())
		return p, nil
	}
	ips := in.Status.PodIPs
	if len(ips) == 0 && in.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: in.Status.PodIP}}
	}
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip.IP)
		if err != nil || a.Zone() != "" {
			p.skip, p.Labels, p.IPs = true, nil, nil
			s.reportBad(p.Key(), fmt.Sprintf("status.podIPs has %q, which is not an IP address", ip.IP))
			return p, nil
		}
		if !slices.Contains(p.IPs, a.Unmap()) {
			p.IPs = append(p.IPs, a.Unmap())
		}
	}
	s.forget(p.Key())
	addPorts := func(cs []corev1.Container) {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.Name == "" || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
					continue // only named ports matter to policies
				}
				proto := policy.Protocol(cp.Protocol)
				if proto == "" {
					proto = policy.TCP
				}
				p.Ports = append(p.Ports, policy.ContainerPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
			}
		}
	}
	addPorts(in.Spec.Containers)
	var sidecars []corev1.Container // init containers that run beside the others
	for _, c := range in.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars = append(sidecars, c)
		}
	}
	addPorts(sidecars)
	return p, nil
}

// reportBad logs a pod left out, once per reason.
func (s *Source) reportBad(key, why string) {
	s.mu.Lock()
	was := s.bad[key]
	s.bad[key] = why
	s.mu.Unlock()
	if was != why {
		s.log.Warn("NetworkPolicy: pod left out: "+why, "pod", key)
	}
}

// forget drops a pod from the ones reported bad.
func (s *Source) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.bad[key]; ok {
		delete(s.bad, key)
		s.log.Info("NetworkPolicy: pod no longer left out", "pod", key)
	}
}

func stripNamespace(obj any) (any, error) {
	in, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &namespaceObj{Namespace: policy.Namespace{Name: in.Name, Labels: in.Labels}, rv: in.ResourceVersion}, nil
}

// stripPolicy keeps a NetworkPolicy's name, namespace, version and spec.
func stripPolicy(obj any) (any, error) {
	in, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok {
		return obj, nil
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: in.Namespace, Name: in.Name, UID: in.UID,
			ResourceVersion: in.ResourceVersion, Generation: in.Generation},
		Spec: in.Spec,
	}, nil
}

// skipped reports whether obj is a pod the snapshot leaves out.
func skipped(obj any) bool {
	p, ok := obj.(*podObj)
	return ok && p.skip
}

func samePod(x, y any) bool {
	a, ok1 := x.(*podObj)
	b, ok2 := y.(*podObj)
	if !ok1 || !ok2 {
		return false
	}
	if a.skip || b.skip {
		return a.skip == b.skip
	}
	return reflect.DeepEqual(a.Pod, b.Pod)
}

func sameNamespace(x, y any) bool {
	a, ok1 := x.(*namespaceObj)
	b, ok2 := y.(*namespaceObj)
	return ok1 && ok2 && reflect.DeepEqual(a.Namespace, b.Namespace)
}

func samePolicy(x, y any) bool {
	a, ok1 := x.(*networkingv1.NetworkPolicy)
	b, ok2 := y.(*networkingv1.NetworkPolicy)
	return ok1 && ok2 && reflect.DeepEqual(a.Spec, b.Spec)
}
