package process

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/weftnet/weft/internal/netns"
)

// Agent kinds a node can run.
const (
	Weft    = "weft"    // weft's node agent, weft-agent
	Flannel = "flannel" // the reference flanneld
)

// Healthz is the port of every agent's health and readiness endpoint,
// inside its node's namespace.
const Healthz = 9570

// AgentBinary is the file name of weft's node agent.
const AgentBinary = "weft-agent"

// SpeakerBinary is the file name of the agent's BGP speaker, a child it
// starts from beside itself when BGP is on.
const SpeakerBinary = "weft-bgp"

// Beside locates the program name in the directory of the weft binary,
// as `go build -o bin/ ./cmd/...` puts them.
func Beside(weft, name string) (string, error) {
	p := filepath.Join(filepath.Dir(weft), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not beside %s: build with 'go build -o bin/ ./cmd/...'", name, weft)
	}
	return p, nil
}

// AgentSpec is what a node's agent is started with.
type AgentSpec struct {
	Kind       string // Weft or Flannel
	Binary     string // weft-agent or flanneld
	SubnetFile string // also how Ours recognises the process
	Etcd       string // the store's endpoint (etcd mode)
	// Kubernetes mode, when Kubeconfig is set.
	Kubeconfig string
	NetConf    string // net-conf.json
	ReadOnly   bool   // --kube-read-only (weft only)
	// Extra are flags added to weft's command line (the node's --bgp-*
	// flags).
	Extra []string
}

// Args is the agent's command line: the flags weft shares with flanneld,
// and for weft a short resync interval and pprof.
func (a AgentSpec) Args() []string {
	args := []string{a.Binary}
	if a.Kubeconfig != "" {
		args = append(args, "--kube-subnet-mgr", "--kubeconfig-file", a.Kubeconfig, "--net-config-path", a.NetConf)
	} else {
		args = append(args, "--etcd-endpoints", a.Etcd)
	}
	// flanneld masquerades with iptables (the iptables package must be
	// installed).
	args = append(args, "--iface", "eth0", "--subnet-file", a.SubnetFile, "--ip-masq", "--healthz-port", strconv.Itoa(Healthz))
	if a.Kind == Flannel {
		return args
	}
	args = append(args, "--resync-interval", "10s", "--pprof")
	if a.ReadOnly {
		args = append(args, "--kube-read-only")
	}
	return append(args, a.Extra...)
}

// Readyz asks the agent in namespace ns for its readiness document
// (GET /readyz on the healthz port), from inside ns.
func Readyz(ns string) (map[string]any, error) {
	body, err := Get(ns, "/readyz")
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("readyz in %s: %w", ns, err)
	}
	return out, nil
}

// Get fetches path (such as /readyz or /metrics) from the agent's health
// server on 127.0.0.1 inside ns, whatever its status code.
func Get(ns, path string) ([]byte, error) {
	var body []byte
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(Healthz), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		req, _ := http.NewRequest("GET", "http://node"+path, nil)
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return body, err
}
