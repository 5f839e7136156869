package bgp

// Parsing, defaulting and validation of the three layers of BGP settings:
// net-conf.json's BGP object (Parse), a Node's annotations
// (ParseAnnotations) and weft-agent's flags (ParseAS, ParseRouterID,
// ParsePeerFlag). Every mistake is refused in one line that names the key,
// annotation or flag and says what to do; a TCP MD5 password is never
// part of a message (its length and position of a bad character are).
// Nor is any text that might be one: a value of the wrong type is named
// by its JSON type ("is an object, not a list"), not shown; the only
// strings a message quotes are those written where an address, router ID
// or CIDR goes, and a --bgp-peer field that is not one of its own is
// named by its position.
//
// Unknown keys in the BGP object and in a peer are refused, not ignored
// as flannel ignores unknown top-level keys: flanneld ignores the whole
// BGP object, so no flannel document has one to stay compatible with, and
// a misspelt "Pasword" or "HoldTme" in a routing config would otherwise
// run an unauthenticated session or the default timers without a word.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/weftnet/weft/internal/config"
)

// Limits of the settings, and where they come from.
const (
	// MaxPasswordLen is Linux's TCP_MD5SIG_MAXKEYLEN: the longest TCP MD5
	// key the kernel takes (include/uapi/linux/tcp.h).
	MaxPasswordLen = 80
	// MinHoldTime and MaxHoldTime bound a hold time (RFC 4271 4.2: 0 or
	// at least 3 seconds, a 16-bit field). 0, "no keepalives", is not
	// taken: GoBGP replaces a hold time of 0 by its default of 90 s.
	MinHoldTime = 3 * time.Second
	MaxHoldTime = 65535 * time.Second
	// MaxRestartTime is the largest restart time the graceful restart
	// capability carries (RFC 4724 3: a 12-bit field of seconds).
	MaxRestartTime = 4095 * time.Second
	// asTrans is AS_TRANS (RFC 6793), the placeholder a 2-byte speaker
	// sees for a 4-byte AS number.
	asTrans = 23456
)

// Keys of the BGP object and of a peer, as the schema spells them.
var (
	configKeys = []string{"Enabled", "LocalAS", "RouterID", "ListenPort", "Peers", "HoldTime",
		"GracefulRestart", "RestartTime", "Import", "RoutableNetworks"}
	peerKeys = []string{"Address", "AS", "Password", "Port", "Multihop", "HoldTime"}
)

// fieldError is a mistake at a key path relative to the object parsed
// ("Peers[0].AS"); the caller says where the object came from.
type fieldError struct{ key, msg string }

func (e *fieldError) Error() string { return e.key + ": " + e.msg }

func fieldErrorf(key, format string, args ...any) *fieldError {
	return &fieldError{key: key, msg: fmt.Sprintf(format, args...)}
}

// SettingError is a mistake in a node's own BGP settings: a Node
// annotation or a weft-agent flag.
type SettingError struct {
	// Setting is the annotation or flag: "annotation bgp.weft.io/peers",
	// "--bgp-peer 192.0.2.1".
	Setting string
	// Key is the field within it ("[0].AS", "as"); "" for the whole value.
	Key string
	Msg string
}

func (e *SettingError) Error() string {
	if e.Key == "" {
		return e.Setting + ": " + e.Msg
	}
	return e.Setting + ": " + e.Key + ": " + e.Msg
}

// Parse parses, defaults and validates the BGP object of net-conf.json
// (config.Config.BGP); nil (no object) is the zero Config, off. Enabled
// defaults to true, ListenPort to DefaultPort (0 is the default too; -1:
// connect out only), HoldTime to DefaultHoldTime, GracefulRestart to true,
// RestartTime to DefaultRestartTime and a peer's Port to DefaultPort. A
// peer's HoldTime of 0 (or none) takes the object's (PeerHoldTime).
// LocalAS may be left out when every node sets its own (Validate checks
// the merged config). A mistake is a *config.Error naming the key
// ("BGP.Peers[0].AS").
func Parse(raw json.RawMessage) (Config, error) {
	c, fe := parse(raw)
	if fe != nil {
		key := "BGP"
		if fe.key != "" {
			key += "." + fe.key
		}
		return Config{}, &config.Error{Key: key, Msg: fe.msg}
	}
	return c, nil
}

func parse(raw json.RawMessage) (Config, *fieldError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Config{}, nil
	}
	if !json.Valid(raw) {
		return Config{}, &fieldError{"", syntaxMsg(raw)}
	}
	obj, fe := decodeObject(raw, "", configKeys)
	if fe != nil {
		return Config{}, fe
	}
	c := Config{Enabled: true, ListenPort: DefaultPort, HoldTime: DefaultHoldTime,
		GracefulRestart: true, RestartTime: DefaultRestartTime}
	for _, b := range []struct {
		key string
		dst *bool
	}{{"Enabled", &c.Enabled}, {"GracefulRestart", &c.GracefulRestart}, {"Import", &c.Import}} {
		if v, ok := obj[b.key]; ok {
			if *b.dst, fe = decodeBool(b.key, v); fe != nil {
				return Config{}, fe
			}
		}
	}
	if v, ok := obj["LocalAS"]; ok {
		if c.LocalAS, fe = decodeAS("LocalAS", v); fe != nil {
			return Config{}, fe
		}
	}
	if v, ok := obj["RouterID"]; ok {
		s, fe := decodeString("RouterID", v)
		if fe != nil {
			return Config{}, fe
		}
		id, msg := routerID(s)
		if msg != "" {
			return Config{}, &fieldError{"RouterID", msg}
		}
		c.RouterID = id
	}
	if v, ok := obj["ListenPort"]; ok {
		n, fe := decodeInt("ListenPort", v, -1, 65535, "use a TCP port, or -1 to only connect out (0 or none: 179)")
		if fe != nil {
			return Config{}, fe
		}
		if n != 0 {
			c.ListenPort = int(n)
		}
	}
	for _, t := range []struct {
		key      string
		min, max time.Duration
		hint     string
		dst      *time.Duration
	}{
		{"HoldTime", MinHoldTime, MaxHoldTime, "use 3 to 65535 seconds (RFC 4271; the default is 90)", &c.HoldTime},
		{"RestartTime", time.Second, MaxRestartTime, "use 1 to 4095 seconds, the 12 bits of RFC 4724 (the default is 120)", &c.RestartTime},
	} {
		if v, ok := obj[t.key]; ok {
			n, fe := decodeInt(t.key, v, int64(t.min/time.Second), int64(t.max/time.Second), t.hint)
			if fe != nil {
				return Config{}, fe
			}
			*t.dst = time.Duration(n) * time.Second
		}
	}
	if v, ok := obj["Peers"]; ok {
		if c.Peers, fe = decodePeers("Peers", v); fe != nil {
			return Config{}, fe
		}
	}
	if v, ok := obj["RoutableNetworks"]; ok {
		if c.RoutableNetworks, fe = decodePrefixes("RoutableNetworks", v); fe != nil {
			return Config{}, fe
		}
	}
	return c, nil
}

// ParseAnnotations reads a Node's BGP annotations (AnnotationLocalAS,
// AnnotationRouterID, AnnotationPeers); other annotations are not looked
// at, and an empty value is no value. Peers are set (PeersSet) when the
// peers annotation is there, "[]" included. A mistake is a *SettingError
// naming the annotation.
func ParseAnnotations(ann map[string]string) (NodeSettings, error) {
	var n NodeSettings
	annErr := func(name, key, msg string) error {
		return &SettingError{Setting: "annotation " + name, Key: key, Msg: msg}
	}
	if v := ann[AnnotationLocalAS]; v != "" {
		as, err := ParseAS(v)
		if err != nil {
			return NodeSettings{}, annErr(AnnotationLocalAS, "", err.Error())
		}
		n.LocalAS = as
	}
	if v := ann[AnnotationRouterID]; v != "" {
		id, err := ParseRouterID(v)
		if err != nil {
			return NodeSettings{}, annErr(AnnotationRouterID, "", err.Error())
		}
		n.RouterID = id
	}
	if v := ann[AnnotationPeers]; v != "" {
		raw := json.RawMessage(bytes.TrimSpace([]byte(v)))
		if !json.Valid(raw) {
			return NodeSettings{}, annErr(AnnotationPeers, "", syntaxMsg(raw)+`; write a JSON list such as [{"Address":"192.0.2.1","AS":64500}]`)
		}
		peers, fe := decodePeers("", raw)
		if fe != nil {
			return NodeSettings{}, annErr(AnnotationPeers, fe.key, fe.msg)
		}
		n.Peers, n.PeersSet = peers, true
	}
	return n, nil
}

// ParseAS parses an AS number written in decimal (asplain, RFC 5396), as
// the local-as annotation and --bgp-local-as take it. The error says what
// is wrong with it, for the caller to prefix with the setting's name.
func ParseAS(s string) (uint32, error) {
	t := strings.TrimSpace(s)
	n, ok := intText(t)
	if !ok {
		return 0, fmt.Errorf("%s is not an AS number; write it in decimal, e.g. 64512", quote(s))
	}
	if msg := asMsg(n, t); msg != "" {
		return 0, errors.New(msg)
	}
	return uint32(n), nil
}

// ParseRouterID parses a BGP identifier: a non-zero IPv4 address (RFC
// 6286), as the router-id annotation and --bgp-router-id take it.
func ParseRouterID(s string) (netip.Addr, error) {
	id, msg := routerID(strings.TrimSpace(s))
	if msg != "" {
		return netip.Addr{}, errors.New(msg)
	}
	return id, nil
}

// ParsePeerFlag parses one --bgp-peer:
// "ADDRESS,as=N[,port=N][,multihop=N][,hold-time=SECONDS][,password-file=PATH]".
// hold-time also takes a duration in whole seconds ("90s", "1m30s"). The
// password is read with readFile (os.ReadFile) from password-file, less
// one trailing newline: on the command line, ps would show it to every
// user of the node. A PATH cannot hold a comma. A mistake is a
// *SettingError naming --bgp-peer, the peer's address and the field.
func ParsePeerFlag(s string, readFile func(string) ([]byte, error)) (Peer, error) {
	fields := strings.Split(s, ",")
	setting := "--bgp-peer"
	flagErr := func(key, format string, args ...any) (Peer, error) {
		return Peer{}, &SettingError{Setting: setting, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	const example = "e.g. 192.0.2.1,as=64500"
	first := strings.TrimSpace(fields[0])
	if strings.Contains(first, "=") {
		// Not echoed: it may be password=..., which is refused below.
		return flagErr("", "the first field must be the peer's address, %s", example)
	}
	if first == "" {
		return flagErr("", "no address: start with the peer's address, %s", example)
	}
	addr, msg := peerAddress(first)
	if msg != "" {
		return flagErr("", "address %s", msg)
	}
	setting += " " + addr.String()
	p := Peer{Address: addr, Port: DefaultPort}
	seen := map[string]bool{}
	var hasAS bool
	names := []string{"as", "port", "multihop", "hold-time", "password-file"}
	for i, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		k = strings.TrimSpace(k)
		if k == "password" {
			return flagErr(k, "not taken on the command line, where ps shows it to every user of the node; write it to a file readable only by root and give password-file=PATH")
		}
		if !slices.Contains(names, k) {
			// The field's text is not shown: it may be the password
			// itself (",s3cret"), or hold it (",pw=s3cret").
			pos := fmt.Sprintf("field %d", i+2)
			switch lower := strings.ToLower(k); {
			case k == "" && !ok:
				return flagErr("", "%s is empty; separate fields with one comma, %s", pos, example)
			case !ok:
				return flagErr("", "%s is not KEY=VALUE; after the address come as=N, port=N, multihop=TTL, hold-time=SECONDS and password-file=PATH", pos)
			case lower == "password":
				return flagErr("", "%s is a password, which is not taken on the command line, where ps shows it to every user of the node; write it to a file readable only by root and give password-file=PATH", pos)
			case slices.Contains(names, lower):
				return flagErr("", "%s names a field in capitals; write %s=", pos, lower)
			}
			return flagErr("", "%s is not a field of --bgp-peer; the fields are as, port, multihop, hold-time and password-file", pos)
		}
		if !ok || (v == "" && k != "password-file") {
			return flagErr(k, "no value; write %s=VALUE", k)
		}
		if seen[k] {
			return flagErr(k, "given twice; give it once")
		}
		seen[k] = true
		switch k {
		case "as":
			as, err := ParseAS(v)
			if err != nil {
				return flagErr(k, "%v", err)
			}
			p.AS, hasAS = as, true
		case "port":
			n, ok := intText(strings.TrimSpace(v))
			if !ok || n < 0 || n > 65535 {
				return flagErr(k, "%s: use a TCP port from 1 to 65535 (0: 179)", quote(v))
			}
			if n != 0 {
				p.Port = uint16(n)
			}
		case "multihop":
			n, ok := intText(strings.TrimSpace(v))
			if !ok || n < 0 || n > 255 {
				return flagErr(k, "%s: use a TTL from 1 to 255, or 0 for a directly connected peer", quote(v))
			}
			p.Multihop = uint8(n)
		case "hold-time":
			d, ok := seconds(strings.TrimSpace(v))
			if !ok || d < MinHoldTime || d > MaxHoldTime {
				return flagErr(k, "%s: use 3 to 65535 seconds (RFC 4271), e.g. 90", quote(v))
			}
			p.HoldTime = d
		case "password-file":
			if v == "" {
				return flagErr(k, "no path; name the file that holds the password")
			}
			b, err := readFile(v)
			if err != nil {
				return flagErr(k, "%s", oneLine(err.Error()))
			}
			pw := string(b)
			pw = strings.TrimSuffix(pw, "\n")
			pw = strings.TrimSuffix(pw, "\r")
			if pw == "" {
				return flagErr(k, "%s is empty; put the password in it, or drop password-file", strconv.Quote(v))
			}
			if msg := passwordMsg(pw); msg != "" {
				return flagErr(k, "the password in %s %s", strconv.Quote(v), msg)
			}
			p.Password = pw
		}
	}
	if !hasAS {
		return flagErr("as", "missing; give the peer's AS number, %s", example)
	}
	return p, nil
}

// WithNode lays a node's own settings over the cluster's: each one that
// is set replaces the cluster's. The result shares no slice with c or n.
func (c Config) WithNode(n NodeSettings) Config {
	if n.LocalAS != 0 {
		c.LocalAS = n.LocalAS
	}
	if n.RouterID.IsValid() {
		c.RouterID = n.RouterID
	}
	if n.PeersSet {
		c.Peers = n.Peers
	}
	c.Peers = slices.Clone(c.Peers)
	c.RoutableNetworks = slices.Clone(c.RoutableNetworks)
	return c
}

// PeerHoldTime is p's hold time: its own, or c's when it sets none.
func (c Config) PeerHoldTime(p Peer) time.Duration {
	if p.HoldTime != 0 {
		return p.HoldTime
	}
	return c.HoldTime
}

// Validate checks a merged config (Config.WithNode) before a speaker runs
// with it: a disabled config is valid; an enabled one needs a LocalAS
// (from any layer) and values in the ranges Parse enforces, which a
// config assembled in code may not hold. No peers is valid (see
// Warnings).
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("BGP: "+format, args...)
	}
	if c.LocalAS == 0 {
		return bad("this node has no local AS: set BGP.LocalAS in net-conf.json, the Node annotation %s or --bgp-local-as", AnnotationLocalAS)
	}
	if msg := asMsg(int64(c.LocalAS), strconv.FormatUint(uint64(c.LocalAS), 10)); msg != "" {
		return bad("local AS %s", msg)
	}
	if c.RouterID.IsValid() {
		if _, msg := routerID(c.RouterID.String()); msg != "" {
			return bad("router ID %s", msg)
		}
	}
	switch {
	case c.ListenPort < -1 || c.ListenPort > 65535:
		return bad("listen port %d: use a TCP port, or -1 to only connect out", c.ListenPort)
	case !holdTimeOK(c.HoldTime):
		return bad("hold time %s: use 3 to 65535 whole seconds (RFC 4271)", c.HoldTime)
	case c.GracefulRestart && (c.RestartTime < time.Second || c.RestartTime > MaxRestartTime || c.RestartTime%time.Second != 0):
		return bad("restart time %s: use 1 to 4095 whole seconds (RFC 4724)", c.RestartTime)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		if _, msg := peerAddress(p.Address.String()); !p.Address.IsValid() || msg != "" {
			return bad("peer %s: address %s", p.Address, msg)
		}
		if seen[p.Address] {
			return bad("peer %s is given twice; list each peer once", p.Address)
		}
		seen[p.Address] = true
		if msg := asMsg(int64(p.AS), strconv.FormatUint(uint64(p.AS), 10)); msg != "" {
			return bad("peer %s: AS %s", p.Address, msg)
		}
		if p.HoldTime != 0 && !holdTimeOK(p.HoldTime) {
			return bad("peer %s: hold time %s: use 3 to 65535 whole seconds (RFC 4271)", p.Address, p.HoldTime)
		}
		if msg := passwordMsg(p.Password); msg != "" {
			return bad("peer %s: the password %s", p.Address, msg)
		}
	}
	for _, n := range c.RoutableNetworks {
		if !n.IsValid() || n != n.Masked() {
			return bad("routable network %s is not a network address; write %s", n, n.Masked())
		}
	}
	return nil
}

// Warnings are legal but likely unintended states of a config, one line
// each, for `weft config check` and the agent's log.
func (c Config) Warnings() []string {
	if !c.Enabled {
		return nil
	}
	var w []string
	if c.LocalAS == 0 {
		w = append(w, "BGP.LocalAS is not set: every node must set its own (annotation "+AnnotationLocalAS+" or --bgp-local-as), or its agent refuses to start BGP")
	}
	if len(c.Peers) == 0 {
		w = append(w, "BGP.Peers is empty: a node announces its subnet to nobody unless it sets its own peers (annotation "+AnnotationPeers+" or --bgp-peer)")
	}
	return w
}

// Resolved renders the config in the schema of net-conf.json's BGP object
// with every default filled in (a peer's HoldTime is the one it runs
// with) and each password shown as "(set)"; nil for the zero Config (no
// BGP object). LocalAS and RouterID are left out when not set (each node
// sets its own, or the router ID is the node's IPv4 underlay address).
func (c Config) Resolved() map[string]any {
	if c.isZero() {
		return nil
	}
	peers := []map[string]any{}
	for _, p := range c.Peers {
		m := map[string]any{
			"Address": p.Address.String(), "AS": p.AS, "Port": p.Port, "Multihop": p.Multihop,
			"HoldTime": int64(c.PeerHoldTime(p) / time.Second),
		}
		if p.Password != "" {
			m["Password"] = "(set)"
		}
		peers = append(peers, m)
	}
	nets := []string{}
	for _, n := range c.RoutableNetworks {
		nets = append(nets, n.String())
	}
	m := map[string]any{
		"Enabled": c.Enabled, "ListenPort": c.ListenPort, "Peers": peers,
		"HoldTime": int64(c.HoldTime / time.Second), "GracefulRestart": c.GracefulRestart,
		"RestartTime": int64(c.RestartTime / time.Second), "Import": c.Import, "RoutableNetworks": nets,
	}
	if c.LocalAS != 0 {
		m["LocalAS"] = c.LocalAS
	}
	if c.RouterID.IsValid() {
		m["RouterID"] = c.RouterID.String()
	}
	return m
}

func (c Config) isZero() bool {
	return !c.Enabled && c.LocalAS == 0 && !c.RouterID.IsValid() && c.ListenPort == 0 && len(c.Peers) == 0 &&
		c.HoldTime == 0 && !c.GracefulRestart && c.RestartTime == 0 && !c.Import && len(c.RoutableNetworks) == 0
}

// decodePeers decodes a JSON list of peers; key is the list's key path
// ("Peers", or "" for the peers annotation).
func decodePeers(key string, raw json.RawMessage) ([]Peer, *fieldError) {
	if raw[0] != '[' {
		return nil, fieldErrorf(key, "%s; write a list of peers such as [{\"Address\":\"192.0.2.1\",\"AS\":64500}]", notA(raw, "a list"))
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fieldErrorf(key, "%s", syntaxMsg(raw))
	}
	peers := []Peer{}
	first := map[netip.Addr]int{}
	for i, item := range list {
		pk := fmt.Sprintf("%s[%d]", key, i)
		p, fe := decodePeer(pk, bytes.TrimSpace(item))
		if fe != nil {
			return nil, fe
		}
		if j, dup := first[p.Address]; dup {
			return nil, fieldErrorf(pk+".Address", "%s is also %s[%d]; list each peer once", p.Address, key, j)
		}
		first[p.Address] = i
		peers = append(peers, p)
	}
	return peers, nil
}

func decodePeer(key string, raw json.RawMessage) (Peer, *fieldError) {
	obj, fe := decodeObject(raw, key, peerKeys)
	if fe != nil {
		return Peer{}, fe
	}
	p := Peer{Port: DefaultPort}
	k := func(name string) string { return key + "." + name }
	v, ok := obj["Address"]
	if !ok {
		return Peer{}, fieldErrorf(k("Address"), "missing; give the peer's IP address, e.g. \"192.0.2.1\"")
	}
	s, fe := decodeString(k("Address"), v)
	if fe != nil {
		return Peer{}, fe
	}
	var msg string
	if p.Address, msg = peerAddress(s); msg != "" {
		return Peer{}, &fieldError{k("Address"), msg}
	}
	v, ok = obj["AS"]
	if !ok {
		return Peer{}, fieldErrorf(k("AS"), "missing; give the peer's AS number, e.g. 64500")
	}
	if p.AS, fe = decodeAS(k("AS"), v); fe != nil {
		return Peer{}, fe
	}
	if v, ok := obj["Password"]; ok {
		if v[0] != '"' {
			return Peer{}, fieldErrorf(k("Password"), "is not a string; write the password in double quotes")
		}
		if err := json.Unmarshal(v, &p.Password); err != nil {
			return Peer{}, fieldErrorf(k("Password"), "is not a valid JSON string")
		}
		if msg := passwordMsg(p.Password); msg != "" {
			return Peer{}, fieldErrorf(k("Password"), "%s", msg)
		}
	}
	if v, ok := obj["Port"]; ok {
		n, fe := decodeInt(k("Port"), v, 0, 65535, "use a TCP port from 1 to 65535 (0 or none: 179)")
		if fe != nil {
			return Peer{}, fe
		}
		if n != 0 {
			p.Port = uint16(n)
		}
	}
	if v, ok := obj["Multihop"]; ok {
		n, fe := decodeInt(k("Multihop"), v, 0, 255, "use a TTL from 1 to 255, or 0 for a directly connected peer")
		if fe != nil {
			return Peer{}, fe
		}
		p.Multihop = uint8(n)
	}
	if v, ok := obj["HoldTime"]; ok {
		n, fe := decodeInt(k("HoldTime"), v, 0, int64(MaxHoldTime/time.Second), "use 3 to 65535 seconds (RFC 4271), or 0 for BGP.HoldTime")
		if fe != nil {
			return Peer{}, fe
		}
		if n != 0 && n < int64(MinHoldTime/time.Second) {
			return Peer{}, fieldErrorf(k("HoldTime"), "%d is below 3 seconds (RFC 4271); use 3 to 65535, or 0 for BGP.HoldTime", n)
		}
		p.HoldTime = time.Duration(n) * time.Second
	}
	return p, nil
}

func decodePrefixes(key string, raw json.RawMessage) ([]netip.Prefix, *fieldError) {
	if raw[0] != '[' {
		return nil, fieldErrorf(key, "%s; write a list of CIDRs such as [\"203.0.113.0/24\"]", notA(raw, "a list"))
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fieldErrorf(key, "%s", syntaxMsg(raw))
	}
	out := []netip.Prefix{}
	for i, item := range list {
		ik := fmt.Sprintf("%s[%d]", key, i)
		s, fe := decodeString(ik, bytes.TrimSpace(item))
		if fe != nil {
			return nil, fe
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fieldErrorf(ik, "%s is not a CIDR; write a network such as \"203.0.113.0/24\"", quote(s))
		}
		if p != p.Masked() {
			return nil, fieldErrorf(ik, "%s has host bits set; write the network, %q", quote(s), p.Masked().String())
		}
		out = append(out, p)
	}
	return out, nil
}

// decodeObject decodes a JSON object whose keys are matched against known
// case-insensitively, as encoding/json and flannel match net-conf.json's;
// the result is keyed by the schema's spelling, without null values (a
// null is no value). An unknown key, or one key written twice in
// different cases, is refused.
func decodeObject(raw json.RawMessage, key string, known []string) (map[string]json.RawMessage, *fieldError) {
	if raw[0] != '{' {
		return nil, fieldErrorf(key, "%s; write {\"Key\": value, ...}", notA(raw, "an object"))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fieldErrorf(key, "%s", syntaxMsg(raw))
	}
	sub := func(k string) string {
		if key == "" {
			return k
		}
		return key + "." + k
	}
	obj := map[string]json.RawMessage{}
	spelt := map[string][]string{}
	var unknown []string
	for k, v := range top {
		i := slices.IndexFunc(known, func(c string) bool { return strings.EqualFold(c, k) })
		if i < 0 {
			unknown = append(unknown, k)
			continue
		}
		spelt[known[i]] = append(spelt[known[i]], k)
		if v = bytes.TrimSpace(v); string(v) != "null" {
			obj[known[i]] = v
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, fieldErrorf(sub(quoteKey(unknown[0])), "unknown key; the keys are %s", strings.Join(known, ", "))
	}
	for _, c := range known {
		if s := spelt[c]; len(s) > 1 {
			slices.Sort(s)
			return nil, fieldErrorf(sub(c), "given twice, as %s and %s (keys match in any case); keep one", quote(s[0]), quote(s[1]))
		}
	}
	return obj, nil
}

func decodeBool(key string, raw json.RawMessage) (bool, *fieldError) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fieldErrorf(key, "%s; write true or false", notA(raw, "a boolean"))
}

func decodeString(key string, raw json.RawMessage) (string, *fieldError) {
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fieldErrorf(key, "%s; write it in double quotes", notA(raw, "a string"))
	}
	return s, nil
}

// decodeInt decodes a JSON integer written in plain digits, in lo..hi.
func decodeInt(key string, raw json.RawMessage, lo, hi int64, hint string) (int64, *fieldError) {
	n, fe := decodeNumber(key, raw)
	if fe != nil {
		return 0, fe
	}
	if n < lo || n > hi {
		return 0, fieldErrorf(key, "%s is out of range; %s", show(raw), hint)
	}
	return n, nil
}

func decodeNumber(key string, raw json.RawMessage) (int64, *fieldError) {
	switch c := raw[0]; {
	case c == '"':
		return 0, fieldErrorf(key, "is a string; write the number without quotes")
	case c != '-' && (c < '0' || c > '9'):
		return 0, fieldErrorf(key, "%s", notA(raw, "a number"))
	}
	n, ok := intText(string(raw))
	if !ok {
		return 0, fieldErrorf(key, "%s is not a whole number in plain digits", show(raw))
	}
	return n, nil
}

func decodeAS(key string, raw json.RawMessage) (uint32, *fieldError) {
	n, fe := decodeNumber(key, raw)
	if fe != nil {
		return 0, fe
	}
	if msg := asMsg(n, string(raw)); msg != "" {
		return 0, &fieldError{key, msg}
	}
	return uint32(n), nil
}

// intText parses optional '-' and decimal digits, saturating at the
// int64 range: a number too large for any field is still refused by its
// range check, with the text as written.
func intText(s string) (int64, bool) {
	d := strings.TrimPrefix(s, "-")
	if d == "" || strings.Trim(d, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		if s[0] == '-' {
			return math.MinInt64, true
		}
		return math.MaxInt64, true
	}
	return n, err == nil
}

// seconds parses a whole number of seconds, plain ("90") or as a Go
// duration ("90s", "1m30s").
func seconds(s string) (time.Duration, bool) {
	if n, ok := intText(s); ok {
		if n < 0 || n > int64(MaxHoldTime/time.Second)+1 {
			return -1, true // out of every range, refused by the caller
		}
		return time.Duration(n) * time.Second, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d%time.Second != 0 {
		return 0, false
	}
	return d, true
}

// asMsg says what is wrong with AS number n (written as text), or "".
func asMsg(n int64, text string) string {
	const use = "use your AS number, e.g. a private one from 64512 to 65534 or 4200000000 to 4294967294"
	switch {
	case n < 0:
		return fmt.Sprintf("%s is negative; %s", text, use)
	case n == 0:
		return "0 is reserved (RFC 7607); " + use
	case n == asTrans:
		return "23456 is AS_TRANS (RFC 6793), the placeholder for a 4-byte AS number; " + use
	case n == 65535 || n == math.MaxUint32:
		return fmt.Sprintf("%d is reserved (RFC 7300); %s", n, use)
	case n > math.MaxUint32:
		return fmt.Sprintf("%s is larger than 4294967294, the largest AS number (32 bits); %s", text, use)
	}
	return ""
}

func routerID(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil || !a.Is4():
		return netip.Addr{}, fmt.Sprintf("%s is not an IPv4 address; a BGP identifier is written as one, e.g. \"192.0.2.11\" (the node's IPv4 address, if it has one)", quote(s))
	case a.IsUnspecified():
		return netip.Addr{}, "0.0.0.0 is not a BGP identifier (RFC 6286 needs a non-zero one); use e.g. the node's IPv4 address"
	}
	return a, ""
}

// peerAddress parses a peer's address: a unicast IP address without a
// zone; an IPv4-mapped IPv6 address is taken as its IPv4 address.
func peerAddress(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Sprintf("%s is not an IP address; give the router's address, e.g. \"192.0.2.1\"", quote(s))
	case a.Zone() != "":
		return netip.Addr{}, fmt.Sprintf("%s has a zone, which is not supported; give a global or unique local address", quote(s))
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return netip.Addr{}, fmt.Sprintf("%s is the unspecified address; give the router's address", a)
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Sprintf("%s is not a unicast address; give the router's address", a)
	}
	return a, ""
}

func holdTimeOK(d time.Duration) bool {
	return d >= MinHoldTime && d <= MaxHoldTime && d%time.Second == 0
}

// CheckPassword checks a TCP MD5 password by the rules of a peer's
// Password in net-conf.json: at most MaxPasswordLen bytes of UTF-8 text
// without control characters (so no newline, which would end a line of a
// router's config file); "" is no password, and valid. The error never
// holds the password (its length and the position of a bad character
// only), for the caller to prefix with the setting's name.
func CheckPassword(p string) error {
	if msg := passwordMsg(p); msg != "" {
		return errors.New("the password " + msg)
	}
	return nil
}

// passwordMsg says what is wrong with a TCP MD5 password, or "" ("" is no
// password). The message never holds the password.
func passwordMsg(p string) string {
	if len(p) > MaxPasswordLen {
		return fmt.Sprintf("is %d bytes long; Linux takes at most %d (TCP_MD5SIG_MAXKEYLEN)", len(p), MaxPasswordLen)
	}
	if !utf8.ValidString(p) {
		return "is not UTF-8 text; use printable characters"
	}
	for i, r := range p {
		if unicode.IsControl(r) {
			return fmt.Sprintf("has a control character at byte %d; use printable characters (spaces are fine)", i)
		}
	}
	return ""
}

// notA says that raw is not the JSON type wanted ("a list"): a literal
// (number, true, false, null) is shown, "true is not a number"; a string,
// object or list only by its type, "is an object, not a list", since it
// may be or hold a password (a peer written where the list goes).
func notA(raw json.RawMessage, want string) string {
	var typ string
	switch raw[0] {
	case '"':
		typ = "a string"
	case '{':
		typ = "an object"
	case '[':
		typ = "a list"
	default:
		return show(raw) + " is not " + want
	}
	if typ == want { // a string that does not decode
		return "is not a valid JSON string"
	}
	return "is " + typ + ", not " + want
}

// show renders a JSON literal (a number, true, false or null) for a
// message: on one line, cut at 40 bytes. Never a string, object or list:
// see notA.
func show(raw json.RawMessage) string {
	var b bytes.Buffer
	s := string(raw)
	if json.Compact(&b, raw) == nil {
		s = b.String()
	}
	return cut(strings.ToValidUTF8(s, "\uFFFD"))
}

func cut(s string) string {
	if len(s) > 40 {
		i := 40
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		return s[:i] + "..."
	}
	return s
}

// quote renders text for a message, quoted and escaped on one line.
func quote(s string) string { return strconv.Quote(cut(s)) }

// quoteKey renders a key as written when it is a plain word, else quoted.
func quoteKey(k string) string {
	if k != "" && strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == "" && len(k) <= 40 {
		return k
	}
	return quote(k)
}

// syntaxMsg describes a JSON syntax error without quoting the text (which
// may hold a password).
func syntaxMsg(raw []byte) string {
	var v any
	err := json.Unmarshal(raw, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("is not valid JSON (at byte %d)", se.Offset)
	}
	return "is not valid JSON"
}

// oneLine joins the lines of a message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
