package source

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/policy"
)

// List reads the cluster once from the API server (`weft policy explain`),
// with the same conversion as the informers.
func List(ctx context.Context, c *kubeclient.Client) (*policy.Cluster, error) {
	o, err := ListObjects(ctx, c)
	if err != nil {
		return nil, err
	}
	return FromObjects([]runtime.Object{&o.Pods, &o.Namespaces, &o.Policies})
}

// Objects are the API objects NetworkPolicy depends on, as listed.
type Objects struct {
	Pods       corev1.PodList
	Namespaces corev1.NamespaceList
	Policies   networkingv1.NetworkPolicyList
}

// ListObjects lists every Pod, Namespace and NetworkPolicy.
func ListObjects(ctx context.Context, c *kubeclient.Client) (*Objects, error) {
	o := &Objects{}
	if err := c.List(ctx, kubeclient.Pods, "", &o.Pods); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if err := c.List(ctx, kubeclient.Namespaces, "", &o.Namespaces); err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	if err := c.List(ctx, kubeclient.NetworkPolicies, "", &o.Policies); err != nil {
		return nil, fmt.Errorf("list networkpolicies: %w", err)
	}
	return o, nil
}

// FromObjects builds the cluster from API objects (Pods, Namespaces,
// NetworkPolicies and Lists of them; other kinds are ignored), as the
// informers convert them. A namespace that a pod or policy names but no
// object gives is added, and every namespace gets the label
// kubernetes.io/metadata.name the API server sets, so that files written
// by hand behave as the cluster would. A pod whose addresses do not parse
// is an error naming it.
func FromObjects(objs []runtime.Object) (*policy.Cluster, error) {
	s := &Source{log: slog.New(slog.DiscardHandler), bad: map[string]string{}}
	c := &policy.Cluster{}
	spaces := map[string]*policy.Namespace{}
	addSpace := func(name string, labels map[string]string) {
		n := spaces[name]
		if n == nil {
			n = &policy.Namespace{Name: name, Labels: map[string]string{}}
			spaces[name] = n
		}
		for k, v := range labels {
			n.Labels[k] = v
		}
		n.Labels[corev1.LabelMetadataName] = name
	}
	var add func(o runtime.Object) error
	add = func(o runtime.Object) error {
		switch o := o.(type) {
		case *corev1.PodList:
			for i := range o.Items {
				if err := add(&o.Items[i]); err != nil {
					return err
				}
			}
		case *corev1.NamespaceList:
			for i := range o.Items {
				addSpace(o.Items[i].Name, o.Items[i].Labels)
			}
		case *networkingv1.NetworkPolicyList:
			for i := range o.Items {
				if err := add(&o.Items[i]); err != nil {
					return err
				}
			}
		case *corev1.Namespace:
			addSpace(o.Name, o.Labels)
		case *corev1.Pod:
			if o.Namespace == "" {
				o.Namespace = "default"
			}
			obj, _ := s.stripPod(o)
			p := obj.(*podObj)
			if why, bad := s.bad[p.Key()]; bad {
				return fmt.Errorf("pod %s: %s", p.Key(), why)
			}
			addSpace(p.Namespace, nil)
			if !p.skip {
				c.Pods = append(c.Pods, &p.Pod)
			}
		case *networkingv1.NetworkPolicy:
			if o.Namespace == "" {
				o.Namespace = "default"
			}
			addSpace(o.Namespace, nil)
			obj, _ := stripPolicy(o)
			c.Policies = append(c.Policies, obj.(*networkingv1.NetworkPolicy))
		}
		return nil
	}
	for _, o := range objs {
		if err := add(o); err != nil {
			return nil, err
		}
	}
	for _, n := range spaces {
		c.Namespaces = append(c.Namespaces, n)
	}
	slices.SortFunc(c.Pods, func(x, y *policy.Pod) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	slices.SortFunc(c.Namespaces, func(x, y *policy.Namespace) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(c.Policies, func(x, y *networkingv1.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	return c, nil
}
