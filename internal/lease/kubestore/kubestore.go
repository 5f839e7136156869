// Package kubestore is the lease store of Kubernetes mode: a node's subnets
// are its spec.podCIDRs (one per enabled family; spec.podCIDR when that is
// empty), assigned by kube-controller-manager, and peers are
// learned from Node objects through an informer. Unless read-only, the
// agent publishes its backend data with flannel's annotations on its own
// Node, so weft and flannel nodes can share a cluster.
package kubestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/kubeclient"
	"github.com/weftnet/weft/internal/lease"
)

// Defaults shared with flannel.
const (
	DefaultPrefix     = "flannel.alpha.coreos.com"
	DefaultConfigPath = "/etc/kube-flannel/net-conf.json"
)

// Options configure a Store.
type Options struct {
	Client     *kubeclient.Client
	NodeName   string // this node's Node object
	ConfigPath string // net-conf.json; default DefaultConfigPath
	Prefix     string // annotation prefix; default DefaultPrefix
	// ReadOnly makes the store write nothing: no annotations, no node
	// condition. Peers are every node with a podCIDR, at the address of
	// their node-public-ip (node-public-ipv6) annotation or else their
	// InternalIP of the family, with backend
	// data the backend can derive from that address.
	ReadOnly bool
	// Resync is the informer's resync period; 0 means none (the agent
	// resyncs the kernel on its own timer anyway).
	Resync time.Duration
	Log    *slog.Logger
}

// Store implements lease.Store on Node objects.
type Store struct {
	o   Options
	ann annotations
	doc []byte
	cfg *config.Config

	informer  cache.SharedIndexInformer
	start     sync.Once
	stop      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex // guards the fields below
	own     lease.Lease
	ownHeld bool
	watches map[*nodeQueue]struct{} // told when own changes
}

var _ lease.Store = (*Store)(nil)

// New reads and validates the network config and prepares the informer; it
// makes no request to the API server.
func New(o Options) (*Store, error) {
	if o.Client == nil || o.NodeName == "" {
		return nil, errors.New("kubestore: a client and a node name are required")
	}
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ann, err := newAnnotations(o.Prefix)
	if err != nil {
		return nil, err
	}
	doc, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("read the network config (--net-config-path): %w", err)
	}
	cfg, err := config.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.ConfigPath, err)
	}
	s := &Store{o: o, ann: ann, doc: doc, cfg: cfg, stop: make(chan struct{}), watches: map[*nodeQueue]struct{}{}}
	lw := cache.NewListWatchFromClient(o.Client.REST(kubeclient.Nodes), kubeclient.Nodes.Name, "", fields.Everything())
	s.informer = cache.NewSharedIndexInformer(lw, &corev1.Node{}, o.Resync, cache.Indexers{})
	if err := s.informer.SetTransform(s.strip); err != nil {
		return nil, fmt.Errorf("kubestore: set the informer's transform: %w", err)
	}
	return s, nil
}

// Close stops the informer.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	return nil
}

// strip keeps only what the store reads from a Node, so that a large
// cluster costs little memory: name, version, this store's annotations,
// pod CIDRs, the InternalIP and the creation time (a lease's age).
func (s *Store) strip(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone, kept as it is
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
		CreationTimestamp: n.CreationTimestamp}}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, s.o.Prefix+"/") {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	out.Spec.PodCIDR, out.Spec.PodCIDRs = n.Spec.PodCIDR, n.Spec.PodCIDRs
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}

// Config implements lease.Store: the net-conf.json file read at New.
func (s *Store) Config(context.Context) ([]byte, error) { return s.doc, nil }

// Acquire implements lease.Store. The subnets are the node's podCIDRs, one
// per enabled family; the agent never allocates in this mode. Unless
// read-only, it publishes req.Attrs as annotations on the Node (status
// subresource), with the address of a public-ip-overwrite or
// public-ipv6-overwrite annotation instead of the detected one. With
// req.Reclaim it does the same: publishing again is what puts back
// annotations someone else changed.
func (s *Store) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	n, err := s.ownNode(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	l, err := podCIDRs(n)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("%w: %w", err, lease.ErrMisconfigured)
	}
	if err := s.checkSubnets(n, &l, true); err != nil {
		return lease.Lease{}, err
	}
	attrs := req.Attrs
	if !s.o.ReadOnly {
		for _, f := range s.families() {
			name := s.ann.fam[f].publicIPOverwrite
			ow := n.Annotations[name]
			if ow == "" {
				continue
			}
			ip, err := netip.ParseAddr(ow)
			if err != nil || !f.Has(ip) {
				return lease.Lease{}, fmt.Errorf("node %q: annotation %s=%q is not an %s address: %w", n.Name, name, ow, f, lease.ErrMisconfigured)
			}
			if ip != *attrs.PublicIPOf(f) {
				s.o.Log.Info("publishing the public IP from the node's annotation", "annotation", name, "public-ip", ip)
			}
			*attrs.PublicIPOf(f) = ip
		}
		if err := s.publish(ctx, n, attrs); err != nil {
			return lease.Lease{}, err
		}
	}
	l.Attrs, l.Created = attrs, n.CreationTimestamp.UnixNano()
	s.mu.Lock()
	s.own, s.ownHeld = l, true
	for q := range s.watches {
		q.push(nodeChange{name: s.o.NodeName, own: true})
	}
	s.mu.Unlock()
	return l, nil
}

// families are the address families the network config enables.
func (s *Store) families() []lease.Family {
	var out []lease.Family
	for _, f := range lease.Families {
		if _, on := f.Of(s.cfg); on {
			out = append(out, f)
		}
	}
	return out
}

// podCIDRs returns a lease holding the node's pod CIDRs: spec.podCIDRs, or
// spec.podCIDR when that is empty, at most one of each family (a subnet is
// invalid when the node has none of its family).
func podCIDRs(n *corev1.Node) (lease.Lease, error) {
	var l lease.Lease
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) > 2 {
		return l, fmt.Errorf("node %q has %d podCIDRs %q: at most one IPv4 and one IPv6 are allowed", n.Name, len(cidrs), cidrs)
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return l, fmt.Errorf("node %q: podCIDR %q: %w", n.Name, c, err)
		}
		f := lease.IPv4
		if !p.Addr().Is4() {
			f = lease.IPv6
		}
		if !f.Has(p.Addr()) {
			return l, fmt.Errorf("node %q: podCIDR %q is an IPv4-mapped IPv6 prefix", n.Name, c)
		}
		sub := l.SubnetOf(f)
		if sub.IsValid() {
			return l, fmt.Errorf("node %q has two %s podCIDRs %q: at most one IPv4 and one IPv6 are allowed", n.Name, f, cidrs)
		}
		*sub = p.Masked()
	}
	return l, nil
}

// checkSubnets keeps in l the subnets of the enabled families and checks
// each against its Network: a node must have one of each enabled family,
// inside the family's Network. own says l is this node's, whose errors say
// what to do.
func (s *Store) checkSubnets(n *corev1.Node, l *lease.Lease, own bool) error {
	for _, f := range lease.Families {
		fam, on := f.Of(s.cfg)
		sub := l.SubnetOf(f)
		switch {
		case !on:
			*sub = netip.Prefix{} // flannel ignores a podCIDR of a disabled family
		case !sub.IsValid() && own && f == lease.IPv4 && len(s.families()) == 1:
			return fmt.Errorf("node %q has no podCIDR: start kube-controller-manager with --allocate-node-cidrs and --cluster-cidr, or set it", n.Name)
		case !sub.IsValid() && own:
			return fmt.Errorf("node %q has no %s podCIDR (it has %q) and net-conf.json enables %s: give kube-controller-manager --allocate-node-cidrs and a --cluster-cidr of each enabled family (e.g. --cluster-cidr=%s): %w",
				n.Name, f, n.Spec.PodCIDRs, f, clusterCIDRs(s.cfg), lease.ErrMisconfigured)
		case !sub.IsValid():
			return fmt.Errorf("node %q has no %s podCIDR", n.Name, f)
		case !fam.Network.Contains(sub.Addr()) || sub.Bits() < fam.Network.Bits():
			if own {
				return fmt.Errorf("node %q has podCIDR %s, which is outside Network %s in %s: make kube-controller-manager's --cluster-cidr and net-conf.json agree: %w",
					n.Name, *sub, fam.Network, s.o.ConfigPath, lease.ErrMisconfigured)
			}
			// Never route outside the cluster network.
			return fmt.Errorf("node %q: podCIDR %s is outside Network %s", n.Name, *sub, fam.Network)
		}
	}
	return nil
}

// clusterCIDRs is the --cluster-cidr that matches the config.
func clusterCIDRs(cfg *config.Config) string {
	var nets []string
	for _, f := range lease.Families {
		if fam, on := f.Of(cfg); on {
			nets = append(nets, fam.Network.String())
		}
	}
	return strings.Join(nets, ",")
}

// annotationValues are the annotations flannel writes for attrs, byte for
// byte: for each enabled family, backend-data (backend-v6-data) is the
// JSON of its backend data ("null" when there is none) and public-ip
// (public-ipv6) the address.
func (s *Store) annotationValues(attrs lease.Attrs) (map[string]string, error) {
	out := map[string]string{
		s.ann.managed:     "true",
		s.ann.backendType: attrs.BackendType,
	}
	for _, f := range s.families() {
		data, err := json.Marshal(*attrs.BackendDataOf(f))
		if err != nil {
			return nil, fmt.Errorf("encode %s backend data: %w", f, err)
		}
		ann := s.ann.fam[f]
		out[ann.backendData] = string(data)
		out[ann.publicIP] = attrs.PublicIPOf(f).String()
	}
	return out, nil
}

// publish writes attrs onto the node with a merge patch of the status
// subresource, as flannel does, and only if something differs.
func (s *Store) publish(ctx context.Context, n *corev1.Node, attrs lease.Attrs) error {
	want, err := s.annotationValues(attrs)
	if err != nil {
		return err
	}
	same := true
	for k, v := range want {
		if n.Annotations[k] != v {
			same = false
		}
	}
	if same {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": want}})
	if err != nil {
		return err
	}
	if err := s.o.Client.Patch(ctx, kubeclient.Nodes, "", n.Name, types.MergePatchType, patch, "status"); err != nil {
		return fmt.Errorf("annotate node %q with its backend data: %w", n.Name, err)
	}
	s.o.Log.Info("published backend data on the node", "node", n.Name, "backend-type", attrs.BackendType,
		"public-ip", attrs.PublicIP, "public-ipv6", attrs.PublicIPv6)
	return nil
}

// Renew implements lease.Store. A podCIDR does not expire: nothing to do.
func (s *Store) Renew(_ context.Context, l lease.Lease) (lease.Lease, error) { return l, nil }

// run starts the informer once.
func (s *Store) run() {
	s.start.Do(func() { go s.informer.Run(s.stop) })
}

// waitSynced blocks until the informer holds a full list.
func (s *Store) waitSynced(ctx context.Context) error {
	s.run()
	for !s.informer.HasSynced() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("list nodes: %w", ctx.Err())
		case <-s.stop:
			return errors.New("list nodes: store closed")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// List implements lease.Store from the informer's cache. This node's own
// lease is listed as acquired while its Node exists.
func (s *Store) List(ctx context.Context) ([]lease.Lease, error) {
	if err := s.waitSynced(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	own, ownHeld := s.own, s.ownHeld
	s.mu.Unlock()
	objs := s.informer.GetStore().List()
	out := make([]lease.Lease, 0, len(objs))
	for _, obj := range objs {
		n, ok := obj.(*corev1.Node)
		if !ok {
			continue
		}
		if n.Name == s.o.NodeName {
			if ownHeld {
				out = append(out, own)
			}
			continue
		}
		if l, ok, _ := s.nodeLease(n); ok {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Subnet.Addr().Compare(out[j].Subnet.Addr()); c != 0 {
			return c < 0
		}
		return out[i].IPv6Subnet.Addr().Less(out[j].IPv6Subnet.Addr())
	})
	return out, nil
}

// nodeLease turns a peer's Node into a lease. ok is false for nodes that
// are not (yet) part of the network (no podCIDR; in full mode, not marked
// as managed by weft or flannel), and for nodes that claim to be but do not
// decode, for which err says why (it quotes no annotation in full: any
// client that may write a Node's status may write anything there). A
// lease has the subnet, public address and backend data of each enabled
// family.
func (s *Store) nodeLease(n *corev1.Node) (l lease.Lease, ok bool, err error) {
	l, err = podCIDRs(n)
	if err != nil {
		return lease.Lease{}, false, err
	}
	if !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
		return lease.Lease{}, false, nil
	}
	if !s.o.ReadOnly && n.Annotations[s.ann.managed] != "true" {
		return lease.Lease{}, false, nil // not ours nor flannel's: ignored
	}
	if err := s.checkSubnets(n, &l, false); err != nil {
		return lease.Lease{}, false, err
	}
	l.Created = n.CreationTimestamp.UnixNano()
	if s.o.ReadOnly {
		l.Attrs.BackendType = s.cfg.Backend.Type
		for _, f := range s.families() {
			ip := nodeAddress(n, s.ann.fam[f].nodePublicIP, f)
			if !ip.IsValid() {
				return lease.Lease{}, false, nil
			}
			*l.Attrs.PublicIPOf(f) = ip
		}
		return l, true, nil
	}
	l.Attrs.BackendType = n.Annotations[s.ann.backendType]
	for _, f := range s.families() {
		ann := s.ann.fam[f]
		v := n.Annotations[ann.publicIP]
		ip, err := netip.ParseAddr(v)
		if err != nil || !f.Has(ip) {
			return lease.Lease{}, false, fmt.Errorf("node %q: annotation %s (%d bytes) is not an %s address", n.Name, ann.publicIP, len(v), f)
		}
		*l.Attrs.PublicIPOf(f) = ip
		*l.Attrs.BackendDataOf(f) = backendData(n.Annotations[ann.backendData])
	}
	return l, true, nil
}

// nodeAddress is the node-public-ip (node-public-ipv6) annotation if set,
// else the node's first InternalIP of family f.
func nodeAddress(n *corev1.Node, annotation string, f lease.Family) netip.Addr {
	if v := n.Annotations[annotation]; v != "" {
		if ip, err := netip.ParseAddr(v); err == nil && f.Has(ip) {
			return ip
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && f.Has(ip) {
			return ip
		}
	}
	return netip.Addr{}
}

// Watch implements lease.Store. Each Node is a record keyed "node/NAME":
// its lease as List makes it (this node's own lease as acquired, while its
// Node exists), or the reason it does not decode. The first event is a
// Reset with every node, sent once the informer's cache holds them all;
// then one Event per node whose lease changes: added, changed, or Deleted
// when the Node goes or stops being a lease. Updates that change no lease,
// such as kubelet's heartbeats, send nothing. The informer itself lists
// again and resumes after a broken watch, so there is no other Reset.
func (s *Store) Watch(ctx context.Context, sink func(lease.Event)) error {
	q := &nodeQueue{wake: make(chan struct{}, 1)}
	s.mu.Lock()
	s.watches[q] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watches, q)
		s.mu.Unlock()
	}()
	reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { q.pushNode(obj, false) },
		UpdateFunc: func(_, obj any) {
			q.pushNode(obj, false)
		},
		DeleteFunc: func(obj any) { q.pushNode(obj, true) },
	})
	if err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	defer func() { _ = s.informer.RemoveEventHandler(reg) }()
	s.run()

	sent := map[string]lease.Record{} // by key: what the sink knows
	invalid := map[string]bool{}      // keys sent with Err
	ownExists := false
	// apply turns a change into the record it leaves (ok false: none).
	apply := func(c nodeChange) (lease.Record, bool) {
		key := "node/" + c.name
		if c.name == s.o.NodeName {
			if !c.own {
				ownExists = c.node != nil
			}
			s.mu.Lock()
			own, held := s.own, s.ownHeld
			s.mu.Unlock()
			return lease.Record{Key: key, Lease: own}, held && ownExists
		}
		if c.node == nil {
			return lease.Record{Key: key}, false
		}
		l, ok, err := s.nodeLease(c.node)
		if err != nil {
			return lease.Record{Key: key, Err: err}, true
		}
		return lease.Record{Key: key, Lease: l}, ok
	}
	// Until the cache is synced and this handler has had every node.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !reg.HasSynced() {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return nil
		case <-tick.C:
		}
	}
	tick.Stop()
	for _, c := range q.take() {
		if r, ok := apply(c); ok {
			sent[r.Key] = r
		} else {
			delete(sent, r.Key)
		}
	}
	reset := lease.Event{Reset: true, Cause: lease.CauseStart}
	for _, r := range sent {
		if r.Err != nil {
			reset.Invalid = append(reset.Invalid, r)
			invalid[r.Key] = true
		} else {
			reset.Leases = append(reset.Leases, r)
		}
	}
	sort.Slice(reset.Leases, func(i, j int) bool { return reset.Leases[i].Key < reset.Leases[j].Key })
	sort.Slice(reset.Invalid, func(i, j int) bool { return reset.Invalid[i].Key < reset.Invalid[j].Key })
	sink(reset)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return nil
		case <-q.wake:
		}
		for _, c := range q.take() {
			r, ok := apply(c)
			old, had := sent[r.Key]
			switch {
			case ok && had && sameRecord(old, r):
				// A heartbeat, or a change to something a lease does not hold.
			case ok:
				sent[r.Key] = r
				sink(lease.Event{Record: r})
			case had:
				delete(sent, r.Key)
				sink(lease.Event{Record: lease.Record{Key: r.Key}, Deleted: true})
			}
		}
	}
}

// nodeChange is one informer notification, or this node's lease changing.
type nodeChange struct {
	name string
	node *corev1.Node // nil: the Node is gone
	own  bool         // Acquire changed this node's lease
}

// nodeQueue passes changes from the informer's handler to the watching
// goroutine, so the handler never waits on the sink.
type nodeQueue struct {
	mu      sync.Mutex // guards changes
	changes []nodeChange
	wake    chan struct{} // 1-slot: something was queued
}

func (q *nodeQueue) push(c nodeChange) {
	q.mu.Lock()
	q.changes = append(q.changes, c)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pushNode queues a Node from the informer; gone says it was deleted.
func (q *nodeQueue) pushNode(obj any, gone bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	c := nodeChange{name: n.Name, node: n}
	if gone {
		c.node = nil
	}
	q.push(c)
}

func (q *nodeQueue) take() []nodeChange {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.changes
	q.changes = nil
	return c
}

// sameRecord reports whether two records say the same.
func sameRecord(a, b lease.Record) bool {
	if (a.Err == nil) != (b.Err == nil) {
		return false
	}
	if a.Err != nil {
		return a.Err.Error() == b.Err.Error()
	}
	x, y := a.Lease, b.Lease
	return x.Subnet == y.Subnet && x.IPv6Subnet == y.IPv6Subnet && x.Created == y.Created && x.StoreID == y.StoreID &&
		x.Expiration.Equal(y.Expiration) && x.Attrs.PublicIP == y.Attrs.PublicIP && x.Attrs.PublicIPv6 == y.Attrs.PublicIPv6 &&
		x.Attrs.BackendType == y.Attrs.BackendType && bytes.Equal(x.Attrs.BackendData, y.Attrs.BackendData) &&
		bytes.Equal(x.Attrs.BackendV6Data, y.Attrs.BackendV6Data)
}

// MarkReady sets the node condition NetworkUnavailable=False, as flannel
// does once its network is up. A read-only store writes nothing.
func (s *Store) MarkReady(ctx context.Context) error {
	if s.o.ReadOnly {
		return nil
	}
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "WeftIsUp", Message: "weft is running on this node",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	if err := s.o.Client.Patch(ctx, kubeclient.Nodes, "", s.o.NodeName, types.StrategicMergePatchType, patch, "status"); err != nil {
		return fmt.Errorf("set NetworkUnavailable=False on node %q: %w", s.o.NodeName, err)
	}
	return nil
}

// annotations are the full names of the annotations, under a prefix.
type annotations struct {
	managed, backendType string
	fam                  [2]familyAnnotations // by lease.Family
}

// familyAnnotations are the annotations of one address family: flannel's
// backend-data, public-ip, public-ip-overwrite and node-public-ip, or their
// -v6 / -ipv6 twins.
type familyAnnotations struct {
	backendData, publicIP, publicIPOverwrite, nodePublicIP string
}

func newAnnotations(prefix string) (annotations, error) {
	if prefix == "" || strings.ContainsAny(prefix, "/ ") || strings.HasPrefix(prefix, ".") || strings.HasSuffix(prefix, ".") {
		return annotations{}, fmt.Errorf("annotation prefix %q: want a DNS subdomain such as %s", prefix, DefaultPrefix)
	}
	p := prefix + "/"
	return annotations{
		managed: p + "kube-subnet-manager", backendType: p + "backend-type",
		fam: [2]familyAnnotations{
			lease.IPv4: {backendData: p + "backend-data", publicIP: p + "public-ip",
				publicIPOverwrite: p + "public-ip-overwrite", nodePublicIP: p + "node-public-ip"},
			lease.IPv6: {backendData: p + "backend-v6-data", publicIP: p + "public-ipv6",
				publicIPOverwrite: p + "public-ipv6-overwrite", nodePublicIP: p + "node-public-ipv6"},
		},
	}, nil
}

// ownNode reads this node's Node object.
func (s *Store) ownNode(ctx context.Context) (*corev1.Node, error) {
	n := &corev1.Node{}
	if err := s.o.Client.Get(ctx, kubeclient.Nodes, "", s.o.NodeName, n); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("node %q does not exist: set NODE_NAME to this node's name as Kubernetes knows it: %w", s.o.NodeName, err)
		}
		return nil, fmt.Errorf("get node %q: %w", s.o.NodeName, err)
	}
	return n, nil
}

// NodeAnnotations returns this node's Node annotations as the API server
// has them now (nil when it has none), read on every call: the agent reads
// its own settings from them (the bgp.weft.io/ annotations, bgp.ParseAnnotations).
// The map is the caller's.
func (s *Store) NodeAnnotations(ctx context.Context) (map[string]string, error) {
	n, err := s.ownNode(ctx)
	if err != nil {
		return nil, err
	}
	return n.Annotations, nil
}

// NodePublicIP returns the node-public-ip annotation of this node, if set:
// flannel's way to choose a node's underlay address from the cluster.
func (s *Store) NodePublicIP(ctx context.Context) (netip.Addr, error) {
	return s.nodePublicIP(ctx, lease.IPv4)
}

// NodePublicIPv6 returns the node-public-ipv6 annotation of this node, if
// set: NodePublicIP's IPv6 twin (flannel's --public-ipv6 from the cluster).
func (s *Store) NodePublicIPv6(ctx context.Context) (netip.Addr, error) {
	return s.nodePublicIP(ctx, lease.IPv6)
}

func (s *Store) nodePublicIP(ctx context.Context, f lease.Family) (netip.Addr, error) {
	n, err := s.ownNode(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	name := s.ann.fam[f].nodePublicIP
	v := n.Annotations[name]
	if v == "" {
		return netip.Addr{}, nil
	}
	ip, err := netip.ParseAddr(v)
	if err != nil || !f.Has(ip) {
		return netip.Addr{}, fmt.Errorf("node %q: annotation %s=%q is not an %s address", n.Name, name, v, f)
	}
	return ip, nil
}

// PublicIPOverwrite reports whether this node publishes another address
// than its own for peers to reach it (the public-ip-overwrite annotation:
// a node behind NAT), so that a --public-ip on none of its interfaces is
// expected there.
func (s *Store) PublicIPOverwrite(ctx context.Context) (bool, error) {
	return s.publicIPOverwrite(ctx, lease.IPv4)
}

// PublicIPv6Overwrite is PublicIPOverwrite for IPv6: the
// public-ipv6-overwrite annotation is set on this node.
func (s *Store) PublicIPv6Overwrite(ctx context.Context) (bool, error) {
	return s.publicIPOverwrite(ctx, lease.IPv6)
}

func (s *Store) publicIPOverwrite(ctx context.Context, f lease.Family) (bool, error) {
	n, err := s.ownNode(ctx)
	if err != nil {
		return false, err
	}
	return n.Annotations[s.ann.fam[f].publicIPOverwrite] != "", nil
}

// PreviousAttrs returns the attributes this node published before, read
// back from its own Node's annotations (backend-type, backend-data,
// backend-v6-data, public-ip, public-ipv6), whoever wrote them: weft, or
// flannel before the node moved to weft. The vxlan backend takes the
// VtepMAC of a device it creates from them, as flannel does (its PR
// #1829), so that peers' neighbour entries stay valid across a reboot. The
// attributes are zero when the Node has none; an annotation that does not
// decode (not JSON, not an address of its family) is left out, as a fresh
// node would have it: the next publish overwrites it anyway.
func (s *Store) PreviousAttrs(ctx context.Context) (lease.Attrs, error) {
	n, err := s.ownNode(ctx)
	if err != nil {
		return lease.Attrs{}, err
	}
	a := lease.Attrs{BackendType: n.Annotations[s.ann.backendType]}
	for _, f := range lease.Families {
		ann := s.ann.fam[f]
		if ip, err := netip.ParseAddr(n.Annotations[ann.publicIP]); err == nil && f.Has(ip) && !ip.IsUnspecified() {
			*a.PublicIPOf(f) = ip
		}
		*a.BackendDataOf(f) = backendData(n.Annotations[ann.backendData])
	}
	return a, nil
}

// backendData is a backend-data annotation as a lease holds it: nil for
// none, "null" or anything that is not JSON.
func backendData(v string) json.RawMessage {
	v = strings.TrimSpace(v)
	if v == "" || v == "null" || !json.Valid([]byte(v)) {
		return nil
	}
	return json.RawMessage(v)
}
