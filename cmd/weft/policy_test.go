package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// clusterYAML is a cluster written by hand: the namespaces are implied
// ("y" quoted: YAML 1.1 reads a bare y as true), pods carry their address.
const clusterYAML = `apiVersion: v1
kind: Pod
metadata: {namespace: x, name: a, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: i, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: "y", name: b, labels: {app: client}}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {podIP: 10.244.2.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: allow-client-http}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
`

func TestPolicyExplainFromFiles(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(f, []byte(clusterYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args    []string
		allowed bool
		out     string // in stdout, or in the error
	}{
		{[]string{"--from", "y/b", "--to", "x/a", "--port", "80/tcp"}, true, "80/TCP: allowed"},
		{[]string{"--from", "y/b", "--to", "x/a", "--port", "81/tcp"}, false, "ingress x/a on n1: isolated by x/allow-client-http; allowed by none: denied"},
		{[]string{"--from", "y/b", "--to", "x/a", "--port", "80/udp"}, false, "80/UDP: denied"},
		{[]string{"--from", "y/b", "--to", "x/a"}, false, "denied"}, // ICMP: the rule names a port
		{[]string{"--from", "y/c", "--to", "x/a"}, false, "no pod y/c in the cluster"},
		{[]string{"--from", "z/c", "--to", "x/a"}, false, "no namespace z"},
		{[]string{"--from", "y/b", "--to", "x/a", "--port", "80/icmp"}, false, `protocol "icmp": use tcp, udp or sctp`},
		{[]string{"--from", "y/b", "--to", "x/a", "--port", "0"}, false, "is not a port number"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"policy", "explain", "-f", f}, c.args...), &out, &errb)
		var ee exitError
		switch {
		case c.allowed && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case !c.allowed && err == nil:
			t.Errorf("%v: no error (exit 0), want denied:\n%s", c.args, out.String())
		case err != nil && !errors.As(err, &ee) && !strings.Contains(err.Error(), c.out):
			t.Errorf("%v: error %q, want %q", c.args, err, c.out)
		case errors.As(err, &ee) && (int(ee) != 1 || !strings.Contains(out.String(), c.out)):
			t.Errorf("%v: exit %d, output:\n%s\nwant exit 1 and %q", c.args, int(ee), out.String(), c.out)
		case err == nil && !strings.Contains(out.String(), c.out):
			t.Errorf("%v: output:\n%s\nwant %q", c.args, out.String(), c.out)
		}
	}
}

func TestPolicyExplainNeedsOneSource(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"policy", "explain", "--from", "x/a", "--to", "y/b"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "give one of --kubeconfig, --lab or -f") {
		t.Errorf("no source: %v", err)
	}
}
