package nft

import (
	"net/netip"

	"github.com/weftnet/weft/internal/policy"
)

var (
	a4 = netip.MustParseAddr
)

func rng(from, to string) policy.Range {
	return policy.Range{From: netip.MustParseAddr(from), To: netip.MustParseAddr(to)}
}

// small is the package doc's example: one pod isolated for ingress by one
// policy that allows TCP 80 from its namespace's pods.
func small() *policy.Ruleset {
	return &policy.Ruleset{
		Node: "n1",
		Pods: []policy.PodEntry{{Addr: a4("10.244.1.2"), Pod: "web/api-0", Ingress: "gin-5f3a2c10"}},
		Groups: []policy.Group{
			{Name: "gin-5f3a2c10", Dir: policy.Ingress, Chains: []string{"in_web_allow-web"}},
		},
		Chains: []policy.Chain{{
			Name: "in_web_allow-web", Dir: policy.Ingress, Policy: "web/allow-web",
			Rules: []policy.Rule{{
				Peers: []policy.Range{rng("10.244.1.2", "10.244.1.3")},
				Ports: []policy.PortRange{{Protocol: policy.TCP, First: 80, Last: 80}},
			}},
		}},
	}
}

// every exercises every feature of a Ruleset: both directions and
// families, pods in one direction only and in both, a deny-all group, a
// group of two chains, AnyPeer, AnyPort, both, peer ranges and single
// addresses, port ranges of each protocol, named ports of both families,
// a rule with ports and named ports, an IPv4-only rule, a rule whose peers
// are empty (renders nothing) and one whose ports are empty.
func every() *policy.Ruleset {
	return &policy.Ruleset{
		Node: "n1",
		Pods: []policy.PodEntry{
			{Addr: a4("10.244.1.2"), Pod: "web/api-0", Ingress: "gin-00000001", Egress: "geg-00000001"},
			{Addr: a4("10.244.1.3"), Pod: "web/api-1", Ingress: "gin-00000001"},
			{Addr: a4("10.244.1.4"), Pod: "db/pg-0", Ingress: "gin-00000002"},
			{Addr: a4("10.244.1.5"), Pod: "db/pg-1", Egress: "geg-00000002"},
			{Addr: a4("fd00:10:244:1::2"), Pod: "web/api-0", Ingress: "gin-00000001", Egress: "geg-00000001"},
			{Addr: a4("fd00:10:244:1::4"), Pod: "db/pg-0", Ingress: "gin-00000002"},
		},
		Groups: []policy.Group{
			{Name: "geg-00000001", Dir: policy.Egress, Chains: []string{"eg_web_dns", "eg_web_internet"}},
			{Name: "geg-00000002", Dir: policy.Egress},
			{Name: "gin-00000001", Dir: policy.Ingress, Chains: []string{"in_web_allow-web"}},
			{Name: "gin-00000002", Dir: policy.Ingress, Chains: []string{"in_db_allow-api", "in_db_monitoring"}},
		},
		Chains: []policy.Chain{
			{Name: "eg_web_dns", Dir: policy.Egress, Policy: "web/dns", Rules: []policy.Rule{{
				Peers: []policy.Range{rng("10.96.0.10", "10.96.0.10"), rng("fd00:10:96::a", "fd00:10:96::a")},
				Ports: []policy.PortRange{{Protocol: policy.UDP, First: 53, Last: 53}, {Protocol: policy.TCP, First: 53, Last: 53}},
			}}},
			{Name: "eg_web_internet", Dir: policy.Egress, Policy: "web/internet", Rules: []policy.Rule{
				{
					// ipBlock 0.0.0.0/0 except 10.0.0.0/8 and 169.254.169.254
					Peers: []policy.Range{rng("0.0.0.0", "9.255.255.255"), rng("11.0.0.0", "169.254.169.253"), rng("169.254.169.255", "255.255.255.255")},
					Ports: []policy.PortRange{{Protocol: policy.TCP, First: 443, Last: 443}, {Protocol: policy.SCTP, First: 9000, Last: 9100}},
				},
				{AnyPeer: true, AnyPort: true}, // never reached in practice; renders "accept"
			}},
			{Name: "in_db_allow-api", Dir: policy.Ingress, Policy: "db/allow-api", Rules: []policy.Rule{
				{
					Peers: []policy.Range{rng("10.244.1.2", "10.244.1.3"), rng("10.244.2.0", "10.244.2.255"), rng("fd00:10:244:1::2", "fd00:10:244:1::2")},
					Ports: []policy.PortRange{{Protocol: policy.TCP, First: 5432, Last: 5432}, {Protocol: policy.TCP, First: 8000, Last: 8080}},
					Named: []policy.NamedPort{
						{Addr: a4("10.244.1.4"), Protocol: policy.TCP, Port: 9187},
						{Addr: a4("fd00:10:244:1::4"), Protocol: policy.TCP, Port: 9187},
					},
				},
				{Peers: nil, AnyPort: true},                                               // selects no pod: nothing
				{Peers: []policy.Range{rng("10.244.3.0", "10.244.3.255")}},                // no ports: nothing
				{Peers: []policy.Range{rng("10.244.4.0", "10.244.4.255")}, AnyPort: true}, // IPv4 only, any port
			}},
			{Name: "in_db_monitoring", Dir: policy.Ingress, Policy: "db/monitoring", Rules: []policy.Rule{{
				AnyPeer: true,
				Named: []policy.NamedPort{
					{Addr: a4("10.244.1.4"), Protocol: policy.TCP, Port: 9187},
					{Addr: a4("10.244.1.4"), Protocol: policy.UDP, Port: 9188},
					{Addr: a4("fd00:10:244:1::4"), Protocol: policy.TCP, Port: 9187},
				},
			}}},
			{Name: "in_web_allow-web", Dir: policy.Ingress, Policy: "web/allow-web", Rules: []policy.Rule{{
				AnyPeer: true,
				Ports:   []policy.PortRange{{Protocol: policy.TCP, First: 80, Last: 81}, {Protocol: policy.UDP, First: 80, Last: 80}},
			}}},
		},
	}
}
