package router

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Session is one of the router's BGP sessions as its daemon reports it.
type Session struct {
	Neighbor netip.Addr `json:"neighbor"`
	AS       uint32     `json:"as"`
	// State is the session's state in lower case: "established",
	// "active", "connect", "idle", ...
	State string `json:"state"`
	// Received and Sent count the prefixes accepted from and announced to
	// the neighbour.
	Received int `json:"prefixesReceived"`
	Sent     int `json:"prefixesSent"`
	// Info is the daemon's last error for the session, if it says one.
	Info string `json:"info,omitempty"`
}

// Sessions asks the running router for its sessions (`birdc show
// protocols all` or `vtysh -c 'show bgp summary json'`), sorted by
// neighbour.
func (r *Router) Sessions(ctx context.Context) ([]Session, error) {
	var (
		out []Session
		err error
	)
	switch r.Kind {
	case FRR:
		var text string
		if text, err = r.control(ctx, "show bgp summary json"); err == nil {
			out, err = parseFRRSummary([]byte(text))
		}
	default:
		var text string
		if text, err = r.control(ctx, "show protocols all"); err == nil {
			out = parseBIRDProtocols(text)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("router %s sessions: %w", r.Kind, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Neighbor.Less(out[j].Neighbor) })
	return out, nil
}

// parseBIRDProtocols reads the BGP protocols of `birdc show protocols
// all`: each block starts with a line that names the protocol (BGP in
// its second column) and holds "BGP state:", "Neighbor address:",
// "Neighbor AS:", "Last error:" and per channel "Routes: N imported, M
// exported, ..." lines.
func parseBIRDProtocols(text string) []Session {
	var out []Session
	var cur *Session
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && !strings.HasPrefix(line, " ") {
			cur = nil
			if f[1] == "BGP" {
				out = append(out, Session{})
				cur = &out[len(out)-1]
			}
			continue
		}
		if cur == nil {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP state":
			cur.State = strings.ToLower(val)
		case "Neighbor address":
			cur.Neighbor, _ = netip.ParseAddr(strings.Fields(val + " ")[0])
		case "Neighbor AS":
			as, _ := strconv.ParseUint(val, 10, 32)
			cur.AS = uint32(as)
		case "Last error":
			cur.Info = val
		case "Routes":
			// "1 imported, 3 exported, 1 preferred"
			for _, part := range strings.Split(val, ",") {
				pf := strings.Fields(part)
				if len(pf) != 2 {
					continue
				}
				n, _ := strconv.Atoi(pf[0])
				switch pf[1] {
				case "imported":
					cur.Received += n
				case "exported":
					cur.Sent += n
				}
			}
		}
	}
	var valid []Session
	for _, s := range out {
		if s.Neighbor.IsValid() {
			valid = append(valid, s)
		}
	}
	return valid
}

// parseFRRSummary reads `show bgp summary json`: per address family
// ("ipv4Unicast", "ipv6Unicast") a "peers" object keyed by address.
func parseFRRSummary(b []byte) ([]Session, error) {
	var doc map[string]struct {
		Peers map[string]struct {
			RemoteAs   uint32 `json:"remoteAs"`
			State      string `json:"state"`
			PfxRcd     int    `json:"pfxRcd"`
			PfxSnt     int    `json:"pfxSnt"`
			LastReset  string `json:"lastResetDueTo"`
			LastNotify string `json:"lastNotificationReason"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("show bgp summary json: %w", err)
	}
	var out []Session
	for _, af := range doc {
		for addr, p := range af.Peers {
			a, err := netip.ParseAddr(addr)
			if err != nil {
				continue
			}
			s := Session{Neighbor: a, AS: p.RemoteAs, State: strings.ToLower(p.State), Received: p.PfxRcd, Sent: p.PfxSnt, Info: p.LastNotify}
			if s.Info == "" {
				s.Info = p.LastReset
			}
			out = append(out, s)
		}
	}
	return out, nil
}
