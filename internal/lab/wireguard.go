package lab

import (
	"os"
	"os/exec"
	"path/filepath"

	"github.com/weftnet/weft/internal/backend/wireguard"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
)

// wgRunDir is where `wg` looks for wireguard-go's control sockets
// (/var/run/wireguard; /var/run is /run on current distributions). A
// node's own directory is bind-mounted there for `lab exec` only.
const wgRunDir = "/run/wireguard"

// wireguardDir is the directory of the node's WireGuard control sockets
// (weft-agent --wireguard-socket-dir): every node has its own, so that
// nodes never share the host's /var/run/wireguard.
func (n *Node) wireguardDir() string { return filepath.Join(n.Dir, "wireguard") }

// wireguardKey is the node's private key file (WIREGUARD_KEY_FILE), the
// agent's to create and keep.
func (n *Node) wireguardKey() string { return filepath.Join(n.Dir, "wgkey") }

// wireguardFlags are the agent flags of a node of a wireguard lab: its
// own socket directory, created here. flanneld has no such flag (it runs
// only kernel WireGuard).
func (s *State) wireguardFlags(n *Node) ([]string, error) {
	if s.Backend != wireguard.Type || n.Agent != process.Weft {
		return nil, nil
	}
	if err := os.MkdirAll(n.wireguardDir(), 0o700); err != nil {
		return nil, err
	}
	return []string{"--wireguard-socket-dir", n.wireguardDir()}, nil
}

// wireguardEnv is the environment of a node's agent in a wireguard lab:
// its own key file (flannel's variable, which weft-agent reads too).
func (s *State) wireguardEnv(n *Node) []string {
	if s.Backend != wireguard.Type {
		return nil
	}
	return []string{"WIREGUARD_KEY_FILE=" + n.wireguardKey()}
}

// execCommand runs argv in the namespace of target; on a node with a
// WireGuard socket directory, in a private mount namespace where that
// directory is /var/run/wireguard, so that `wg show` reads the node's own
// devices.
func (s *State) execCommand(target, ns string, argv []string) *exec.Cmd {
	if n, err := s.node(target); err == nil && n.NS == ns {
		if fi, err := os.Stat(n.wireguardDir()); err == nil && fi.IsDir() {
			return netns.CommandBind(ns, netns.Bind{Src: n.wireguardDir(), Dst: wgRunDir}, argv...)
		}
	}
	return netns.Command(ns, argv...)
}
