package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/internal/lab/pod"
	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
)

// PodPort is a container port of a lab pod: number, protocol (TCP, UDP,
// SCTP) and name ("" gets "serve-PORT-PROTO", as cyclonus names them).
type PodPort = pod.Port

// PodOptions describe a pod to add to a running lab.
type PodOptions struct {
	Name      string            // a DNS subdomain, unique in its namespace
	Namespace string            // "" is "default"
	Node      string            // n1, ...
	Labels    map[string]string // its Pod object's labels
	Ports     []PodPort         // its container ports, one entry per port and protocol
	// Register (--store kube only) does what scheduler and kubelet do: the
	// Namespace made if missing, the Pod object created (or an existing
	// one bound to Node), its status set Running with the pod's address
	// and Ready. The Pod object is deleted with the pod.
	Register bool
	// Serve runs `weft lab serve` in the pod: a TCP and a UDP server per
	// port (as Ports say), each answering "namespace/name\n".
	Serve bool
	// Commands are more processes to run in the pod's network namespace
	// (e.g. agnhost serve-hostname --port 80 --tcp), found by PATH if not
	// absolute; recorded by PID and start time, stopped with the pod.
	// Their output goes to the pod's log in the lab directory.
	Commands [][]string
}

// PodInfo is where a lab pod is.
type PodInfo struct {
	NetNS string     // its network namespace (/run/netns/NetNS)
	IP    netip.Addr // its address
	Node  string
}

// AddPod adds a pod to lab labName: a network namespace attached to its
// node through CNI (as a runtime does), then its servers and its Pod
// object as o says. It waits for nothing else: the servers listen when
// AddPod returns. On a failure, what it created is removed. AddPod holds
// the lab's lock: calls on one lab run one at a time. A program calling
// it must call netns.HandleExec first in main (or TestMain): the CNI
// plugins and servers are started through netns.Command.
func AddPod(ctx context.Context, labName string, o PodOptions) (PodInfo, error) {
	s, done, err := open(labName, true)
	if err != nil {
		return PodInfo{}, err
	}
	defer done()
	p, err := s.addPodWith(ctx, o)
	if err != nil {
		return PodInfo{}, err
	}
	return PodInfo{NetNS: p.NS, IP: p.Addr, Node: p.Node}, nil
}

// RemovePod removes pod namespace/name ("" is "default") from lab
// labName: its processes stopped, CNI DEL run, its network namespace
// deleted, and its Pod object if the lab registered it.
func RemovePod(ctx context.Context, labName, namespace, name string) error {
	s, done, err := open(labName, true)
	if err != nil {
		return err
	}
	defer done()
	p, err := s.pod(namespace, name)
	if err != nil {
		return err
	}
	return s.removePod(ctx, p)
}

// KubeConfig is an admin client config of lab labName's API server
// (--store kube) whose connections are made inside the lab's control
// namespace, the only place the API server is reachable from.
func KubeConfig(labName string) (*rest.Config, error) {
	s, done, err := open(labName, false)
	if err != nil {
		return nil, err
	}
	defer done()
	if s.Kube == nil {
		return nil, fmt.Errorf("lab %s has no API server: start one with 'weft lab up --store kube'", labName)
	}
	return s.Kube.AdminConfig(s.Ctl.NS), nil
}

// NodeNames are the names of lab labName's nodes, in order.
func NodeNames(labName string) ([]string, error) {
	s, done, err := open(labName, false)
	if err != nil {
		return nil, err
	}
	defer done()
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	return names, nil
}

// PodAddOptions are `weft lab pod add`'s: PodOptions from the command
// line, with every pod registered (--store kube) and served.
func PodAdd(ctx context.Context, labName string, o PodOptions, w io.Writer) error {
	s, done, err := open(labName, true)
	if err != nil {
		return err
	}
	defer done()
	o.Register = s.Kube != nil
	o.Serve = len(o.Ports) > 0
	p, err := s.addPodWith(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "added pod %s on %s: %s, netns %s%s\n", p.Key(), p.Node, p.Addr, p.NS, podExtras(p))
	return nil
}

// PodRemove is `weft lab pod remove`.
func PodRemove(ctx context.Context, labName, namespace, name string, w io.Writer) error {
	if err := RemovePod(ctx, labName, namespace, name); err != nil {
		return err
	}
	fmt.Fprintf(w, "removed pod %s/%s\n", defaultNS(namespace), name)
	return nil
}

func podExtras(p *pod.Pod) string {
	var b strings.Builder
	if len(p.Labels) > 0 {
		fmt.Fprintf(&b, ", labels %s", labelList(p.Labels))
	}
	if len(p.Ports) > 0 {
		fmt.Fprintf(&b, ", serving %s", portList(p.Ports))
	}
	if p.Registered {
		b.WriteString(", Pod object registered")
	}
	return b.String()
}

func defaultNS(ns string) string {
	if ns == "" {
		return pod.DefaultNamespace
	}
	return ns
}

// pod finds pod namespace/name.
func (s *State) pod(namespace, name string) (*pod.Pod, error) {
	key := defaultNS(namespace) + "/" + name
	for _, p := range s.Pods {
		if p.Key() == key {
			return p, nil
		}
	}
	return nil, fmt.Errorf("lab %s has no pod %s", s.Name, key)
}

// podPlan checks o against the lab and returns the pod it describes, not
// yet created.
func (s *State) podPlan(o PodOptions) (*pod.Pod, error) {
	ns := defaultNS(o.Namespace)
	if err := pod.ValidateName(ns, o.Name); err != nil {
		return nil, err
	}
	if _, err := s.node(o.Node); err != nil {
		return nil, err
	}
	if _, err := s.pod(ns, o.Name); err == nil {
		return nil, fmt.Errorf("lab %s already has pod %s/%s", s.Name, ns, o.Name)
	}
	if o.Register && s.Kube == nil {
		return nil, fmt.Errorf("pod %s/%s: registering a Pod object needs a lab with --store kube", ns, o.Name)
	}
	ports, err := pod.ValidatePorts(o.Ports)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", ns, o.Name, err)
	}
	for _, c := range o.Commands {
		if len(c) == 0 {
			return nil, fmt.Errorf("pod %s/%s: an empty command", ns, o.Name)
		}
	}
	nsName := pod.NetNS(s.Name, ns, o.Name)
	p := &pod.Pod{Name: o.Name, NS: nsName, Node: o.Node, ID: "lab-" + nsName, Labels: o.Labels, Ports: ports}
	if ns != pod.DefaultNamespace {
		p.Namespace = ns
	}
	return p, nil
}

// addPodWith creates the pod o describes; on a failure it removes what it
// created.
func (s *State) addPodWith(ctx context.Context, o PodOptions) (p *pod.Pod, err error) {
	p, err = s.podPlan(o)
	if err != nil {
		return nil, err
	}
	// Checked before the pod is recorded: a name that is some other
	// namespace's (a node's, ctl's) must not be deleted by the cleanup.
	if netns.Exists(p.NS) {
		return nil, fmt.Errorf("pod %s: network namespace %s already exists and is not this pod's: pick another name", p.Key(), p.NS)
	}
	n, _ := s.node(o.Node)
	s.Pods = append(s.Pods, p)
	defer func() {
		if err != nil {
			if rerr := s.removePod(context.WithoutCancel(ctx), p); rerr != nil {
				err = fmt.Errorf("%w; removing it: %w", err, rerr)
			}
		}
	}()
	if err := s.addNS(p.NS); err != nil {
		return p, err
	}
	if err := n.runtime().Add(ctx, p); err != nil {
		return p, err
	}
	if err := s.save(); err != nil {
		return p, err
	}
	if err := s.startServers(p, o); err != nil {
		return p, err
	}
	if o.Register {
		p.Registered = true
		if err := s.save(); err != nil {
			return p, err
		}
		if err := s.Kube.RegisterPod(ctx, s.Ctl.NS, p, n.Addr); err != nil {
			return p, err
		}
	}
	return p, nil
}

// podLog is where the output of a pod's processes goes.
func (s *State) podLog(p *pod.Pod) string {
	return filepath.Join(dir(s.Name), "pods", p.NS+".log")
}

// startServers starts `weft lab serve` (o.Serve) and o.Commands in p's
// namespace, recording each, then waits until the lab's server listens.
func (s *State) startServers(p *pod.Pod, o PodOptions) error {
	var cmds [][]string
	if o.Serve && len(p.Ports) > 0 {
		cmds = append(cmds, serveArgs(s.Weft, p))
		p.Serves = true
	}
	cmds = append(cmds, o.Commands...)
	for _, argv := range cmds {
		h, err := process.StartHandle(p.NS, s.podLog(p), nil, argv...)
		if err != nil {
			return err
		}
		p.Procs = append(p.Procs, h)
		if err := s.save(); err != nil {
			return err
		}
	}
	if p.Serves {
		return waitServing(p, 5*time.Second, s.podLog(p))
	}
	return nil
}

// serveArgs is the command line of p's `weft lab serve`.
func serveArgs(weft string, p *pod.Pod) []string {
	var ports []string
	for _, pp := range p.Ports {
		ports = append(ports, pp.String())
	}
	return []string{weft, "lab", "serve", "--answer", p.Key(), "--ports", strings.Join(ports, ",")}
}

// waitServing waits until p's first TCP or UDP port answers with its
// name (a UDP-only pod is probed over UDP).
func waitServing(p *pod.Pod, timeout time.Duration, log string) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		for _, pp := range p.Ports {
			if pp.Protocol == pod.TCP || pp.Protocol == pod.UDP {
				var got string
				got, err = pod.Ask(p.NS, pp.Protocol, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pp.Port), 200*time.Millisecond)
				if err == nil && got != p.Key() {
					err = fmt.Errorf("%s answers %q, want %q", pp, got, p.Key())
				}
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s: its server does not answer after %s: %w; its log:\n%s", p.Key(), timeout, err, process.TailFile(log, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removePod stops p's processes, runs CNI DEL, deletes its network
// namespace and its Pod object (if registered), and forgets it. Each step
// is idempotent: a pod half created is removed too.
func (s *State) removePod(ctx context.Context, p *pod.Pod) error {
	var errs []error
	for _, h := range p.Procs {
		if err := h.Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if n, err := s.node(p.Node); err == nil {
		if err := n.runtime().Del(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := netns.Delete(p.NS); err != nil {
		errs = append(errs, err)
	}
	if p.Registered && s.Kube != nil && s.Kube.Running() {
		if err := s.Kube.DeletePod(ctx, s.Ctl.NS, p.KubeNamespace(), p.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.Key(), err)
	}
	s.Pods = slices.DeleteFunc(s.Pods, func(x *pod.Pod) bool { return x == p })
	s.Namespaces = slices.DeleteFunc(s.Namespaces, func(x string) bool { return x == p.NS })
	return s.save()
}

// Serve is `weft lab serve`, which a pod's namespace runs: TCP and UDP
// servers on ports (as --ports reads them) answering answer.
func Serve(ctx context.Context, answer, ports string) error {
	ps, err := pod.ParsePorts(ports)
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		return errors.New("weft lab serve: no --ports")
	}
	return pod.Serve(ctx, answer, ps)
}

// Kubectl runs kubectl (beside weft, else from PATH) with args inside lab
// name's control namespace, where its API server is reachable, with the
// admin kubeconfig; its exit status is an ExitError.
func Kubectl(name string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	s, done, err := open(name, false)
	if err != nil {
		return err
	}
	defer done()
	if s.Kube == nil {
		return fmt.Errorf("lab %s has no API server: kubectl needs a lab started with --store kube", name)
	}
	bin := filepath.Join(filepath.Dir(s.Weft), "kubectl")
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("kubectl"); err != nil {
			return fmt.Errorf("no kubectl beside %s or in PATH: build it with 'tools/kube/build.sh kubectl'", s.Weft)
		}
	}
	c := netns.Command(s.Ctl.NS, append([]string{bin}, args...)...)
	c.Env = append(os.Environ(), "KUBECONFIG="+s.Kube.AdminKubeconfig())
	c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
	if err := c.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ExitError(ee.ExitCode())
		}
		return err
	}
	return nil
}
