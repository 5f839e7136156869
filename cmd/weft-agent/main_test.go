package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestNoHeavyDependencies guards what the node agent links: not the
// embedded etcd server (with raft, bbolt and OpenTelemetry), not libcni,
// the lab or the kube-apiserver harness. Those are the weft binary's.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, dep := range deps {
		for _, banned := range []string{
			"go.etcd.io/etcd/server/", "go.etcd.io/raft/", "go.etcd.io/bbolt", "go.opentelemetry.io/",
			"github.com/containernetworking/cni/libcni",
			"github.com/weftnet/weft/internal/etcdserver",
			"github.com/weftnet/weft/internal/lab",
			"github.com/weftnet/weft/internal/kubeapi",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("weft-agent depends on %s", dep)
			}
		}
	}
	// And it does link what a node runs: a guard that lists nothing
	// would pass for any binary.
	for _, want := range []string{
		"github.com/vishvananda/netlink", "github.com/google/nftables", "go.etcd.io/etcd/client/v3",
		"github.com/weftnet/weft/internal/kubeclient", "github.com/weftnet/weft/internal/agent",
	} {
		if !slices.Contains(deps, want) {
			t.Errorf("weft-agent does not link %s", want)
		}
	}
}

// TestFlags: weft-agent takes the flags `weft agent` took, with flannel's
// names, plus flannel's --iptables-forward-rules.
func TestFlags(t *testing.T) {
	var errb bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &errb); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(errb.String(), -1) {
		got = append(got, m[1])
	}
	want := []string{
		"etcd-cafile", "etcd-certfile", "etcd-endpoints", "etcd-keyfile", "etcd-password", "etcd-prefix", "etcd-username",
		"healthz-ip", "healthz-port", "iface", "ip-masq", "iptables-forward-rules",
		"kube-annotation-prefix", "kube-api-url", "kube-read-only", "kube-subnet-mgr", "kubeconfig-file",
		"log-level", "net-config-path", "pprof", "public-ip", "resync-interval",
		"subnet-file", "subnet-lease-renew-margin", "subnet-lease-ttl",
	}
	if !slices.Equal(got, want) {
		t.Errorf("flags\n got %q\nwant %q", got, want)
	}
}

// TestBadStartRefused: mistakes on the command line are refused before
// any store is contacted.
func TestBadStartRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "--ip-masq"}, `unexpected arguments ["agent"]`},
		{[]string{"--public-ip", "2001:db8::1"}, `--public-ip "2001:db8::1" is not an IPv4 address`},
		{[]string{"--public-ip", "node1"}, `--public-ip "node1" is not an IPv4 address`},
	} {
		var errb bytes.Buffer
		err := run(context.Background(), append(tc.args, "--etcd-endpoints", "http://192.0.2.1:1"), &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %s", tc.args, err, tc.want)
		}
	}
}
