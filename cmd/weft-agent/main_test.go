package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lockfile"
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
		"log-level", "net-config-path", "network-policy", "network-policy-log-group", "pprof", "public-ip", "resync-interval",
		"subnet-file", "subnet-lease-renew-margin", "subnet-lease-ttl",
	}
	if !slices.Equal(got, want) {
		t.Errorf("flags\n got %q\nwant %q", got, want)
	}
}

// TestBadStartRefused: every mistake on the command line is refused in one
// line naming the flag, before anything is locked, leased or written: no
// store is contacted (the endpoint answers nobody), the subnet file's
// directory stays empty, and nothing else is printed (no usage).
func TestBadStartRefused(t *testing.T) {
	file := t.TempDir() + "/subnet.env"
	notDir := t.TempDir() + "/file"
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "--ip-masq"}, `unexpected arguments ["agent"]: weft-agent takes only flags (run weft-agent -h)`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag (run weft-agent -h for the flags)"},
		{[]string{"--healthz-port", "x"}, `invalid value "x" for flag -healthz-port: parse error (run weft-agent -h for the flags)`},
		{[]string{"--public-ip", "2001:db8::1"}, `--public-ip "2001:db8::1" is not an IPv4 address`},
		{[]string{"--public-ip", "node1"}, `--public-ip "node1" is not an IPv4 address`},
		{[]string{"--public-ip", "0.0.0.0"}, "--public-ip 0.0.0.0 is not a unicast address peers can reach; use the node's underlay address"},
		{[]string{"--public-ip", "127.0.0.1"}, "--public-ip 127.0.0.1 is not a unicast address peers can reach"},
		{[]string{"--public-ip", "224.0.0.1"}, "--public-ip 224.0.0.1 is not a unicast address peers can reach"},
		{[]string{"--public-ip", "255.255.255.255"}, "--public-ip 255.255.255.255 is not a unicast address peers can reach"},
		{[]string{"--healthz-ip", "localhost", "--healthz-port", "9570"}, `--healthz-ip "localhost" is not an IP address (0.0.0.0: every IPv4 address of the node)`},
		{[]string{"--healthz-ip", "192.0.2.300"}, `--healthz-ip "192.0.2.300" is not an IP address`},
		{[]string{"--healthz-port", "65536"}, "--healthz-port 65536: use a port from 1 to 65535, or 0 for no health server"},
		{[]string{"--healthz-port", "-1"}, "--healthz-port -1: use a port from 1 to 65535"},
		{[]string{"--subnet-lease-ttl", "30s"}, "--subnet-lease-ttl 30s: use at least 1m (the default is 24h)"},
		{[]string{"--subnet-lease-renew-margin", "24h"}, "--subnet-lease-renew-margin 24h0m0s: use a positive duration shorter than --subnet-lease-ttl 24h0m0s"},
		{[]string{"--subnet-lease-renew-margin", "1440"}, "--subnet-lease-renew-margin 24h0m0s: use a positive duration shorter"}, // flannel's minutes
		{[]string{"--subnet-lease-renew-margin", "0"}, "--subnet-lease-renew-margin 0s: use a positive duration"},
		{[]string{"--subnet-lease-renew-margin", "soon"}, `invalid value "soon" for flag -subnet-lease-renew-margin: not a duration (90m, 1h) or a number of minutes`},
		{[]string{"--resync-interval", "0s"}, "--resync-interval 0s: use at least 1s (the default is 30s)"},
		{[]string{"--log-level", "loud"}, `--log-level "loud": use debug, info, warn or error`},
		{[]string{"--kube-read-only"}, "--kube-read-only is a Kubernetes mode option: add --kube-subnet-mgr, or drop it"},
		{[]string{"--subnet-file", ""}, "--subnet-file is empty"},
		{[]string{"--network-policy"}, "--network-policy needs the Kubernetes API (Pods, Namespaces, NetworkPolicies): add --kube-subnet-mgr, or drop it"},
		{[]string{"--network-policy=true"}, "--network-policy needs the Kubernetes API"},
		{[]string{"--network-policy-log-group", "5"}, "--network-policy-log-group logs what NetworkPolicy denies, which is off: drop it, or enforce NetworkPolicy"},
		{[]string{"--kube-subnet-mgr", "--network-policy=false", "--network-policy-log-group", "5"}, "--network-policy-log-group logs what NetworkPolicy denies, which is off"},
		{[]string{"--kube-subnet-mgr", "--network-policy-log-group", "65536"}, "--network-policy-log-group 65536: use an NFLOG group from 1 to 65535, or 0 for none"},
		{[]string{"--subnet-file", t.TempDir()}, " is a directory; name a file"},
		{[]string{"--subnet-file", notDir + "/subnet.env"}, "--subnet-file " + notDir + "/subnet.env: make its directory: "},
	} {
		var errb bytes.Buffer
		args := append([]string{"--etcd-endpoints", "http://192.0.2.1:1", "--subnet-file", file}, tc.args...)
		err := run(context.Background(), args, &errb)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v\nwant %s", tc.args, err, tc.want)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: the error is more than one line: %q", tc.args, err)
		}
		if errb.Len() > 0 {
			t.Errorf("%q printed %q", tc.args, errb.String())
		}
		if ents, _ := os.ReadDir(filepath.Dir(file)); len(ents) > 0 {
			t.Fatalf("%q left %v in the subnet file's directory", tc.args, ents)
		}
	}
}

// TestUnwritableSubnetDir: a subnet file whose directory the agent cannot
// write is refused before anything is leased. Root writes to any directory
// but not to /proc, where no one can create a file.
func TestUnwritableSubnetDir(t *testing.T) {
	dir := "/proc"
	if os.Geteuid() != 0 {
		dir = t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	err := run(context.Background(), []string{"--etcd-endpoints", "http://192.0.2.1:1", "--subnet-file", dir + "/subnet.env"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--subnet-file "+dir+"/subnet.env: its directory is not writable") {
		t.Errorf("unwritable directory: %v", err)
	}
}

// TestFlannelFlagValues: flannel's forms are taken: the renew margin as
// minutes, a missing subnet file directory made as flannel makes it.
func TestFlannelFlagValues(t *testing.T) {
	f, err := parseFlags([]string{"--subnet-lease-renew-margin", "90", "--healthz-ip", "::1", "--public-ip", "192.0.2.11"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if f.margin != 90*time.Minute || f.healthzIP != "::1" || f.publicIP != netip.MustParseAddr("192.0.2.11") {
		t.Errorf("margin %s, healthz-ip %s, public-ip %s", f.margin, f.healthzIP, f.publicIP)
	}
	file := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
	if err := checkSubnetDir(file); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Dir(file))
	if err != nil || len(ents) > 0 {
		t.Errorf("the directory is not there, or the check left %v: %v", ents, err)
	}
}

// TestNetworkPolicyFlags: NetworkPolicy is on by default in Kubernetes
// mode and can be turned off there; in etcd mode it is off, silently
// unless asked for (refused in TestBadStartRefused).
func TestNetworkPolicyFlags(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		env      string
		enabled  bool
		logGroup uint
	}{
		{args: []string{"--kube-subnet-mgr"}, enabled: true},
		{args: []string{"--kube-subnet-mgr", "--network-policy-log-group", "7"}, enabled: true, logGroup: 7},
		{args: []string{"--kube-subnet-mgr", "--network-policy=false"}},
		{args: []string{"--kube-subnet-mgr"}, env: "false"},
		{args: nil},
		{args: []string{"--network-policy=false"}},
	} {
		t.Setenv("WEFT_NETWORK_POLICY", tc.env)
		if tc.env == "" {
			os.Unsetenv("WEFT_NETWORK_POLICY")
		}
		f, err := parseFlags(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%q (env %q): %v", tc.args, tc.env, err)
			continue
		}
		if f.policy.enabled != tc.enabled || f.policy.logGroup != tc.logGroup {
			t.Errorf("%q (env %q): network-policy %t, log group %d; want %t, %d", tc.args, tc.env, f.policy.enabled, f.policy.logGroup, tc.enabled, tc.logGroup)
		}
	}
}

// TestSecondAgentRefused: while another agent holds the node's lock for a
// subnet file, an agent for the same file refuses in one line naming the
// holder's PID, before it contacts any store. Another open of the lock file
// conflicts as another process would (flock is per open file description;
// lockfile's tests use a second process).
func TestSecondAgentRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "subnet.env")
	first, err := lockfile.Acquire(file + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	err = run(context.Background(), []string{"--etcd-endpoints", "http://192.0.2.1:1", "--subnet-file", file}, &bytes.Buffer{})
	want := fmt.Sprintf("another weft agent (PID %d) runs on this node with subnet file %s; stop it first", os.Getpid(), file)
	if err == nil || err.Error() != want {
		t.Errorf("second agent: %v\nwant %s", err, want)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the second agent wrote %s: %v", file, err)
	}
}

// TestLockHeldWhileRunning: the agent holds the node's lock from before it
// touches the store until it returns. The store here is a Kubernetes API
// server that holds the agent's first request (finding its node) until
// the test has looked.
func TestLockHeldWhileRunning(t *testing.T) {
	arrived, answer := make(chan struct{}), make(chan struct{})
	var once sync.Once
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-answer
		http.Error(w, "no such pod", http.StatusNotFound)
	}))
	defer api.Close()
	t.Setenv("NODE_NAME", "")
	t.Setenv("POD_NAME", "weft-abcde")
	t.Setenv("POD_NAMESPACE", "kube-flannel")
	file := filepath.Join(t.TempDir(), "subnet.env")
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"--kube-subnet-mgr", "--kube-api-url", api.URL, "--subnet-file", file}, &bytes.Buffer{})
	}()
	select {
	case <-arrived:
	case err := <-done:
		t.Fatalf("run returned before asking the API server: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the agent never asked the API server")
	}
	_, err := lockfile.Acquire(file + ".lock")
	var held *lockfile.HeldError
	if !errors.As(err, &held) || held.PID != os.Getpid() {
		t.Errorf("while the agent runs: %v, want the lock held by PID %d", err, os.Getpid())
	}
	close(answer)
	if err := <-done; err == nil || !strings.Contains(err.Error(), "find this node from pod kube-flannel/weft-abcde") {
		t.Errorf("run: %v", err)
	}
	l, err := lockfile.Acquire(file + ".lock")
	if err != nil {
		t.Fatalf("after the agent returned: %v", err)
	}
	l.Release()
}
