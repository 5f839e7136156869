// Package kubeclient is a Kubernetes API client for the few kinds weft
// reads and writes: Nodes, Pods, Namespaces, NetworkPolicies, and what
// deploy/weft.yaml holds.
//
// client-go's generated clientset registers every built-in API group in a
// global scheme when the program starts, whether it talks to Kubernetes or
// not: linked into weft, that cost every agent, in etcd mode too, about
// 2.5 MiB of heap and the pages that its start-up touched. This client
// builds a scheme of the kinds below, and only when a Client is made.
package kubeclient

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// Resource names a kind of object by its API group and plural name.
type Resource struct {
	Group      string // "" is the core group
	Name       string // plural, as in the URL: "nodes"
	Namespaced bool
}

// The resources weft uses.
var (
	Nodes               = Resource{Name: "nodes"}
	Pods                = Resource{Name: "pods", Namespaced: true}
	Namespaces          = Resource{Name: "namespaces"}
	ServiceAccounts     = Resource{Name: "serviceaccounts", Namespaced: true}
	ConfigMaps          = Resource{Name: "configmaps", Namespaced: true}
	ClusterRoles        = Resource{Group: rbacv1.GroupName, Name: "clusterroles"}
	ClusterRoleBindings = Resource{Group: rbacv1.GroupName, Name: "clusterrolebindings"}
	DaemonSets          = Resource{Group: appsv1.GroupName, Name: "daemonsets", Namespaced: true}
	NetworkPolicies     = Resource{Group: networkingv1.GroupName, Name: "networkpolicies", Namespaced: true}
)

// scheme holds the kinds above and the meta types (Status, WatchEvent, list
// options) that requests and watches need.
type scheme struct {
	*runtime.Scheme
	codecs serializer.CodecFactory
	params runtime.ParameterCodec
}

var theScheme = sync.OnceValue(func() scheme {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, authv1.AddToScheme, rbacv1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("kubeclient: build the scheme: %v", err)) // static input: a programming error
		}
	}
	return scheme{Scheme: s, codecs: serializer.NewCodecFactory(s), params: runtime.NewParameterCodec(s)}
})

// Decode decodes one YAML or JSON object of a kind this client knows.
func Decode(doc []byte) (runtime.Object, error) {
	obj, _, err := theScheme().codecs.UniversalDeserializer().Decode(doc, nil, nil)
	return obj, err
}

// Client talks to one API server.
type Client struct {
	groups map[string]rest.Interface // by API group
}

// New returns a client for cfg, which it copies.
func New(cfg *rest.Config) (*Client, error) {
	s := theScheme()
	c := &Client{groups: map[string]rest.Interface{}}
	for _, gv := range []schema.GroupVersion{corev1.SchemeGroupVersion, rbacv1.SchemeGroupVersion, appsv1.SchemeGroupVersion, networkingv1.SchemeGroupVersion} {
		gcfg := rest.CopyConfig(cfg)
		gcfg.GroupVersion = &gv
		gcfg.APIPath = "/apis"
		if gv.Group == "" {
			gcfg.APIPath = "/api"
		}
		gcfg.NegotiatedSerializer = s.codecs.WithoutConversion()
		if gcfg.UserAgent == "" {
			gcfg.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		rc, err := rest.RESTClientFor(gcfg)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
		}
		c.groups[gv.Group] = rc
	}
	return c, nil
}

// REST returns the REST client of r's API group, for list-watches.
func (c *Client) REST(r Resource) rest.Interface { return c.groups[r.Group] }

func (c *Client) request(verb string, r Resource, ns string) *rest.Request {
	req := c.groups[r.Group].Verb(verb).Resource(r.Name)
	if r.Namespaced {
		req = req.Namespace(ns)
	}
	return req
}

// Get reads object ns/name into out.
func (c *Client) Get(ctx context.Context, r Resource, ns, name string, out runtime.Object) error {
	return c.request("GET", r, ns).Name(name).Do(ctx).Into(out)
}

// List reads all objects of r (in ns) into out, a list.
func (c *Client) List(ctx context.Context, r Resource, ns string, out runtime.Object) error {
	return c.request("GET", r, ns).Do(ctx).Into(out)
}

// Create creates obj, in its own namespace if r is namespaced.
func (c *Client) Create(ctx context.Context, r Resource, obj metav1.Object, opts metav1.CreateOptions) error {
	ro, ok := obj.(runtime.Object)
	if !ok {
		return fmt.Errorf("create %s: %T is not an API object", obj.GetName(), obj)
	}
	return c.request("POST", r, obj.GetNamespace()).VersionedParams(&opts, theScheme().params).Body(ro).Do(ctx).Error()
}

// Delete deletes object ns/name.
func (c *Client) Delete(ctx context.Context, r Resource, ns, name string) error {
	return c.request("DELETE", r, ns).Name(name).Do(ctx).Error()
}

// Patch patches object ns/name, or its subresource if one is named.
func (c *Client) Patch(ctx context.Context, r Resource, ns, name string, pt types.PatchType, data []byte, subresource string) error {
	req := c.request("PATCH", r, ns).Name(name)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	return req.SetHeader("Content-Type", string(pt)).Body(data).Do(ctx).Error()
}

// ServiceAccountToken makes sure the service account ns/name exists and
// returns a token for it, valid for ttl (TokenRequest API).
func (c *Client) ServiceAccountToken(ctx context.Context, ns, name string, ttl time.Duration) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if err := c.Create(ctx, ServiceAccounts, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", ns, name, err)
	}
	secs := int64(ttl.Seconds())
	tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	if err := c.request("POST", ServiceAccounts, ns).Name(name).SubResource("token").Body(tr).Do(ctx).Into(tr); err != nil {
		return "", fmt.Errorf("token for service account %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}
