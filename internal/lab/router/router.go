// Package router runs the BGP router of a lab's l3 underlay (`weft lab up
// --topology l3 --bgp`): BIRD 2 or FRR (zebra and bgpd) inside the router
// namespace, as AS 64500 with one eBGP neighbour per node and family. It
// writes the routes it learns (the nodes' pod subnets) into that
// namespace's kernel table, so that ext reaches pods by their own
// addresses, and re-announces them to the other nodes, so that host-gw
// reaches peers behind the router. Two independent BGP implementations,
// neither weft's. The daemons are processes the lab starts and stops by
// PID (and start time), with their configuration, control sockets, PID
// files and logs under the lab's directory; nothing in /etc or /run/frr
// is touched.
package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/atomicfile"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netconv"
	"github.com/weftnet/weft/internal/netns"
)

// Kinds of router.
const (
	BIRD = "bird" // BIRD 2 (Debian bird2)
	FRR  = "frr"  // FRR's zebra and bgpd (Debian frr)
)

// Kinds are the choices of --bgp-router, the default first.
func Kinds() []string { return []string{BIRD, FRR} }

// AS is the router's AS number: a documentation AS (RFC 5398).
const AS = 64500

// NodeAS is the AS of node nK: 64512+K, a private AS (RFC 6996) of its
// own, so that the router's eBGP re-announcements of one node's subnet
// to another do not loop on a shared AS.
func NodeAS(k int) uint32 { return 64512 + uint32(k) }

// Timers of the lab's sessions, in seconds: short, so that tests see
// failures quickly. The nodes' RestartTime (30 s, in net-conf.json) is
// how long the router keeps a node's routes after its session closes
// without a NOTIFICATION.
const (
	HoldTime     = 9
	Keepalive    = 3
	ConnectRetry = 3
)

// The FRR binaries, where Debian's frr package puts them.
var (
	zebraBin = "/usr/lib/frr/zebra"
	bgpdBin  = "/usr/lib/frr/bgpd"
)

// Find reports whether the binaries of kind are installed, saying what
// to install when not.
func Find(kind string) error {
	var bins []string
	hint := ""
	switch kind {
	case BIRD:
		bins, hint = []string{"bird", "birdc"}, "apt-get install bird2"
	case FRR:
		bins, hint = []string{zebraBin, bgpdBin, "vtysh"}, "apt-get install frr"
	default:
		return fmt.Errorf("--bgp-router %q: use bird or frr", kind)
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("--bgp-router %s needs %s, which is not installed (%s)", kind, filepath.Base(b), hint)
		}
	}
	return nil
}

// Neighbor is one eBGP neighbour: a node's underlay address of one
// family.
type Neighbor struct {
	Node string     `json:"node"` // n1, ...
	Addr netip.Addr `json:"addr"`
	AS   uint32     `json:"as"`
}

// name is the neighbour's BIRD protocol name: n1, or n1_v6 for its IPv6
// session.
func (n Neighbor) name() string {
	if n.Addr.Is6() {
		return n.Node + "_v6"
	}
	return n.Node
}

// Proc is a daemon the router runs.
type Proc struct {
	Name string `json:"name"` // bird, zebra, bgpd
	process.Handle
}

// Router is the lab's BGP router, kept in the lab's state file.
type Router struct {
	Kind string     `json:"kind"` // BIRD or FRR
	NS   string     `json:"netns"`
	Dir  string     `json:"dir"`
	ID   netip.Addr `json:"routerID"`
	AS   uint32     `json:"as"`
	// Password is the TCP MD5 key (RFC 2385) of every session; "" for
	// none. It is not in the state file (which anyone may read): it is
	// kept in PasswordFile (0600), SavePassword writes it and
	// LoadPassword reads it back.
	Password  string     `json:"-"`
	Neighbors []Neighbor `json:"neighbors"`
	Procs     []Proc     `json:"procs,omitempty"`
}

// Socket is BIRD's control socket (birdc -s), or the directory of FRR's
// vty sockets (vtysh --vty_socket).
func (r *Router) Socket() string {
	if r.Kind == FRR {
		return filepath.Join(r.Dir, "vty")
	}
	return filepath.Join(r.Dir, "bird.ctl")
}

// ConfigFile is where the router's BGP configuration is written.
func (r *Router) ConfigFile() string {
	if r.Kind == FRR {
		return filepath.Join(r.Dir, "bgpd.conf")
	}
	return filepath.Join(r.Dir, "bird.conf")
}

// PasswordFile holds the sessions' password, readable by its owner only.
func (r *Router) PasswordFile() string { return filepath.Join(r.Dir, "password") }

// SavePassword writes r.Password to PasswordFile (0600), or removes the
// file when there is none.
func (r *Router) SavePassword() error {
	if r.Password == "" {
		if err := os.Remove(r.PasswordFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("router: remove %s: %w", r.PasswordFile(), err)
		}
		return nil
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if err := atomicfile.Write(r.PasswordFile(), strings.NewReader(r.Password), 0o600); err != nil {
		return fmt.Errorf("router: write %s: %w", r.PasswordFile(), err)
	}
	return nil
}

// LoadPassword sets r.Password from PasswordFile; no file is no
// password.
func (r *Router) LoadPassword() error {
	b, err := os.ReadFile(r.PasswordFile())
	switch {
	case errors.Is(err, os.ErrNotExist):
		r.Password = ""
		return nil
	case err != nil:
		return fmt.Errorf("router: read %s: %w", r.PasswordFile(), err)
	}
	r.Password = string(b)
	return nil
}

// CheckPassword refuses a password that kind's configuration cannot
// carry as it is (bgp.CheckPassword has refused what no speaker takes):
// BIRD 2.0's strings have no escape, so a double quote cannot be written
// in one; FRR 8.4 reads `neighbor ... password WORD`, one word, so a
// space or tab ends it (and a leading one is dropped).
func CheckPassword(kind, p string) error {
	switch {
	case kind == BIRD && strings.Contains(p, `"`):
		return errors.New(`BIRD cannot take a password with a double quote (its strings have no escape); use another character`)
	case kind == FRR && strings.ContainsAny(p, " \t"):
		return errors.New("FRR takes a password of one word (neighbor ... password WORD); use one without spaces")
	}
	return nil
}

// LogFile is the log of the router's daemons.
func (r *Router) LogFile() string { return filepath.Join(r.Dir, "router.log") }

// Start writes the configuration and starts the daemons in r.NS, then
// waits until they answer on their control sockets. record is called
// once each PID is known, so that the lab can stop it after any later
// failure.
func (r *Router) Start(ctx context.Context, record func() error) error {
	if err := Find(r.Kind); err != nil {
		return err
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	if err := r.writeConfig(); err != nil {
		return err
	}
	var argvs [][]string
	switch r.Kind {
	case BIRD:
		// -f: in the foreground, so that the PID is the daemon's.
		argvs = [][]string{{"bird", "-f", "-c", r.ConfigFile(), "-s", r.Socket(), "-P", filepath.Join(r.Dir, "bird.pid")}}
	case FRR:
		if err := r.prepareFRR(); err != nil {
			return err
		}
		// Without -d the daemons stay in the foreground. They drop to
		// the frr user (root is not in the frrvty group they insist on),
		// so the directory is frr's. -P 0: no TCP vty, only the sockets.
		common := func(bin, name string) []string {
			return []string{bin, "-f", filepath.Join(r.Dir, name+".conf"), "-i", filepath.Join(r.Dir, name+".pid"),
				"-z", filepath.Join(r.Dir, "zserv.api"), "--vty_socket", r.Socket(), "-u", "frr", "-g", "frr", "-P", "0", "--log", "stdout"}
		}
		argvs = [][]string{common(zebraBin, "zebra"), common(bgpdBin, "bgpd")}
	}
	for _, argv := range argvs {
		h, err := process.StartHandle(r.NS, r.LogFile(), nil, argv...)
		if err != nil {
			return err
		}
		r.Procs = append(r.Procs, Proc{Name: filepath.Base(argv[0]), Handle: h})
		if err := record(); err != nil {
			return err
		}
		if r.Kind == FRR && len(r.Procs) == 1 {
			// bgpd connects to zebra's socket: start it once zebra listens.
			if err := r.waitFor(ctx, func() bool { _, err := os.Stat(filepath.Join(r.Dir, "zserv.api")); return err == nil }); err != nil {
				return err
			}
		}
	}
	return r.waitFor(ctx, func() bool { _, err := r.control(ctx, r.statusCommand()...); return err == nil })
}

// prepareFRR gives the frr user the router's directory, and writes
// zebra's configuration.
func (r *Router) prepareFRR() error {
	if err := os.MkdirAll(r.Socket(), 0o755); err != nil {
		return err
	}
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("--bgp-router frr: no frr user (apt-get install frr creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.WriteFile(filepath.Join(r.Dir, "zebra.conf"), []byte("hostname weft-lab-router\n"), 0o644); err != nil {
		return err
	}
	return filepath.Walk(r.Dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}

// waitFor polls ok until it holds, a daemon exits or 20 s pass.
func (r *Router) waitFor(ctx context.Context, ok func() bool) error {
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		for _, p := range r.Procs {
			if !p.Running() {
				return fmt.Errorf("%s exited; its log:\n%s", p.Name, process.TailFile(r.LogFile(), 15))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer after 20s; its log:\n%s", r.Kind, process.TailFile(r.LogFile(), 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Running reports whether every daemon of the router runs.
func (r *Router) Running() bool {
	for _, p := range r.Procs {
		if !p.Running() {
			return false
		}
	}
	return len(r.Procs) > 0
}

// Stop ends the router's daemons, bgpd before zebra. Idempotent: a
// daemon that is gone is success. The routes they installed go with the
// namespace.
func (r *Router) Stop() error {
	var errs []error
	for _, p := range slices.Backward(r.Procs) {
		if err := p.Stop(10 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("router %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// AddNeighbor adds eBGP neighbours to the configuration and to the
// running router (`birdc configure`; for FRR the same lines through
// vtysh). A neighbour already there (same address) is left as it is: a
// node removed and added again under the same name peers again.
func (r *Router) AddNeighbor(ctx context.Context, ns ...Neighbor) error {
	var added []Neighbor
	for _, n := range ns {
		if !slices.ContainsFunc(r.Neighbors, func(x Neighbor) bool { return x.Addr == n.Addr }) {
			r.Neighbors = append(r.Neighbors, n)
			added = append(added, n)
		}
	}
	if len(added) == 0 {
		return nil
	}
	if err := r.writeConfig(); err != nil {
		return err
	}
	if len(r.Procs) == 0 { // not started yet: Start reads the file
		return nil
	}
	switch r.Kind {
	case BIRD:
		out, err := r.control(ctx, "configure")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
			return fmt.Errorf("birdc configure: %s", strings.TrimSpace(out))
		}
		return nil
	case FRR:
		lines := []string{fmt.Sprintf("router bgp %d", r.AS)}
		for _, n := range added {
			lines = append(lines, frrNeighbor(n, r.Password)...)
		}
		for _, n := range added {
			lines = append(lines, frrActivate(n)...)
		}
		return r.configureFRR(ctx, lines)
	}
	return nil
}

// configureFRR applies configuration lines to the running FRR (`vtysh
// --vty_socket DIR -f FILE`, the lines under `configure terminal`). The
// lines go through a file that only root reads, removed afterwards, not
// vtysh's command line (visible in ps: they may hold the password) nor
// its standard input (where vtysh takes '?' for help and drops it). The
// password is masked in an error.
func (r *Router) configureFRR(ctx context.Context, lines []string) error {
	f, err := os.CreateTemp(r.Dir, "vtysh-*.conf") // 0600
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("router: write %s: %w", f.Name(), err)
	}
	_, err = r.run(ctx, "vtysh", "--vty_socket", r.Socket(), "-f", f.Name())
	if err != nil && r.Password != "" {
		err = errors.New(strings.ReplaceAll(err.Error(), r.Password, "(password)"))
	}
	return err
}

// writeConfig writes the configuration file of r's kind.
func (r *Router) writeConfig() error {
	conf, mode := BIRDConfig(r), os.FileMode(0o600)
	if r.Kind == FRR {
		conf = FRRConfig(r)
	}
	if err := os.WriteFile(r.ConfigFile(), []byte(conf), mode); err != nil {
		return fmt.Errorf("router: write %s: %w", r.ConfigFile(), err)
	}
	if r.Kind == FRR {
		if u, err := user.Lookup("frr"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			return os.Chown(r.ConfigFile(), uid, gid)
		}
	}
	return nil
}

// statusCommand is a harmless command that answers once the router is
// up.
func (r *Router) statusCommand() []string {
	if r.Kind == FRR {
		return []string{"show bgp summary json"}
	}
	return []string{"show status"}
}

// control runs commands on the router's control socket: birdc's (each a
// separate call) or vtysh's (one call, -c per command), inside its
// namespace, and returns their output. Nothing secret goes through it:
// its arguments are visible in ps.
func (r *Router) control(ctx context.Context, cmds ...string) (string, error) {
	if r.Kind == FRR {
		argv := []string{"vtysh", "--vty_socket", r.Socket()}
		for _, c := range cmds {
			argv = append(argv, "-c", c)
		}
		out, err := r.run(ctx, argv...)
		if err == nil && strings.Contains(out, "% ") { // vtysh reports a bad line and goes on
			err = fmt.Errorf("vtysh: %s", strings.TrimSpace(out))
		}
		return out, err
	}
	var b strings.Builder
	for _, c := range cmds {
		out, err := r.run(ctx, append([]string{"birdc", "-s", r.Socket()}, strings.Fields(c)...)...)
		b.WriteString(out)
		if err != nil {
			return b.String(), err
		}
	}
	return b.String(), nil
}

// run runs argv in the router's namespace, killed after 10 s, and
// returns its output.
func (r *Router) run(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c := netns.Command(r.NS, argv...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			if c.Process != nil {
				_ = c.Process.Kill() // birdc or vtysh, started just now
			}
		case <-done:
		}
	}()
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Control runs one command on the router's control socket (`birdc -s
// SOCKET CMD...` or `vtysh --vty_socket DIR -c CMD`): what tests use to
// disable and enable a session.
func (r *Router) Control(ctx context.Context, cmd string) (string, error) {
	return r.control(ctx, cmd)
}

// NextHops are the next hops of the routes to exactly p in the router's
// main table (`ip -n NS route show exact P`): what BIRD or zebra
// installed from BGP. None when the router has no route to p; a route
// with no gateway counts as the zero Addr.
func (r *Router) NextHops(p netip.Prefix) ([]netip.Addr, error) {
	h, err := netns.Handle(r.NS)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	routes, err := h.RouteListFiltered(fam, &netlink.Route{Dst: netconv.IPNet(p.Masked())}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("router: list routes to %s in %s: %w", p, r.NS, err)
	}
	var out []netip.Addr
	for _, rt := range routes {
		gws := []net.IP{rt.Gw}
		for _, nh := range rt.MultiPath {
			gws = append(gws, nh.Gw)
		}
		if len(rt.MultiPath) > 0 {
			gws = gws[1:]
		}
		for _, gw := range gws {
			out = append(out, netconv.Addr(gw))
		}
	}
	return out, nil
}
