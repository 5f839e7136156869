package deploy

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftnet/weft/internal/kubeclient"
)

// Create creates each object (with dryRun, a server-side dry run, which
// validates and admits without storing). Objects that exist are left as
// they are.
func Create(ctx context.Context, c *kubeclient.Client, objs []runtime.Object, dryRun bool) error {
	opts := metav1.CreateOptions{FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	for _, obj := range objs {
		var r kubeclient.Resource
		switch obj.(type) {
		case *corev1.Namespace:
			r = kubeclient.Namespaces
		case *corev1.ServiceAccount:
			r = kubeclient.ServiceAccounts
		case *corev1.ConfigMap:
			r = kubeclient.ConfigMaps
		case *rbacv1.ClusterRole:
			r = kubeclient.ClusterRoles
		case *rbacv1.ClusterRoleBinding:
			r = kubeclient.ClusterRoleBindings
		case *appsv1.DaemonSet:
			r = kubeclient.DaemonSets
		default:
			return fmt.Errorf("deploy: no create for %T", obj)
		}
		if err := c.Create(ctx, r, obj.(metav1.Object), opts); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", describe(obj), err)
		}
	}
	return nil
}

func describe(obj runtime.Object) string {
	kind := fmt.Sprintf("%T", obj)
	m, ok := obj.(metav1.Object)
	if !ok {
		return kind
	}
	if m.GetNamespace() != "" {
		return fmt.Sprintf("%s %s/%s", kind, m.GetNamespace(), m.GetName())
	}
	return fmt.Sprintf("%s %s", kind, m.GetName())
}

// Only returns the objects of objs that keep says to keep.
func Only(objs []runtime.Object, keep func(runtime.Object) bool) []runtime.Object {
	var out []runtime.Object
	for _, o := range objs {
		if keep(o) {
			out = append(out, o)
		}
	}
	return out
}
