package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Sandbox is a pod's network namespace on a node, attached to the pod
// network.
type Sandbox struct {
	NetNS string     // the named network namespace
	IP    netip.Addr // the pod's address, from IPAM
	Node  string
}

// Runtime creates the kubelet's pod sandboxes and runs processes in them.
type Runtime interface {
	// AddPod creates pod namespace/name's network namespace on its node and
	// attaches it through CNI (ADD), as a container runtime would.
	AddPod(ctx context.Context, p PodSpec) (Sandbox, error)
	// RemovePod detaches a pod AddPod created (CNI DEL) and deletes its
	// namespace.
	RemovePod(ctx context.Context, namespace, name string) error
	// Start runs argv inside the network namespace netns, its output to
	// log, and returns a function that kills it with SIGKILL and reaps it
	// (safe to call more than once). The process also dies with the
	// harness.
	Start(netns string, argv []string, log io.Writer) (kill func(), err error)
	// Serving returns nil once something answers on port/proto inside the
	// network namespace netns (a TCP connect, or a UDP datagram
	// answered), or an error at ctx's end.
	Serving(ctx context.Context, netns string, proto corev1.Protocol, port int32) error
}

// PodSpec is what a runtime needs to know of a pod.
type PodSpec struct {
	Namespace, Name, Node string
	Labels                map[string]string
	Ports                 []corev1.ContainerPort
}

// Kubelet is the harness's stand-in for kubelet, the scheduler and the
// two controllers cyclonus relies on: it binds each new Pod to a node
// (spreading every namespace's pods over at least two nodes), creates its
// sandbox, starts its containers' commands (agnhost serve-hostname)
// inside it, reports it Running and Ready with its IP, and tears it down
// when the Pod goes. For namespaces it creates the "default"
// ServiceAccount (pod admission waits for it) and, when one is deleted,
// deletes what cyclonus puts in it and finalizes it, as the namespace
// controller does.
type Kubelet struct {
	client  kubernetes.Interface
	rt      Runtime
	agnhost string // replaces the image's /agnhost
	nodes   []string
	logDir  string
	log     *slog.Logger

	pods       listersv1.PodLister
	namespaces listersv1.NamespaceLister
	podQ       workqueue.TypedRateLimitingInterface[string]
	nsQ        workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex             // guards the fields below
	running map[string]*runningPod // by namespace/name
	// placed counts the pods bound in each namespace so far, and nsOrder
	// numbers the namespaces in the order their first pod was bound: the
	// k-th pod of the i-th namespace goes to node (i + k/2) mod N, so that
	// each namespace has a pair on one node and pods on at least two.
	placed  map[string]int
	nsOrder map[string]int
}

// runningPod is a pod whose sandbox and servers exist.
type runningPod struct {
	uid     types.UID
	sandbox Sandbox
	kills   []func() // of its containers' processes
	log     io.Closer
}

// KubeletConfig is what a Kubelet needs.
type KubeletConfig struct {
	Client  kubernetes.Interface
	Runtime Runtime
	Agnhost string   // the agnhost binary that stands for the image's /agnhost
	Nodes   []string // where pods may go
	LogDir  string   // where the output of each pod's processes goes ("": nowhere)
	Log     *slog.Logger
}

// NewKubelet returns a kubelet; Run starts it.
func NewKubelet(cfg KubeletConfig) (*Kubelet, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("kubelet: no nodes to bind pods to")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	rl := func() workqueue.TypedRateLimiter[string] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 2*time.Second)
	}
	return &Kubelet{client: cfg.Client, rt: cfg.Runtime, agnhost: cfg.Agnhost, nodes: slices.Clone(cfg.Nodes), logDir: cfg.LogDir, log: cfg.Log,
		podQ:    workqueue.NewTypedRateLimitingQueue(rl()),
		nsQ:     workqueue.NewTypedRateLimitingQueue(rl()),
		running: map[string]*runningPod{}, placed: map[string]int{}, nsOrder: map[string]int{}}, nil
}

// Run watches Pods and Namespaces and works until ctx ends; it then stops
// every server and removes every sandbox it created before returning.
// ready is closed once its caches are synced.
func (k *Kubelet) Run(ctx context.Context, ready chan<- struct{}) error {
	f := informers.NewSharedInformerFactory(k.client, 0)
	podInf, nsInf := f.Core().V1().Pods(), f.Core().V1().Namespaces()
	k.pods, k.namespaces = podInf.Lister(), nsInf.Lister()
	enqueue := func(q workqueue.TypedRateLimitingInterface[string]) cache.ResourceEventHandler {
		add := func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				q.Add(key)
			}
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }, DeleteFunc: add}
	}
	if _, err := podInf.Informer().AddEventHandler(enqueue(k.podQ)); err != nil {
		return fmt.Errorf("kubelet: watch pods: %w", err)
	}
	if _, err := nsInf.Informer().AddEventHandler(enqueue(k.nsQ)); err != nil {
		return fmt.Errorf("kubelet: watch namespaces: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInf.Informer().HasSynced, nsInf.Informer().HasSynced) {
		return fmt.Errorf("kubelet: caches not synced: %w", ctx.Err())
	}
	if ready != nil {
		close(ready)
	}
	var wg sync.WaitGroup
	// Pods start in parallel: a sandbox and its servers take a while.
	for range 4 {
		wg.Go(func() { k.work(ctx, k.podQ, k.syncPod) })
	}
	wg.Go(func() { k.work(ctx, k.nsQ, k.syncNamespace) })
	<-ctx.Done()
	k.podQ.ShutDown()
	k.nsQ.ShutDown()
	wg.Wait()
	return k.teardownAll()
}

func (k *Kubelet) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], sync func(context.Context, string) error) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		if err := sync(ctx, key); err != nil && ctx.Err() == nil {
			k.log.Warn("kubelet: sync failed, retrying", "key", key, "err", err)
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

// syncPod brings one pod to where its object says it should be.
func (k *Kubelet) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return k.teardown(ctx, key, "")
	}
	if err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil {
		if err := k.teardown(ctx, key, ""); err != nil {
			return err
		}
		// The containers are gone: finish the graceful deletion, as kubelet
		// does, so that the object goes away.
		zero := int64(0)
		err := k.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero,
			Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete pod %s: %w", key, err)
		}
		return nil
	}
	if pod.Spec.HostNetwork {
		return nil // not ours to run: no sandbox
	}
	if pod.Spec.NodeName == "" {
		return k.bind(ctx, pod)
	}
	if !slices.Contains(k.nodes, pod.Spec.NodeName) {
		return nil
	}
	k.mu.Lock()
	r := k.running[key]
	k.mu.Unlock()
	if r != nil && r.uid == pod.UID {
		if pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP == r.sandbox.IP.String() {
			return nil
		}
		return k.reportRunning(ctx, pod, r)
	}
	if r != nil { // a previous pod of the same name
		if err := k.teardown(ctx, key, r.uid); err != nil {
			return err
		}
	}
	r, err = k.start(ctx, pod)
	if err != nil {
		return err
	}
	return k.reportRunning(ctx, pod, r)
}

// bind picks the pod's node and binds it there (`pods/binding`, as the
// scheduler does).
func (k *Kubelet) bind(ctx context.Context, pod *corev1.Pod) error {
	k.mu.Lock()
	node := k.place(pod.Namespace)
	k.mu.Unlock()
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	err := k.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("bind pod %s/%s to %s: %w", pod.Namespace, pod.Name, node, err)
	}
	k.log.Debug("kubelet: bound", "pod", pod.Namespace+"/"+pod.Name, "node", node)
	return nil
}

// place returns the node for the next pod of namespace ns. k.mu is held.
func (k *Kubelet) place(ns string) string {
	i, ok := k.nsOrder[ns]
	if !ok {
		i = len(k.nsOrder)
		k.nsOrder[ns] = i
	}
	n := k.placed[ns]
	k.placed[ns]++
	return k.nodes[Placement(i, n, len(k.nodes))]
}

// Placement is the node index of the n-th pod of the i-th namespace on
// nodes nodes: pods go two by two, each namespace starting one node further
// on, so with three pods per namespace on three nodes every namespace has a
// same-node pair and a cross-node pair, and every node holds three pods.
func Placement(i, n, nodes int) int {
	return (i + n/2) % nodes
}

// start creates the pod's sandbox, starts its containers' servers and waits
// until they answer.
func (k *Kubelet) start(ctx context.Context, pod *corev1.Pod) (*runningPod, error) {
	key := pod.Namespace + "/" + pod.Name
	argvs, err := k.commands(pod)
	if err != nil {
		return nil, err
	}
	spec := PodSpec{Namespace: pod.Namespace, Name: pod.Name, Node: pod.Spec.NodeName, Labels: pod.Labels}
	for _, c := range pod.Spec.Containers {
		spec.Ports = append(spec.Ports, c.Ports...)
	}
	sb, err := k.rt.AddPod(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("pod %s: add sandbox on %s: %w", key, pod.Spec.NodeName, err)
	}
	r := &runningPod{uid: pod.UID, sandbox: sb}
	k.mu.Lock()
	k.running[key] = r
	k.mu.Unlock()
	var log io.Writer = io.Discard
	if k.logDir != "" {
		f, err := os.Create(filepath.Join(k.logDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)+".log"))
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", key, err)
		}
		log, r.log = f, f
	}
	for _, argv := range argvs {
		kill, err := k.rt.Start(sb.NetNS, argv, log)
		if err != nil {
			return nil, fmt.Errorf("pod %s: start %s: %w", key, strings.Join(argv, " "), err)
		}
		r.kills = append(r.kills, kill)
	}
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if err := k.rt.Serving(wait, sb.NetNS, p.Protocol, p.ContainerPort); err != nil {
				return nil, fmt.Errorf("pod %s: container %s does not answer on %d/%s: %w", key, c.Name, p.ContainerPort, p.Protocol, err)
			}
		}
	}
	k.log.Debug("kubelet: started", "pod", key, "netns", sb.NetNS, "node", sb.Node, "ip", sb.IP)
	return r, nil
}

// commands returns the argv of each container, with the image's agnhost
// replaced by ours. Only agnhost images are supported: they are all
// cyclonus uses.
func (k *Kubelet) commands(pod *corev1.Pod) ([][]string, error) {
	var out [][]string
	for _, c := range pod.Spec.Containers {
		argv := append(slices.Clone(c.Command), c.Args...)
		if len(argv) == 0 || path.Base(argv[0]) != "agnhost" {
			return nil, fmt.Errorf("pod %s/%s: container %s runs %q: the harness runs only agnhost commands", pod.Namespace, pod.Name, c.Name, argv)
		}
		argv[0] = k.agnhost
		out = append(out, argv)
	}
	return out, nil
}

// reportRunning writes the pod's status as kubelet would: Running, its IP,
// every condition and container ready.
func (k *Kubelet) reportRunning(ctx context.Context, pod *corev1.Pod, r *runningPod) error {
	patch, err := json.Marshal(map[string]any{"status": RunningStatus(pod, r.sandbox.IP, time.Now())})
	if err != nil {
		return err
	}
	_, err = k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: its delete event tears it down
	}
	if err != nil {
		return fmt.Errorf("patch status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// RunningStatus is the status kubelet reports for pod once all its
// containers run, with address ip.
func RunningStatus(pod *corev1.Pod, ip netip.Addr, now time.Time) corev1.PodStatus {
	t := metav1.NewTime(now.Truncate(time.Second))
	st := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}},
		StartTime: &t, QOSClass: corev1.PodQOSBestEffort}
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: t})
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image,
			Ready: true, Started: new(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}}})
	}
	return st
}

// teardown stops the servers of the pod at key and removes its sandbox,
// if it runs (and has uid, unless uid is empty).
func (k *Kubelet) teardown(ctx context.Context, key string, uid types.UID) error {
	k.mu.Lock()
	r := k.running[key]
	if r == nil || uid != "" && r.uid != uid {
		k.mu.Unlock()
		return nil
	}
	delete(k.running, key)
	k.mu.Unlock()
	return k.stop(ctx, key, r)
}

// stop kills the pod's processes at once (SIGKILL: cyclonus's pods have a
// termination grace period of 0, and agnhost serve-hostname answers
// SIGTERM by sleeping a minute) and removes its sandbox.
func (k *Kubelet) stop(ctx context.Context, key string, r *runningPod) error {
	for _, kill := range r.kills {
		kill()
	}
	if r.log != nil {
		r.log.Close()
	}
	ns, name, _ := strings.Cut(key, "/")
	if err := k.rt.RemovePod(ctx, ns, name); err != nil {
		return fmt.Errorf("pod %s: remove sandbox: %w", key, err)
	}
	k.log.Debug("kubelet: removed", "pod", key)
	return nil
}

// teardownAll removes every pod the kubelet runs, at its end.
func (k *Kubelet) teardownAll() error {
	k.mu.Lock()
	running := k.running
	k.running = map[string]*runningPod{}
	k.mu.Unlock()
	var errs []error
	for key, r := range running {
		// ctx has ended: removal gets a fresh one.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, k.stop(ctx, key, r))
		cancel()
	}
	return errors.Join(errs...)
}

// syncNamespace gives a live namespace its default ServiceAccount, and
// empties and finalizes one being deleted.
func (k *Kubelet) syncNamespace(ctx context.Context, name string) error {
	ns, err := k.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp == nil {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
		_, err := k.client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) && !apierrors.IsForbidden(err) { // forbidden: being deleted
			return fmt.Errorf("create service account %s/default: %w", name, err)
		}
		return nil
	}
	return k.finalizeNamespace(ctx, ns)
}

// finalizeNamespace deletes the kinds cyclonus creates in a namespace being
// deleted, waits until its pods are gone, and then removes the
// "kubernetes" finalizer (`namespaces/finalize`), which lets the API
// server delete it.
func (k *Kubelet) finalizeNamespace(ctx context.Context, ns *corev1.Namespace) error {
	name := ns.Name
	zero := int64(0)
	all := metav1.ListOptions{}
	c := k.client
	if err := c.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, all); err != nil {
		return fmt.Errorf("namespace %s: delete pods: %w", name, err)
	}
	for kind, del := range map[string]func() error{
		"services": func() error {
			svcs, err := c.CoreV1().Services(name).List(ctx, all)
			if err != nil {
				return err
			}
			for _, s := range svcs.Items { // services have no DELETE collection
				if err := c.CoreV1().Services(name).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					return err
				}
			}
			return nil
		},
		"networkpolicies": func() error {
			return c.NetworkingV1().NetworkPolicies(name).DeleteCollection(ctx, metav1.DeleteOptions{}, all)
		},
		"serviceaccounts": func() error {
			return c.CoreV1().ServiceAccounts(name).DeleteCollection(ctx, metav1.DeleteOptions{}, all)
		},
		"configmaps": func() error { return c.CoreV1().ConfigMaps(name).DeleteCollection(ctx, metav1.DeleteOptions{}, all) },
	} {
		if err := del(); err != nil {
			return fmt.Errorf("namespace %s: delete %s: %w", name, kind, err)
		}
	}
	// The pods must be gone, and torn down here, before the namespace is.
	left, err := c.CoreV1().Pods(name).List(ctx, all)
	if err != nil {
		return fmt.Errorf("namespace %s: list pods: %w", name, err)
	}
	if len(left.Items) > 0 {
		return fmt.Errorf("namespace %s: %d pods left", name, len(left.Items))
	}
	k.mu.Lock()
	var keys []string
	for key := range k.running {
		if strings.HasPrefix(key, name+"/") {
			keys = append(keys, key)
		}
	}
	k.mu.Unlock()
	for _, key := range keys {
		if err := k.teardown(ctx, key, ""); err != nil {
			return err
		}
	}
	if !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		return nil
	}
	fin := ns.DeepCopy()
	fin.Spec.Finalizers = slices.DeleteFunc(fin.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
	if _, err := c.CoreV1().Namespaces().Finalize(ctx, fin, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("finalize namespace %s: %w", name, err)
	}
	k.log.Debug("kubelet: finalized namespace", "namespace", name)
	return nil
}

// Lookup returns the sandbox of the running pod namespace/name.
func (k *Kubelet) Lookup(namespace, name string) (Sandbox, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.running[namespace+"/"+name]
	if r == nil {
		return Sandbox{}, false
	}
	return r.sandbox, true
}
