package source

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
	"github.com/weftnet/weft/internal/lease/kubestore"
)

// memoryFigures is what the watching process measures of itself.
type memoryFigures struct {
	Pods                int
	RSSBefore, RSSAfter int64 // VmRSS, bytes
	HeapBefore, Heap    uint64
	Took                time.Duration
}

// TestMemory5000Pods measures what watching 5000 Pod objects costs: a
// separate process (this test binary, TestMemoryWatcher) reads its RSS and
// live heap, starts a Source through the agent's client (protobuf, as
// weft-agent), waits for the first list, collects garbage and reads them
// again. The pods look like real ones: labels, annotations, two containers
// with env, resources and ports, managed fields. It creates 5000 pods
// (about a minute), so it runs only with WEFT_POLICY_MEMORY=1, and fails
// when RSS grows by more than the target, 30 MiB.
func TestMemory5000Pods(t *testing.T) {
	if os.Getenv("WEFT_POLICY_MEMORY") == "" {
		t.Skip("set WEFT_POLICY_MEMORY=1 to create 5000 pods and measure the watcher's memory")
	}
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("WEFT_POLICY_MEMORY_PODS")); err == nil && v > 0 {
		n = v
	}
	srv := kubeapitest.Start(t)
	c := srv.Admin
	ctx := context.Background()
	const spaces = 20
	for i := range spaces {
		mkNamespace(t, c, fmt.Sprintf("team-%d", i), map[string]string{"team": strconv.Itoa(i), "env": "prod"})
	}
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := mkRealPod(ctx, c, i, spaces); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("created %d pods in %s", n, time.Since(start).Round(time.Second))

	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := srv.Files.WriteKubeconfig(kc, srv.URL, srv.Files.AdminToken); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryWatcher$", "-test.v")
	cmd.Env = append(os.Environ(), "WEFT_MEMORY_WATCHER="+kc, "WEFT_MEMORY_PODS="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("watcher: %v\n%s", err, out)
	}
	var f memoryFigures
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	found := false
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "FIGURES "); ok {
			found = json.Unmarshal([]byte(v), &f) == nil
		}
	}
	if !found {
		t.Fatalf("no figures from the watcher:\n%s", out)
	}
	const mib = 1 << 20
	growth := float64(f.RSSAfter-f.RSSBefore) / mib
	t.Logf("watching %d pods: RSS %.1f -> %.1f MiB (+%.1f MiB), live heap %.1f -> %.1f MiB (+%.1f MiB, %.0f bytes per pod), first list in %s",
		f.Pods, float64(f.RSSBefore)/mib, float64(f.RSSAfter)/mib, growth,
		float64(f.HeapBefore)/mib, float64(f.Heap)/mib, float64(f.Heap-f.HeapBefore)/mib, float64(f.Heap-f.HeapBefore)/float64(f.Pods), f.Took.Round(time.Millisecond))
	if f.Pods < n {
		t.Errorf("the watcher saw %d pods, want %d", f.Pods, n)
	}
	if growth > 30 {
		t.Errorf("RSS grew by %.1f MiB watching %d pods; the target is at most 30 MiB", growth, n)
	}
}

// TestMemoryWatcher is the watching process of TestMemory5000Pods.
func TestMemoryWatcher(t *testing.T) {
	kc := os.Getenv("WEFT_MEMORY_WATCHER")
	if kc == "" {
		t.Skip("run by TestMemory5000Pods")
	}
	want, _ := strconv.Atoi(os.Getenv("WEFT_MEMORY_PODS"))
	debug.SetGCPercent(50) // as weft-agent
	client, err := kubestore.Client("", kc, "weft/memory-test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	var f memoryFigures
	f.RSSBefore, f.HeapBefore = measure(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	start := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	if err := s.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	f.Took = time.Since(start)
	time.Sleep(2 * time.Second) // let the watches settle
	f.Pods = len(s.Snapshot().Pods)
	f.RSSAfter, f.Heap = measure(t)
	runtime.KeepAlive(s)
	if f.Pods < want {
		t.Errorf("saw %d pods, want %d", f.Pods, want)
	}
	b, _ := json.Marshal(f)
	fmt.Printf("FIGURES %s\n", b)
}

// measure collects garbage and returns VmRSS and the live heap.
func measure(t *testing.T) (rss int64, heap uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return rss, ms.HeapAlloc
}

// mkRealPod creates pod i with what a real pod carries, and its status.
func mkRealPod(ctx context.Context, c kubernetes.Interface, i, spaces int) error {
	ns := fmt.Sprintf("team-%d", i%spaces)
	app := fmt.Sprintf("app-%d", i%97)
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	env := make([]corev1.EnvVar, 12)
	for j := range env {
		env[j] = corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", j), Value: strings.Repeat("v", 24)}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%08x", app, i*2654435761),
			Labels: map[string]string{"app": app, "tier": []string{"web", "api", "db"}[i%3], "version": "v1.4.2",
				"pod-template-hash": fmt.Sprintf("%08x", i%97*7919)},
			Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
				"checksum/config": strings.Repeat("0123456789abcdef", 4)}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%50),
			Containers: []corev1.Container{
				{Name: "main", Image: "registry.example.com/team/" + app + ":v1.4.2", Env: env, Resources: res,
					Args:           []string{"--listen=:8080", "--metrics=:9090", "--log-level=info"},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}}},
				{Name: "proxy", Image: "registry.example.com/proxy:2.1", Resources: res,
					Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001}}},
			}},
	}
	p, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	ip := netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(2 + i%250)})
	now := metav1.Now()
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}},
		HostIP: "192.0.2.10", StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
		ContainerStatuses: []corev1.ContainerStatus{
			{Name: "main", Ready: true, Image: "registry.example.com/team/" + app + ":v1.4.2", ImageID: "sha256:" + strings.Repeat("ab", 32),
				ContainerID: "containerd://" + strings.Repeat("cd", 32), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
			{Name: "proxy", Ready: true, Image: "registry.example.com/proxy:2.1", ImageID: "sha256:" + strings.Repeat("ef", 32),
				ContainerID: "containerd://" + strings.Repeat("01", 32), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
		}}
	_, err = c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}
