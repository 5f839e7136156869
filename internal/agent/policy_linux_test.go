package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/lease/leasetest"
	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
	"github.com/weftnet/weft/internal/policy/nft"
)

// listPolicyTable returns `nft list table inet weft-policy` in ns, "" when
// there is none.
func listPolicyTable(t *testing.T, ns string) string {
	t.Helper()
	var out []byte
	err := netns.Do(ns, func() error {
		var err error
		out, err = exec.Command("nft", "list", "table", "inet", nft.Table).CombinedOutput()
		return err
	})
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return ""
		}
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
}

// runAgent runs an agent with po until the returned stop is called.
func runAgent(t *testing.T, po *PolicyOptions) (*Agent, func()) {
	t.Helper()
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	a := New(Options{Store: m, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Resync: time.Hour, Log: quiet(), HealthzAddr: "", Policy: po}, &fakePlatform{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// TestPolicyTableInKernel: the agent's policy loop over the real nftables
// applier in a fresh namespace: the table follows the cluster, stays when
// the agent stops, stays untouched while a restarted agent waits for its
// first list, and is removed when enforcement is turned off.
func TestPolicyTableInKernel(t *testing.T) {
	ns := netnstest.New(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	newEnforcer := func() PolicyEnforcer {
		a, err := nft.New(nft.Options{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		return nftEnforcer{a}
	}
	src := newFakeSource(denyAll())
	src.synced.Store(true)
	a, stop := runAgent(t, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: newEnforcer()})
	eventually(t, "ready", func() bool { return a.Status().Ready })
	table := listPolicyTable(t, ns)
	if !strings.Contains(table, "10.244.1.2") || !strings.Contains(table, "fd00::2") || strings.Contains(table, "10.244.2.2") {
		t.Fatalf("the table does not isolate this node's pod (only):\n%s", table)
	}
	if n := testutilCount(t, a, "weft_policy_isolated_pods"); n != 1 {
		t.Errorf("weft_policy_isolated_pods %v", n)
	}
	if code, body := get(t, a, "/metrics"); code != 200 || !strings.Contains(body, `weft_policy_denied_packets_total{direction="ingress",namespace="shop",pod="web"} 0`+"\n") {
		t.Errorf("/metrics with the real counters: %d\n%s", code, body)
	}

	c := denyAll()
	c.Policies = nil
	src.set(c)
	eventually(t, "the pod let go", func() bool { return !strings.Contains(listPolicyTable(t, ns), "10.244.1.2") })
	src.set(denyAll())
	eventually(t, "the pod isolated again", func() bool { return strings.Contains(listPolicyTable(t, ns), "10.244.1.2") })
	stop()
	before := listPolicyTable(t, ns)
	if !strings.Contains(before, "10.244.1.2") {
		t.Fatalf("the table did not stay when the agent stopped:\n%s", before)
	}

	// A restart: until the new agent has listed the cluster, the table in
	// force stays as it was, even though the source would give nothing.
	empty := newFakeSource(denyAll())
	empty.cluster.Policies = nil
	a2, stop2 := runAgent(t, &PolicyOptions{Enabled: true, Node: "n1", Source: empty, Enforcer: newEnforcer()})
	eventually(t, "the lease synced", func() bool { return a2.Status().Synced })
	time.Sleep(300 * time.Millisecond)
	if now := listPolicyTable(t, ns); now != before {
		t.Fatalf("the table changed before the first list:\n%s\nwas\n%s", now, before)
	}
	empty.synced.Store(true)
	eventually(t, "the listed cluster applied", func() bool { return !strings.Contains(listPolicyTable(t, ns), "10.244.1.2") })
	stop2()

	// Enforcement off: the table goes.
	src.set(denyAll())
	a4, stop4 := runAgent(t, &PolicyOptions{Enabled: true, Node: "n1", Source: src, Enforcer: newEnforcer()})
	eventually(t, "ready", func() bool { return a4.Status().Ready })
	stop4()
	if !strings.Contains(listPolicyTable(t, ns), "10.244.1.2") {
		t.Fatal("no table to remove")
	}
	off := &removeCounter{PolicyEnforcer: newEnforcer()}
	a3, _ := runAgent(t, &PolicyOptions{Enabled: false, Enforcer: off})
	eventually(t, "ready", func() bool { return a3.Status().Ready })
	eventually(t, "the table removed", func() bool { return off.n.Load() == 1 })
	if table := listPolicyTable(t, ns); table != "" {
		t.Errorf("the table is still there:\n%s", table)
	}
}

// removeCounter counts Remove calls.
type removeCounter struct {
	PolicyEnforcer
	n atomic.Int32
}

func (r *removeCounter) Remove(ctx context.Context) error {
	err := r.PolicyEnforcer.Remove(ctx)
	if err == nil {
		r.n.Add(1)
	}
	return err
}

// TestBridgeNetfilterSysctls: in a fresh namespace, a bridge-nf-call
// sysctl at 0 is set back to 1 and reported; at 1 nothing is written.
func TestBridgeNetfilterSysctls(t *testing.T) {
	ns := netnstest.New(t)
	const v4 = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	err := netns.Do(ns, func() error {
		if _, err := os.Stat(v4); err != nil {
			return err
		}
		if err := os.WriteFile(v4, []byte("0"), 0o644); err != nil {
			return err
		}
		set, err := (&Linux{}).BridgeNetfilter()
		if err != nil || !slices.Equal(set, []string{"net.bridge.bridge-nf-call-iptables"}) {
			t.Errorf("set %v, err %v", set, err)
		}
		if b, _ := os.ReadFile(v4); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s reads %q after", v4, b)
		}
		set, err = (&Linux{}).BridgeNetfilter()
		if err != nil || len(set) > 0 {
			t.Errorf("again: set %v, err %v", set, err)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("no br_netfilter in this kernel")
	}
	if err != nil {
		t.Fatal(err)
	}
}
