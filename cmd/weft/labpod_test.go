package main

import (
	"strings"
	"testing"
)

func TestKubectlArgs(t *testing.T) {
	for _, tc := range []struct{ in, name, rest string }{
		{"get pods -A", "weft", "get pods -A"},
		{"--name kube get pods --namespace x", "kube", "get pods --namespace x"},
		{"--name=kube -- apply -f -", "kube", "apply -f -"},
		{"-- --name x", "weft", "--name x"},
		{"get --name x", "weft", "get --name x"},
	} {
		name, rest := kubectlArgs(strings.Fields(tc.in))
		if name != tc.name || strings.Join(rest, " ") != tc.rest {
			t.Errorf("%q: lab %q, kubectl %q; want %q, %q", tc.in, name, rest, tc.name, tc.rest)
		}
	}
}
