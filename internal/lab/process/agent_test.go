package process

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentArgs(t *testing.T) {
	for _, tc := range []struct {
		spec AgentSpec
		want string
	}{
		{AgentSpec{Kind: Weft, Binary: "/b/weft-agent", SubnetFile: "/r/n1/subnet.env", Etcd: "http://192.0.2.2:2379"},
			"/b/weft-agent --etcd-endpoints http://192.0.2.2:2379 --iface eth0 --subnet-file /r/n1/subnet.env --ip-masq --healthz-port 9570 --resync-interval 10s --pprof"},
		{AgentSpec{Kind: Flannel, Binary: "/b/flanneld", SubnetFile: "/r/n3/subnet.env", Etcd: "http://192.0.2.2:2379"},
			"/b/flanneld --etcd-endpoints http://192.0.2.2:2379 --iface eth0 --subnet-file /r/n3/subnet.env --ip-masq --healthz-port 9570"},
		{AgentSpec{Kind: Weft, Binary: "/b/weft-agent", SubnetFile: "/s", Kubeconfig: "/k", NetConf: "/nc", ReadOnly: true},
			"/b/weft-agent --kube-subnet-mgr --kubeconfig-file /k --net-config-path /nc --iface eth0 --subnet-file /s --ip-masq --healthz-port 9570 --resync-interval 10s --pprof --kube-read-only"},
		{AgentSpec{Kind: Weft, Binary: "/b/weft-agent", SubnetFile: "/s", Etcd: "http://e", Extra: []string{"--bgp-local-as", "64513"}},
			"/b/weft-agent --etcd-endpoints http://e --iface eth0 --subnet-file /s --ip-masq --healthz-port 9570 --resync-interval 10s --pprof --bgp-local-as 64513"},
		{AgentSpec{Kind: Flannel, Binary: "/b/flanneld", SubnetFile: "/s", Etcd: "http://e", Extra: []string{"--bgp-local-as", "64513"}},
			"/b/flanneld --etcd-endpoints http://e --iface eth0 --subnet-file /s --ip-masq --healthz-port 9570"},
		{AgentSpec{Kind: Flannel, Binary: "/b/flanneld", SubnetFile: "/s", Kubeconfig: "/k", NetConf: "/nc"},
			"/b/flanneld --kube-subnet-mgr --kubeconfig-file /k --net-config-path /nc --iface eth0 --subnet-file /s --ip-masq --healthz-port 9570"},
	} {
		if got := strings.Join(tc.spec.Args(), " "); got != tc.want {
			t.Errorf("%+v:\n got %s\nwant %s", tc.spec, got, tc.want)
		}
	}
}

func TestBeside(t *testing.T) {
	dir := t.TempDir()
	weft := filepath.Join(dir, "weft")
	if _, err := Beside(weft, AgentBinary); err == nil || err.Error() != "weft-agent is not beside "+weft+": build with 'go build -o bin/ ./cmd/...'" {
		t.Errorf("missing weft-agent: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, AgentBinary), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := Beside(weft, AgentBinary); err != nil || p != filepath.Join(dir, AgentBinary) {
		t.Errorf("Beside: %q %v", p, err)
	}
}

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("Tail: %q", got)
	}
	if got := Tail("a\n", 5); got != "a" {
		t.Errorf("Tail of a short log: %q", got)
	}
}

func TestOursIsNotAnyProcess(t *testing.T) {
	// The test binary is not a lab process, whatever its arguments hold.
	if Ours(os.Getpid(), os.Args[0]) || Ours(0, "serve") || Ours(-1, "serve") {
		t.Error("Ours recognised a process the lab did not start")
	}
}
