package lab

import (
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/internal/backend"
	"github.com/weftnet/weft/internal/backend/table"
	"github.com/weftnet/weft/internal/lab/topology"
)

// DefaultBackend is the backend of `lab up` without --backend.
const DefaultBackend = table.Recommended

// BackendTypes are the backends a lab can run: every backend of the table.
func BackendTypes() []string { return table.Types() }

// backendOptions parses the lab's backend options, as its agents will.
func backendOptions(typ string, directRouting bool, datapath, fam string) (backend.Options, error) {
	doc, err := netConf(typ, directRouting, datapath, fam)
	if err != nil {
		return nil, err
	}
	_, _, opts, err := table.Parse(doc)
	return opts, err
}

// netConf is the net-conf.json of a lab on backend typ (with the udp
// backend's Datapath, when set) with the pod families of fam, checked with
// the table's parser: IPv6 adds EnableIPv6, IPv6Network and IPv6SubnetLen;
// ipv6 alone sets EnableIPv4 false and has no Network.
func netConf(typ string, directRouting bool, datapath, fam string) ([]byte, error) {
	extra := map[string]any{}
	if directRouting {
		extra["DirectRouting"] = true
	}
	if datapath != "" {
		extra["Datapath"] = datapath
	}
	doc, err := table.Document(topology.Network.String(), typ, 0, extra)
	if err != nil {
		return nil, fmt.Errorf("--backend %s: %w", typ, err)
	}
	if !topology.HasIPv6(fam) {
		return doc, nil
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	m["EnableIPv6"], m["IPv6Network"], m["IPv6SubnetLen"] = true, topology.Network6.String(), topology.SubnetLen6
	if !topology.HasIPv4(fam) {
		m["EnableIPv4"] = false
		delete(m, "Network")
	}
	if doc, err = json.Marshal(m); err != nil {
		return nil, err
	}
	if _, _, _, err := table.Parse(doc); err != nil {
		return nil, fmt.Errorf("--backend %s --ip-family %s: %w", typ, fam, err)
	}
	return doc, nil
}

// takesDirectRouting reports whether DirectRouting changes how backend typ
// reaches a peer on its own segment.
func takesDirectRouting(typ string) bool {
	opts, err := backendOptions(typ, true, "", topology.IPv4)
	return err == nil && opts.Path(true) != opts.Path(false)
}

// directRoutingTypes are the backends that take DirectRouting.
func directRoutingTypes() []string {
	var out []string
	for _, typ := range table.Types() {
		if takesDirectRouting(typ) {
			out = append(out, typ)
		}
	}
	return out
}

// DirectRoutingHelp describes --direct-routing.
func DirectRoutingHelp() string {
	return orList(directRoutingTypes()) + ": plain routes to on-link peers"
}

// pathBetween describes how a node reaches a peer: onLink when the peer
// is on the node's own underlay segment.
func (s *State) pathBetween(onLink bool) string {
	opts, err := backendOptions(s.Backend, s.DirectRouting, s.Datapath, s.IPFamily)
	if err != nil {
		return err.Error()
	}
	return opts.Path(onLink)
}
