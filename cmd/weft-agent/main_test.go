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
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/lease/kubestore"
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

// TestNoGoBGP: weft-agent does not link GoBGP, whose packages cost every
// agent some 18 MiB at start even with BGP off; its speaker runs in
// weft-bgp, which the agent starts through internal/bgp/proc.
func TestNoGoBGP(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, dep := range deps {
		if strings.HasPrefix(dep, "github.com/osrg/gobgp") || dep == "github.com/weftnet/weft/internal/bgp/speaker" {
			t.Errorf("weft-agent depends on %s", dep)
		}
	}
	if !slices.Contains(deps, "github.com/weftnet/weft/internal/bgp/proc") {
		t.Error("weft-agent does not link internal/bgp/proc, which runs its speaker")
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
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9_-]+)`).FindAllStringSubmatch(errb.String(), -1) {
		got = append(got, m[1])
	}
	want := []string{
		"bgp-local-as", "bgp-peer", "bgp-router-id",
		"etcd-cafile", "etcd-certfile", "etcd-endpoints", "etcd-keyfile", "etcd-password", "etcd-prefix", "etcd-username",
		"healthz-ip", "healthz-port", "iface", "iface-can-reach", "iface-regex", "ip-blackhole-route", "ip-masq", "ip-masq-fully-random-disable",
		"iptables-forward-rules", "iptables-resync",
		"kube-annotation-prefix", "kube-api-url", "kube-read-only", "kube-subnet-mgr", "kubeconfig-file",
		"log-level", "log_backtrace_at", "net-config-path", "network-policy", "network-policy-log-group", "pprof", "public-ip", "public-ipv6", "resync-interval",
		"set-node-network-unavailable", "subnet-file", "subnet-lease-renew-margin", "subnet-lease-ttl", "v", "version", "vmodule", "wireguard-socket-dir",
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
		{[]string{"--subnet-lease-renew-margin", "1440"}, `invalid value "1440" for flag -subnet-lease-renew-margin: 1440 minutes: use 1 to 1439, as flannel (less than a day)`}, // flannel's minutes
		{[]string{"--subnet-lease-renew-margin", "0"}, `invalid value "0" for flag -subnet-lease-renew-margin: 0 minutes: use 1 to 1439`},
		{[]string{"--subnet-lease-renew-margin", "-5"}, `invalid value "-5" for flag -subnet-lease-renew-margin: -5 minutes: use 1 to 1439`},
		{[]string{"--subnet-lease-renew-margin", "0s"}, "--subnet-lease-renew-margin 0s: use a positive duration"},
		{[]string{"--subnet-lease-ttl", "10m", "--subnet-lease-renew-margin", "20"}, "--subnet-lease-renew-margin 20m0s: use a positive duration shorter than --subnet-lease-ttl 10m0s"},
		{[]string{"--public-ipv6", "192.0.2.11"}, `--public-ipv6 "192.0.2.11" is not an IPv6 address`},
		{[]string{"--public-ipv6", "::ffff:192.0.2.11"}, `--public-ipv6 "::ffff:192.0.2.11" is not an IPv6 address`},
		{[]string{"--public-ipv6", "fe80::1%eth0"}, `--public-ipv6 "fe80::1%eth0" is not an IPv6 address`},
		{[]string{"--public-ipv6", "fe80::1"}, "--public-ipv6 fe80::1 is not a unicast address peers can reach; use the node's underlay address"},
		{[]string{"--public-ipv6", "ff02::1"}, "--public-ipv6 ff02::1 is not a unicast address peers can reach"},
		{[]string{"--public-ipv6", "::"}, "--public-ipv6 :: is not a unicast address peers can reach"},
		{[]string{"--iface", ""}, `invalid value "" for flag -iface: empty: name an interface or give one of its addresses`},
		{[]string{"--iface-regex", "eth("}, `invalid value "eth(" for flag -iface-regex: error parsing regexp: missing closing ): ` + "`eth(`"},
		{[]string{"--iface-can-reach", "gateway"}, `--iface-can-reach "gateway" is not an IP address`},
		{[]string{"--iptables-resync", "0"}, "--iptables-resync 0: use a number of seconds of at least 1 (it sets --resync-interval)"},
		{[]string{"--ip-blackhole-route"}, "--ip-blackhole-route is not supported: weft keeps no blackhole route for the node's subnet; add it yourself (ip route add blackhole SUBNET proto static"},
		{[]string{"-v", "-1"}, "-v -1: use a verbosity of 0 or more (or --log-level)"},
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
		{[]string{"--bgp-local-as", "AS64513"}, `--bgp-local-as: "AS64513" is not an AS number; write it in decimal, e.g. 64512`},
		{[]string{"--bgp-local-as", "23456"}, "--bgp-local-as: 23456 is AS_TRANS (RFC 6793)"},
		{[]string{"--bgp-router-id", "2001:db8::1"}, `--bgp-router-id: "2001:db8::1" is not an IPv4 address`},
		{[]string{"--bgp-peer", "192.0.2.1"}, "--bgp-peer 192.0.2.1: as: missing; give the peer's AS number, e.g. 192.0.2.1,as=64500"},
		{[]string{"--bgp-peer", "192.0.2.1,as=64500,password=s3cret"}, "--bgp-peer 192.0.2.1: password: not taken on the command line"},
		{[]string{"--bgp-peer", "192.0.2.1,as=64500,password-file=" + t.TempDir() + "/none"}, "--bgp-peer 192.0.2.1: password-file: open "},
		{[]string{"--bgp-peer", "192.0.2.1,as=64500", "--bgp-peer", "192.0.2.1,as=64501"}, "--bgp-peer 192.0.2.1 is given twice; give each peer once"},
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
	if f.margin != 90*time.Minute || f.healthzIP != "::1" || f.underlay.PublicIP != netip.MustParseAddr("192.0.2.11") {
		t.Errorf("margin %s, healthz-ip %s, public-ip %s", f.margin, f.healthzIP, f.underlay.PublicIP)
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

// TestBGPFlags: --bgp-local-as, --bgp-router-id and each --bgp-peer make
// the node's BGP settings, the password read from its file (a trailing
// newline dropped); WEFT_BGP_PEER gives one peer; no --bgp-peer leaves
// the peers unset (the annotation's or net-conf.json's apply).
func TestBGPFlags(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "router.password")
	if err := os.WriteFile(pw, []byte("s3 cr,et\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := parseFlags([]string{"--bgp-local-as", "64513", "--bgp-router-id", "192.0.2.13",
		"--bgp-peer", "192.0.2.1,as=64500,password-file=" + pw, "--bgp-peer", "2001:db8:0:1::1,as=64500,port=1179,multihop=2,hold-time=9"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := bgp.NodeSettings{LocalAS: 64513, RouterID: netip.MustParseAddr("192.0.2.13"), PeersSet: true, Peers: []bgp.Peer{
		{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Port: 179, Password: "s3 cr,et"},
		{Address: netip.MustParseAddr("2001:db8:0:1::1"), AS: 64500, Port: 1179, Multihop: 2, HoldTime: 9 * time.Second},
	}}
	if !reflect.DeepEqual(f.bgpNode, want) {
		t.Errorf("got %+v\nwant %+v", f.bgpNode, want)
	}
	f, err = parseFlags(nil, &bytes.Buffer{})
	if err != nil || !reflect.DeepEqual(f.bgpNode, bgp.NodeSettings{}) {
		t.Errorf("no BGP flags: %+v %v", f.bgpNode, err)
	}
	if f.notes != nil {
		t.Errorf("a password file only its owner reads: notes %q", f.notes)
	}
	t.Setenv("WEFT_BGP_PEER", "198.51.100.1,as=64500")
	t.Setenv("WEFT_BGP_LOCAL_AS", "64514")
	f, err = parseFlags(nil, &bytes.Buffer{})
	if err != nil || f.bgpNode.LocalAS != 64514 || !f.bgpNode.PeersSet || len(f.bgpNode.Peers) != 1 || f.bgpNode.Peers[0].Address != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("from the environment: %+v %v", f.bgpNode, err)
	}
	t.Setenv("WEFT_BGP_PEER", "198.51.100.1")
	if _, err := parseFlags(nil, &bytes.Buffer{}); err == nil || err.Error() != "--bgp-peer 198.51.100.1: as: missing; give the peer's AS number, e.g. 192.0.2.1,as=64500" {
		t.Errorf("a bad peer in the environment: %v", err)
	}
}

// TestBGPPasswordFileMode: a password file that group or others can read
// is read all the same, with one start-up warning for each such file,
// naming it and chmod 600; one only its owner reads gets none.
func TestBGPPasswordFileMode(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return p
	}
	world, group, own := file("world", 0o644), file("group", 0o640), file("own", 0o400)
	f, err := parseFlags([]string{"--bgp-peer", "192.0.2.1,as=64500,password-file=" + world, "--bgp-peer", "198.51.100.1,as=64500,password-file=" + world,
		"--bgp-peer", "192.0.2.2,as=64500,password-file=" + group, "--bgp-peer", "192.0.2.3,as=64500,password-file=" + own}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range f.bgpNode.Peers {
		if p.Password != "s3cret" {
			t.Errorf("peer %d: password %q", i, p.Password)
		}
	}
	want := []string{
		"--bgp-peer password file " + world + " can be read by group or others (mode 0644), and with it the TCP MD5 password: chmod 600 " + world,
		"--bgp-peer password file " + group + " can be read by group or others (mode 0640), and with it the TCP MD5 password: chmod 600 " + group,
	}
	if !slices.Equal(f.notes, want) {
		t.Errorf("notes:\n got %q\nwant %q", f.notes, want)
	}
	for _, n := range f.notes {
		if strings.Contains(n, "s3cret") {
			t.Errorf("a note shows the password: %s", n)
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

// TestFlannelFlags: each flanneld flag weft takes, as parsed: the
// interface flags into the underlay query, flannel's mappings onto weft's
// own flags (--iptables-resync, -v), and the klog flags that have no
// effect, which are said at start-up.
func TestFlannelFlags(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		check func(f *flags) bool
	}{
		{[]string{"--iface", "eth1", "--iface", "192.0.2.11", "--iface=eth0"}, func(f *flags) bool {
			return slices.Equal(f.underlay.Ifaces, []string{"eth1", "192.0.2.11", "eth0"})
		}},
		{[]string{"--iface-regex", `^eth\d$`, "--iface-regex", "^192\\.0\\.2\\."}, func(f *flags) bool {
			return slices.Equal(f.underlay.Regexes, []string{`^eth\d$`, `^192\.0\.2\.`})
		}},
		{[]string{"--iface-can-reach", "198.51.100.1"}, func(f *flags) bool { return f.underlay.CanReach == netip.MustParseAddr("198.51.100.1") }},
		{[]string{"--iface-can-reach", "2001:db8::1"}, func(f *flags) bool { return f.underlay.CanReach == netip.MustParseAddr("2001:db8::1") }},
		{[]string{"--public-ipv6", "2001:db8:0:1::11", "--public-ip", "192.0.2.11"}, func(f *flags) bool {
			return f.underlay.PublicIPv6 == netip.MustParseAddr("2001:db8:0:1::11") && f.underlay.PublicIP == netip.MustParseAddr("192.0.2.11")
		}},
		{nil, func(f *flags) bool {
			return f.underlay.Ifaces == nil && f.underlay.Regexes == nil && !f.underlay.CanReach.IsValid() && !f.underlay.PublicIPv6.IsValid() &&
				f.resync == 30*time.Second && f.logLevel == "info" && f.setNetworkAvailable && !f.masqNotFullyRandom && f.margin == time.Hour && f.notes == nil
		}},
		{[]string{"--subnet-lease-renew-margin", "1439"}, func(f *flags) bool { return f.margin == 1439*time.Minute }},
		{[]string{"--subnet-lease-renew-margin", "1"}, func(f *flags) bool { return f.margin == time.Minute }},
		{[]string{"--subnet-lease-renew-margin", "90s"}, func(f *flags) bool { return f.margin == 90*time.Second }},
		{[]string{"--iptables-resync", "5"}, func(f *flags) bool { return f.resync == 5*time.Second }},
		{[]string{"--iptables-resync", "5", "--resync-interval", "1m"}, func(f *flags) bool { return f.resync == time.Minute }},
		{[]string{"--ip-blackhole-route=false"}, func(f *flags) bool { return true }},
		{[]string{"--ip-masq", "--ip-masq-fully-random-disable"}, func(f *flags) bool { return f.ipMasq && f.masqNotFullyRandom }},
		{[]string{"--kube-subnet-mgr", "--set-node-network-unavailable=false"}, func(f *flags) bool { return !f.setNetworkAvailable }},
		{[]string{"-v", "2"}, func(f *flags) bool { return f.logLevel == "debug" }},
		{[]string{"-v=0"}, func(f *flags) bool { return f.logLevel == "info" }},
		{[]string{"-v", "4", "--log-level", "warn"}, func(f *flags) bool { return f.logLevel == "warn" }},
		{[]string{"-vmodule", "main=4", "-log_backtrace_at", "main.go:10"}, func(f *flags) bool {
			return f.logLevel == "info" && slices.Equal(f.notes, []string{
				"-vmodule has no effect on weft-agent (flannel's klog flag, accepted for its command lines); use --log-level",
				"-log_backtrace_at has no effect on weft-agent (flannel's klog flag, accepted for its command lines); use --log-level",
			})
		}},
		{[]string{"--kube-api-url", "https://192.0.2.1:6443", "--kube-subnet-mgr", "--kube-annotation-prefix", "example.com"}, func(f *flags) bool {
			return f.kube.apiURL == "https://192.0.2.1:6443" && f.kube.prefix == "example.com"
		}},
	} {
		f, err := parseFlags(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !tc.check(f) {
			t.Errorf("%q: parsed as %+v", tc.args, *f)
		}
	}
}

// TestFlannelEnvironment: every flag is read from FLANNELD_<FLAG> when the
// command line does not give it, a repeatable flag takes the variable as
// one value, and a FLANNELD_ variable that names no flag is reported.
func TestFlannelEnvironment(t *testing.T) {
	t.Setenv("FLANNELD_IFACE", "eth1")
	t.Setenv("FLANNELD_IFACE_REGEX", `^eth[0-9]+$`)
	t.Setenv("FLANNELD_IFACE_CAN_REACH", "198.51.100.1")
	t.Setenv("FLANNELD_PUBLIC_IPV6", "2001:db8:0:1::11")
	t.Setenv("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "30")
	t.Setenv("FLANNELD_IPTABLES_RESYNC", "7")
	t.Setenv("FLANNELD_V", "3")
	t.Setenv("FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE", "true")
	t.Setenv("FLANNELD_IFACE_REGX", "eth1") // misspelt
	t.Setenv("FLANNELD_NETWORKS", "a,b")    // a flag flannel removed long ago
	f, err := parseFlags([]string{"--iface", "eth0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.underlay.Ifaces, []string{"eth0"}) || !slices.Equal(f.underlay.Regexes, []string{`^eth[0-9]+$`}) ||
		f.underlay.CanReach != netip.MustParseAddr("198.51.100.1") || f.underlay.PublicIPv6 != netip.MustParseAddr("2001:db8:0:1::11") ||
		f.margin != 30*time.Minute || f.resync != 7*time.Second || f.logLevel != "debug" || !f.masqNotFullyRandom {
		t.Errorf("parsed as %+v", *f)
	}
	if want := []string{"FLANNELD_IFACE_REGX", "FLANNELD_NETWORKS"}; !slices.Equal(f.unknownEnv, want) {
		t.Errorf("unknown variables %q, want %q", f.unknownEnv, want)
	}
	t.Setenv("FLANNELD_IFACE_REGEX", "eth(")
	if _, err := parseFlags(nil, &bytes.Buffer{}); err == nil || !strings.HasPrefix(err.Error(), `FLANNELD_IFACE_REGEX="eth(": error parsing regexp`) {
		t.Errorf("a bad regex from the environment: %v", err)
	}
	t.Setenv("FLANNELD_IFACE_REGEX", "")
	t.Setenv("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "1440")
	if _, err := parseFlags(nil, &bytes.Buffer{}); err == nil || err.Error() != `FLANNELD_SUBNET_LEASE_RENEW_MARGIN="1440": 1440 minutes: use 1 to 1439, as flannel (less than a day)` {
		t.Errorf("a margin out of flannel's range from the environment: %v", err)
	}
}

// TestUnknownEnvironmentWarned: the agent says at start-up, by name, which
// FLANNELD_ variables it ignores, and which klog flags have no effect,
// before it contacts the store (an API server that refuses it here).
func TestUnknownEnvironmentWarned(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such node", http.StatusNotFound)
	}))
	defer api.Close()
	t.Setenv("NODE_NAME", "n1")
	t.Setenv("FLANNELD_IFACE_REGX", "eth1")
	var errb bytes.Buffer
	file := filepath.Join(t.TempDir(), "subnet.env")
	err := run(context.Background(), []string{"--kube-subnet-mgr", "--kube-api-url", api.URL, "--subnet-file", file, "-vmodule", "x=2"}, &errb)
	if err == nil {
		t.Fatal("run against an API server without the node succeeded")
	}
	for _, want := range []string{
		`level=WARN msg="environment variable FLANNELD_IFACE_REGX names no flag and is ignored (flanneld ignores it too); check its spelling against weft-agent -h" variable=FLANNELD_IFACE_REGX`,
		`level=WARN msg="-vmodule has no effect on weft-agent`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, errb.String())
		}
	}
}

// TestVersionAndHelp: --version prints the version to stderr (as
// flanneld) and touches nothing; -h and --help print the usage; the
// binary exits 0 for all three, and 1 for a mistake.
func TestVersionAndHelp(t *testing.T) {
	var errb bytes.Buffer
	dir := t.TempDir()
	if err := run(context.Background(), []string{"--version", "--subnet-file", dir + "/subnet.env"}, &errb); err != nil || errb.String() != version+"\n" {
		t.Errorf("--version: %v, printed %q", err, errb.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("--version left %v", ents)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"-h"}, 0, "Usage of weft-agent:\n"},
		{[]string{"--help"}, 0, "Usage of weft-agent:\n"},
		{[]string{"-help"}, 0, "Usage of weft-agent:\n"},
		{[]string{"--version"}, 0, version + "\n"},
		{[]string{"--no-such-flag"}, 1, "weft-agent: flag provided but not defined: -no-such-flag (run weft-agent -h for the flags)\n"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMainProcess$")
		cmd.Env = append(os.Environ(), "WEFT_AGENT_MAIN_ARGS="+strings.Join(tc.args, " "))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.HasPrefix(stderr.String(), tc.stderr) {
			t.Errorf("weft-agent %q: exit %d, stderr %q; want exit %d, stderr starting %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// TestMainProcess is weft-agent's main in a process of its own, for
// TestVersionAndHelp: it runs only with WEFT_AGENT_MAIN_ARGS set.
func TestMainProcess(t *testing.T) {
	args, ok := os.LookupEnv("WEFT_AGENT_MAIN_ARGS")
	if !ok {
		t.Skip("run by TestVersionAndHelp")
	}
	os.Args = append([]string{"weft-agent"}, strings.Fields(args)...)
	main()
	os.Exit(0)
}

// TestNoReadyMark: with --set-node-network-unavailable=false the store
// keeps every method of the Kubernetes store (the agent finds its
// optional interfaces by method) and MarkReady does nothing.
func TestNoReadyMark(t *testing.T) {
	methods := func(v any) []string {
		var out []string
		ty := reflect.TypeOf(v)
		for i := range ty.NumMethod() {
			out = append(out, ty.Method(i).Name)
		}
		return out
	}
	if got, want := methods(noReadyMark{}), methods(&kubestore.Store{}); !slices.Equal(got, want) || !slices.Contains(got, "MarkReady") {
		t.Errorf("noReadyMark has %q, the store %q", got, want)
	}
	if err := (noReadyMark{}).MarkReady(context.Background()); err != nil { // a nil store: it is not called
		t.Error(err)
	}
}
