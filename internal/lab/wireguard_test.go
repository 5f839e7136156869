package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/lab/process"
)

// TestWireGuardNodes: in a wireguard lab each weft node's agent gets its
// own socket directory (created, 0700) and key file; flanneld gets the key
// file only; other backends get neither.
func TestWireGuardNodes(t *testing.T) {
	s := testState("wireguard", false, false)
	s.AgentBinary = "/bin/weft-agent"
	for _, n := range s.Nodes {
		n.Dir = filepath.Join(t.TempDir(), n.Name)
	}
	n1, n3 := s.Nodes[0], s.Nodes[2]
	n3.Agent = process.Flannel
	a, err := s.agentSpec(n1)
	if err != nil {
		t.Fatal(err)
	}
	args := a.Args()
	i := slices.Index(args, "--wireguard-socket-dir")
	if i < 0 || i+1 >= len(args) || args[i+1] != filepath.Join(n1.Dir, "wireguard") {
		t.Errorf("n1's agent: %v, want --wireguard-socket-dir %s/wireguard", args, n1.Dir)
	}
	if fi, err := os.Stat(n1.wireguardDir()); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("n1's socket directory: %v %v", fi, err)
	}
	if env := s.wireguardEnv(n1); !slices.Equal(env, []string{"WIREGUARD_KEY_FILE=" + filepath.Join(n1.Dir, "wgkey")}) {
		t.Errorf("n1's agent environment: %v", env)
	}
	a, err = s.agentSpec(n3)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(a.Args(), "--wireguard-socket-dir") || len(s.wireguardEnv(n3)) != 1 {
		t.Errorf("flanneld on n3: args %v, env %v; want its key file only", a.Args(), s.wireguardEnv(n3))
	}
	var b strings.Builder
	s.picture(&b)
	if strings.Count(b.String(), ": wireguard udp/51820 via flannel-wg") != 3 {
		t.Errorf("wireguard picture:\n%s", b.String())
	}

	v := testState("vxlan", false, false)
	v.AgentBinary = "/bin/weft-agent"
	v.Nodes[0].Dir = filepath.Join(t.TempDir(), "n1")
	a, err = v.agentSpec(v.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(a.Args(), "--wireguard-socket-dir") || len(v.wireguardEnv(v.Nodes[0])) != 0 {
		t.Errorf("vxlan: args %v, env %v", a.Args(), v.wireguardEnv(v.Nodes[0]))
	}
	if _, err := os.Stat(v.Nodes[0].wireguardDir()); err == nil {
		t.Error("a vxlan node got a WireGuard socket directory")
	}
}
