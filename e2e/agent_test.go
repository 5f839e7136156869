package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

// storeIn runs `weft store serve` inside ns on its loopback and returns a
// client that dials into ns.
func storeIn(t *testing.T, ns string) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	cmd := netns.Command(ns, filepath.Join(bin, "weft"), "store", "serve", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--listen-peer-url", "http://127.0.0.1:2380")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return cli
		}
		if time.Now().After(deadline) {
			t.Fatalf("store in %s not up: %v", ns, err)
		}
	}
}

// agentBinary is weft's node agent, which TestMain builds beside weft.
func agentBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(bin, "weft-agent")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("weft-agent is not beside %s: build with 'go build -o bin/ ./cmd/...'", filepath.Join(bin, "weft"))
	}
	return p
}

// TestBadConfigChangesNothing runs the real agent against a real store
// holding an invalid config: it must exit with a one-line error naming the
// key and leave the node as it was.
func TestBadConfigChangesNothing(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	agent := agentBinary(t)
	ns := netnstest.New(t)
	cli := storeIn(t, ns)
	h, err := netns.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	linksBefore, _ := h.LinkList()
	for _, tc := range []struct{ doc, key string }{
		{`{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}`, "SubnetLen"},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.7","Backend":{"Type":"host-gw"}}`, "SubnetMin"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"ipsec"}}`, "Backend.Type"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"not-a-key"}}`, "Backend.PSK"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","Mode":"bogus"}}`, "Backend.Mode"},
	} {
		if _, err := cli.Put(context.Background(), "/coreos.com/network/config", tc.doc); err != nil {
			t.Fatal(err)
		}
		subnetFile := filepath.Join(t.TempDir(), "subnet.env")
		out, err := netns.Command(ns, agent, "--etcd-endpoints", "http://127.0.0.1:2379",
			"--subnet-file", subnetFile, "--ip-masq").CombinedOutput()
		last := strings.TrimSpace(string(out))
		if i := strings.LastIndexByte(last, '\n'); i >= 0 {
			last = last[i+1:]
		}
		// The agent's one-line error, whichever name it gives itself.
		if err == nil || !regexp.MustCompile(`^weft(-agent)?: net-conf\.json: `+regexp.QuoteMeta(tc.key)+`: `).MatchString(last) {
			t.Errorf("%s: exit %v, last line %q; want an error naming %s", tc.doc, err, last, tc.key)
		}
		t.Logf("%s -> %s", tc.doc, last)
		if _, err := os.Stat(subnetFile); !os.IsNotExist(err) {
			t.Errorf("%s: subnet.env was written", tc.doc)
		}
	}
	linksAfter, _ := h.LinkList()
	if len(linksAfter) != len(linksBefore) {
		t.Errorf("links changed: %d before, %d after", len(linksBefore), len(linksAfter))
	}
	fd, err := netns.Fd(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		t.Fatal(err)
	}
	if tables, _ := c.ListTables(); len(tables) != 0 {
		t.Errorf("nftables tables appeared: %d", len(tables))
	}
	resp, err := cli.Get(context.Background(), "/coreos.com/network/subnets/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("leases taken: %v %v", resp, err)
	}
}

// TestPasswordNotLogged starts an agent with an etcd password against an
// unreachable store and reads its log.
func TestPasswordNotLogged(t *testing.T) {
	if bin == "" {
		t.Skip("needs root")
	}
	agent := agentBinary(t)
	ns := netnstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "weft"), netns.ExecArg, ns, agent,
		"--etcd-endpoints", "http://127.0.0.1:2379", "--etcd-username", "weft", "--etcd-password", "s3cr3t-hunter2",
		"--subnet-file", filepath.Join(t.TempDir(), "subnet.env"))
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "starting weft agent") {
		t.Fatalf("agent did not start:\n%s", out)
	}
	if strings.Contains(string(out), "s3cr3t-hunter2") {
		t.Errorf("the etcd password appears in the log:\n%s", out)
	}
}
