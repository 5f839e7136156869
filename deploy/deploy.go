// Package deploy holds weft's Kubernetes manifests (weft.yaml), embedded so
// that tests and the lab apply exactly what users apply.
package deploy

import (
	_ "embed"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftnet/weft/internal/kubeclient"
)

// Manifest is deploy/weft.yaml.
//
//go:embed weft.yaml
var Manifest string

// Objects decodes the manifest into typed objects, in file order.
func Objects() ([]runtime.Object, error) {
	var out []runtime.Object
	for i, doc := range strings.Split(Manifest, "\n---\n") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, err := kubeclient.Decode([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("deploy/weft.yaml document %d: %w", i+1, err)
		}
		out = append(out, obj)
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
