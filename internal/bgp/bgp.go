// Package bgp is the configuration and the types of the agent's BGP
// speaker: it announces this node's pod subnets to the routers it peers
// with (the next hop is the node's underlay address), so that the
// outside reaches pods by their own addresses, and, when import is on,
// reports the routes those routers announce so that host-gw reaches
// peers behind a router. The speaker is GoBGP (github.com/osrg/gobgp/v4),
// as kube-router runs it, in package speaker; weft-agent runs it in a
// child process, weft-bgp (package proc), so that the agent itself links
// no GoBGP. This package imports none either. The speaker programs no
// route itself: the agent puts learned routes in the node's desired
// state and the backend installs them through the kernel layer.
//
// Configuration comes in three layers, each overriding the one before:
// the BGP object of net-conf.json (cluster-wide, Parse), the Node's
// annotations in Kubernetes mode (ParseAnnotations) and weft-agent's flags
// (ParsePeerFlag and the --bgp-* flags). Config.WithNode lays a node's
// settings over the cluster's.
package bgp

import (
	"net/netip"
	"time"
)

// Defaults.
const (
	DefaultPort        = 179
	DefaultHoldTime    = 90 * time.Second  // RFC 4271's suggestion; keepalives every third of it
	DefaultRestartTime = 120 * time.Second // how long routers keep this node's routes while its agent restarts
)

// Annotations of a Node that configure its speaker in Kubernetes mode
// (kube-router's kube-router.io/peer.* and node.asn are the model; weft
// keeps a peer's fields together in one JSON list).
const (
	AnnotationLocalAS  = "bgp.weft.io/local-as"  // "64513"
	AnnotationRouterID = "bgp.weft.io/router-id" // "192.0.2.11"
	// AnnotationPeers is a JSON list of peers in the schema of
	// net-conf.json's BGP.Peers, e.g.
	// [{"Address":"192.0.2.1","AS":64500,"Password":"s3cret"}].
	AnnotationPeers = "bgp.weft.io/peers"
)

// Config is the resolved BGP configuration of one node. The zero Config
// is off.
type Config struct {
	// Enabled: net-conf.json has a BGP object (and it does not say
	// "Enabled": false).
	Enabled bool
	// LocalAS is this node's AS number.
	LocalAS uint32
	// RouterID is the speaker's BGP identifier; the zero Addr takes the
	// node's IPv4 underlay address (an IPv6-only node must set it).
	RouterID netip.Addr
	// ListenPort is where the speaker accepts sessions; -1: it only
	// connects out.
	ListenPort int
	// Peers are the routers this node peers with.
	Peers []Peer
	// HoldTime is each session's hold time unless a peer sets its own.
	HoldTime time.Duration
	// GracefulRestart (on by default): routers keep this node's routes
	// for RestartTime while its agent restarts, and the agent stops
	// without withdrawing them.
	GracefulRestart bool
	RestartTime     time.Duration
	// Import: routes learned from peers go into the node's desired state
	// (backend.NodeState.Learned).
	Import bool
	// RoutableNetworks are destinations that route back to pod addresses
	// (they learn the pod subnets over BGP): pod traffic to them keeps
	// the pod's source address instead of being masqueraded.
	RoutableNetworks []netip.Prefix
}

// Peer is one BGP neighbour.
type Peer struct {
	Address netip.Addr
	AS      uint32
	// Password is the TCP MD5 signature key (RFC 2385); "" for none.
	// Never logged.
	Password string `json:"-"`
	Port     uint16 // default DefaultPort
	// Multihop is the TTL of an eBGP session to a peer that is not
	// directly connected; 0: directly connected.
	Multihop uint8
	// HoldTime overrides Config.HoldTime when non-zero.
	HoldTime time.Duration
}

// NodeSettings are one node's own settings (flags, annotations): each
// field that is set replaces the cluster's.
type NodeSettings struct {
	LocalAS  uint32     // 0: unset
	RouterID netip.Addr // zero: unset
	// Peers replace the cluster's peers when PeersSet (an empty list set
	// on purpose means no peers).
	Peers    []Peer
	PeersSet bool
}

// Route is a prefix and its next hop: one this node announces, or one it
// learned from Peer.
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr `json:",omitzero"` // the peer it was learned from
}

// PeerStatus is one session as the agent's status endpoint and `weft lab
// status` show it.
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	AS      uint32     `json:"as"`
	// State is the session's FSM state in lower case: "idle",
	// "connect", "active", "opensent", "openconfirm", "established".
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // when it entered State
	// Sent and Received count the prefixes announced to and accepted
	// from the peer.
	Sent     int    `json:"prefixesSent"`
	Received int    `json:"prefixesReceived"`
	Flaps    uint64 `json:"flaps"` // times an established session went down
	// LastError is the last reason the session went down or could not
	// come up, in one line (wrong AS, bad password, unreachable, ...).
	LastError string `json:"lastError,omitempty"`
}
