package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/lab/router"
	"github.com/weftnet/weft/internal/lab/topology"
	"github.com/weftnet/weft/internal/netns"
)

// The BGP settings of a lab started with --bgp, documented in the lab's
// docs: the router keeps a node's routes for bgpRestartTime after its
// session closes without a NOTIFICATION (an agent restart, or a node
// removed for good), and a session whose peer stops answering ends after
// router.HoldTime.
const (
	bgpRestartTime = 30 // seconds
	bgpLocalAS     = 64512
)

// routerPeersWord, given to --bgp-peer of `weft lab agent`, stands for
// the lab's own peers of the node (its side's router address per family).
const routerPeersWord = "router"

// startRouter starts the lab's BGP router in the underlay namespace (the
// router between the sides), with no neighbour yet: addNode adds each
// node's.
func (s *State) startRouter(ctx context.Context, w io.Writer) error {
	r := s.Router
	r.NS, r.Dir, r.ID, r.AS = s.Underlay, filepath.Join(dir(s.Name), "router"), topology.Gateway(topology.L3, "a"), router.AS
	if err := r.SavePassword(); err != nil { // not in the state file, which anyone may read
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	if err := s.tuneRouterNeighbours(); err != nil {
		return err
	}
	if err := r.Start(ctx, s.save); err != nil {
		return err
	}
	fmt.Fprintf(w, "router: %s in %s, AS %d, hold time %ds, graceful restart (nodes' restart time %ds)\n", r.Kind, s.Underlay, r.AS, router.HoldTime, bgpRestartTime)
	return s.save()
}

// nodeIndex is K of node nK.
func nodeIndex(name string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(name, "n"))
	return i
}

// routerAddrs are the router's addresses n peers with: its address on
// n's side, per family of the lab's pods.
func (s *State) routerAddrs(n *Node) []netip.Addr {
	var out []netip.Addr
	gw := topology.Gateway(topology.L3, n.Side)
	if topology.HasIPv4(s.IPFamily) {
		out = append(out, gw)
	}
	if topology.HasIPv6(s.IPFamily) {
		out = append(out, topology.Mirror6(n.Side, gw))
	}
	return out
}

// neighbors are n's sessions as the router sees them: n's underlay
// address per family of the lab's pods.
func (s *State) neighbors(n *Node) []router.Neighbor {
	var out []router.Neighbor
	for _, gw := range s.routerAddrs(n) {
		out = append(out, router.Neighbor{Node: n.Name, Addr: n.AddrOf(gw.Is6()), AS: router.NodeAS(nodeIndex(n.Name))})
	}
	return out
}

// passwordFile is where n's agent reads the sessions' MD5 password.
func (n *Node) passwordFile() string { return filepath.Join(n.Dir, "bgp-password") }

// prepareBGP adds n's neighbours to the router and writes the password
// file n's agent reads; a no-op in a lab without BGP.
func (s *State) prepareBGP(ctx context.Context, n *Node) error {
	if s.Router == nil {
		return nil
	}
	if s.Router.Password != "" {
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(n.passwordFile(), []byte(s.Router.Password+"\n"), 0o600); err != nil {
			return err
		}
	}
	if err := s.Router.AddNeighbor(ctx, s.neighbors(n)...); err != nil {
		return err
	}
	return s.save()
}

// peerFlags are n's --bgp-peer values: the router's addresses, or the
// node's own list (`weft lab agent restart --bgp-peer`), in which the
// word "router" stands for the router's.
func (s *State) peerFlags(n *Node) []string {
	var lab []string
	for _, gw := range s.routerAddrs(n) {
		v := fmt.Sprintf("%s,as=%d", gw, router.AS)
		if s.Router.Password != "" {
			v += ",password-file=" + n.passwordFile()
		}
		lab = append(lab, v)
	}
	if len(n.BGPPeers) == 0 {
		return lab
	}
	var out []string
	for _, p := range n.BGPPeers {
		if p == routerPeersWord {
			out = append(out, lab...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

// bgpFlags are n's agent's --bgp-* flags: in etcd mode its AS and peers;
// in Kubernetes mode its Node's annotations say them, and flags only
// override its peers when `weft lab agent --bgp-peer` set its own.
func (s *State) bgpFlags(n *Node) []string {
	if s.Router == nil || n.Agent != "weft" {
		return nil
	}
	var args []string
	if s.Kube == nil {
		args = append(args, "--bgp-local-as", strconv.FormatUint(uint64(router.NodeAS(nodeIndex(n.Name))), 10))
	}
	if s.Kube != nil && len(n.BGPPeers) == 0 {
		return args
	}
	for _, p := range s.peerFlags(n) {
		args = append(args, "--bgp-peer", p)
	}
	return args
}

// bgpAnnotations are the annotations of n's Node in Kubernetes mode:
// its AS and its peers (with the password: the annotation is the only
// place a Kubernetes-mode node reads it from here).
func (s *State) bgpAnnotations(n *Node) (map[string]string, error) {
	if s.Router == nil {
		return nil, nil
	}
	type peer struct {
		Address  netip.Addr
		AS       uint32
		Password string `json:",omitempty"`
	}
	var peers []peer
	for _, gw := range s.routerAddrs(n) {
		peers = append(peers, peer{Address: gw, AS: router.AS, Password: s.Router.Password})
	}
	b, err := json.Marshal(peers)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"bgp.weft.io/local-as": strconv.FormatUint(uint64(router.NodeAS(nodeIndex(n.Name))), 10),
		"bgp.weft.io/peers":    string(b),
	}, nil
}

// bgpObject is the BGP object of the lab's net-conf.json: LocalAS is
// overridden per node (flags or annotations), import on (host-gw reaches
// peers behind the router), the lab's short timers, and ext's network
// routable (the router learns the pod subnets, so pods reach ext with
// their own addresses).
func (s *State) bgpObject() map[string]any {
	return map[string]any{"LocalAS": bgpLocalAS, "Import": true, "HoldTime": router.HoldTime,
		"RestartTime": bgpRestartTime, "RoutableNetworks": s.routableNetworks()}
}

// routableNetworks are ext's networks of the lab's families.
func (s *State) routableNetworks() []string {
	var out []string
	if topology.HasIPv4(s.IPFamily) {
		out = append(out, topology.Outside.String())
	}
	if topology.HasIPv6(s.IPFamily) {
		out = append(out, topology.Outside6.String())
	}
	return out
}

// withBGP adds the BGP object to net-conf.json doc when the lab runs a
// router.
func (s *State) withBGP(doc []byte) ([]byte, error) {
	if s.Router == nil {
		return doc, nil
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	m["BGP"] = s.bgpObject()
	return json.Marshal(m)
}

// setPeers sets n's own --bgp-peer list (nil: the lab's), for `weft lab
// agent start|restart --bgp-peer`; starting the agent saves the state.
func (s *State) setPeers(n *Node, peers []string) error {
	if len(peers) == 0 {
		return nil
	}
	if s.Router == nil {
		return fmt.Errorf("--bgp-peer: lab %s runs no BGP (start it with --topology l3 --bgp)", s.Name)
	}
	if slices.Equal(peers, []string{routerPeersWord}) {
		peers = nil
	}
	n.BGPPeers = peers
	return nil
}

// waitBGP waits until the router has an established session with every
// node of the lab, has its subnet from each, and announces each the
// others' (so that host-gw's routes across the router are in place
// before a check), and reports how long it took.
func (s *State) waitBGP(ctx context.Context, w io.Writer, timeout time.Duration) error {
	if s.Router == nil {
		return nil
	}
	start := time.Now()
	want := map[netip.Addr]bool{}
	for _, n := range s.Nodes {
		for _, nb := range s.neighbors(n) {
			want[nb.Addr] = true
		}
	}
	var last []router.Session
	for {
		sessions, err := s.Router.Sessions(ctx)
		last = sessions
		ok := err == nil
		seen := 0
		for _, x := range sessions {
			if !want[x.Neighbor] {
				continue
			}
			seen++
			others := 0
			for a := range want {
				if a.Is6() == x.Neighbor.Is6() && a != x.Neighbor {
					others++
				}
			}
			ok = ok && x.State == "established" && x.Received >= 1 && x.Sent >= others
		}
		if ok && seen == len(want) {
			fmt.Fprintf(w, "bgp: the router has %d sessions established and the routes exchanged (%.1fs)\n", seen, time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("bgp: the router's sessions did not converge in %s: %+v; its log:\n%s", timeout, last, process.TailFile(s.Router.LogFile(), 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tuneRouterNeighbours makes the router notice a node that is gone
// within seconds, as the issue asks (ext gets an ICMP unreachable, not
// a black hole, while the router still holds the node's routes): an ARP
// or NDP entry stays reachable 5 s, not the kernel's 15-45 s, and is
// probed 1 s after it goes stale, not 5 s. Same as `ip netns exec UL
// sysctl net.ipv4.neigh.br-a.base_reachable_time_ms=5000
// net.ipv4.neigh.br-a.delay_first_probe_time=1` (and ipv6, br-b), in the
// router namespace only.
func (s *State) tuneRouterNeighbours() error {
	return netns.Do(s.Underlay, func() error {
		for _, fam := range []string{"ipv4", "ipv6"} {
			for _, side := range topology.NodeSides(topology.L3) {
				base := filepath.Join("/proc/sys/net", fam, "neigh", topology.Bridge(side))
				for knob, v := range map[string]string{"base_reachable_time_ms": "5000", "delay_first_probe_time": "1"} {
					if err := os.WriteFile(filepath.Join(base, knob), []byte(v), 0o644); err != nil {
						return fmt.Errorf("router: %s: %w", filepath.Join(base, knob), err)
					}
				}
			}
		}
		return nil
	})
}

// withdrawTimeout bounds how long `node remove` waits, in Kubernetes
// mode, for the router to drop the routes of a node whose Node it
// deleted.
const withdrawTimeout = 10 * time.Second

// awaitWithdrawal waits, after n's Node was deleted while its agent runs,
// until the router no longer routes any of subnets (n's agent saw its
// Node go and withdrew its routes: a NOTIFICATION, so the router drops
// them at once), at most timeout, and says how long it took. Past
// timeout it says so and returns: the router then drops the routes when
// the restart time runs out, as for a node whose agent was stopped first.
// A no-op in a lab without BGP.
func (s *State) awaitWithdrawal(ctx context.Context, w io.Writer, n *Node, subnets []netip.Prefix, timeout time.Duration) {
	if s.Router == nil || len(subnets) == 0 {
		return
	}
	start := time.Now()
	for {
		var left []string
		for _, p := range subnets {
			hops, err := s.Router.NextHops(p)
			if err != nil || len(hops) > 0 {
				left = append(left, p.String())
			}
		}
		if len(left) == 0 {
			fmt.Fprintf(w, "bgp: %s withdrew its routes when its Node was deleted: the router dropped %s after %.1fs\n",
				n.Name, prefixList(subnets), time.Since(start).Seconds())
			return
		}
		if time.Since(start) > timeout {
			fmt.Fprintf(w, "bgp: the router still routes %s %s after %s's Node was deleted; it drops it when the restart time (%ds) runs out\n",
				strings.Join(left, ", "), timeout, n.Name, bgpRestartTime)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// prefixList is ps, comma-separated.
func prefixList(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, ", ")
}
