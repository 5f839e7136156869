package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mattfenwick/cyclonus/pkg/kube"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/netns"
)

func TestMain(m *testing.M) {
	// lab.AddPod starts CNI plugins and pod processes by re-executing
	// this binary inside the pod's namespace.
	netns.HandleExec()
	flag.Parse()
	guardTimeout()
	code := m.Run()
	if dir := weft.dir; dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// TestCyclonusCI runs the CI subset of cyclonus's cases (CITags) against a
// fresh 3-node lab.
func TestCyclonusCI(t *testing.T) {
	runOnLab(t, CITags)
}

// TestCyclonusFull runs every case cyclonus generates except SCTP:
//
//	cd tools/cyclonus && WEFT_CYCLONUS_FULL=1 go test -run TestCyclonusFull -v -timeout 180m ./harness
//
// with WEFT_KUBE_APISERVER and WEFT_AGNHOST set (test.sh builds both).
func TestCyclonusFull(t *testing.T) {
	if os.Getenv("WEFT_CYCLONUS_FULL") != "1" {
		t.Skip("the full run takes long: set WEFT_CYCLONUS_FULL=1")
	}
	runOnLab(t, nil)
}

// runOnLab brings up a lab (3 nodes, --store kube, the backend in
// WEFT_CYCLONUS_BACKEND, vxlan by default), runs the kubelet on it and
// cyclonus's cases with tags include (WEFT_CYCLONUS_INCLUDE, comma
// separated, overrides them), and takes it all down at the end.
func runOnLab(t *testing.T, include []string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the lab creates network namespaces")
	}
	api := binary(t, "WEFT_KUBE_APISERVER", "kube-apiserver")
	agnhost := binary(t, "WEFT_AGNHOST", "agnhost")
	if v := os.Getenv("WEFT_CYCLONUS_INCLUDE"); v != "" {
		include = strings.Split(v, ",")
	}
	backend := os.Getenv("WEFT_CYCLONUS_BACKEND")
	if backend == "" {
		backend = "vxlan"
	}
	name := upLab(t, "--store", "kube", "--kube-apiserver", api, "--nodes", "3", "--pods-per-node", "0", "--backend", backend)

	cfg, err := lab.KubeConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = 200, 400, "weft-cyclonus"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := lab.NodeNames(name)
	if err != nil {
		t.Fatal(err)
	}
	kl, err := NewKubelet(KubeletConfig{Client: cs, Runtime: LabRuntime{Lab: name}, Agnhost: agnhost, Nodes: nodes,
		LogDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan error, 1), make(chan struct{})
	go func() { done <- kl.Run(ctx, ready) }()
	t.Cleanup(func() { // runs before the lab goes down
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kubelet: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("kubelet: %v", err)
	}

	k := &Kubernetes{Kubernetes: &kube.Kubernetes{ClientSet: cs, RestConfig: cfg}, Pods: kl, Agnhost: agnhost, Limit: 30 * time.Second}
	sum, err := Run(ctx, k, Config{Include: include, PerturbationWait: time.Second, ProbeTimeout: time.Second, Retries: 1, Out: os.Stdout})
	fmt.Println(sum)
	t.Log(sum)
	if len(sum.FailedCases) > 0 {
		t.Errorf("failed cases:\n  %s", strings.Join(sum.FailedCases, "\n  "))
	}
	if err != nil {
		t.Fatal(err)
	}
	checkSpread(t, cs)
}

// checkSpread fails the test unless every namespace of cyclonus's has its
// pods on at least two nodes and two of them on one node.
func checkSpread(t *testing.T, cs kubernetes.Interface) {
	for _, ns := range Namespaces {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		on := map[string]int{}
		for _, p := range pods.Items {
			on[p.Spec.NodeName]++
		}
		pair := false
		for _, c := range on {
			pair = pair || c >= 2
		}
		if len(on) < 2 || !pair {
			t.Errorf("namespace %s: pods per node %v: want a same-node pair and at least two nodes", ns, on)
		}
	}
}

// binary is the program named by env, skipping the test when it is unset
// (failing it in CI, where test.sh builds them all).
func binary(t *testing.T, env, what string) string {
	p := os.Getenv(env)
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set in CI; test.sh builds %s from tools/kube", env, what)
		}
		t.Skipf("no %s (set %s; tools/kube/build.sh builds it)", what, env)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	return p
}

// weft is the weft binary of this run, built once from the repository
// (the lab starts weft-agent and weft-cni from beside it).
var weft struct {
	once sync.Once
	dir  string
	err  error
}

func weftBinary(t *testing.T) string {
	weft.once.Do(func() {
		weft.dir, weft.err = os.MkdirTemp("", "weft-cyclonus-")
		if weft.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", weft.dir+"/", "./cmd/...")
		cmd.Dir = "../../.." // the repository, from tools/cyclonus/harness
		if out, err := cmd.CombinedOutput(); err != nil {
			weft.err = fmt.Errorf("go build ./cmd/...: %w\n%s", err, out)
		}
	})
	if weft.err != nil {
		t.Fatal(weft.err)
	}
	return filepath.Join(weft.dir, "weft")
}

// labs are the labs this run brought up, for guardTimeout.
var labs struct {
	sync.Mutex
	names []string
}

// upLab brings up a uniquely named lab with args and takes it down when
// the test ends.
func upLab(t *testing.T, args ...string) string {
	t0 := time.Now()
	bin := weftBinary(t)
	t.Logf("weft built in %s", time.Since(t0).Round(time.Second))
	t0 = time.Now()
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "cy" + hex.EncodeToString(b[:])
	labs.Lock()
	labs.names = append(labs.names, name)
	labs.Unlock()
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "lab", "down", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		ents, _ := os.ReadDir(netns.Dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name+"-") {
				t.Errorf("namespace %s left behind", e.Name())
			}
		}
	})
	out, err := exec.Command(bin, append([]string{"lab", "up", "--name", name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	t.Logf("lab %s up in %s: %s", name, time.Since(t0).Round(time.Second), strings.Join(args, " "))
	return name
}

// guardTimeout takes this run's labs down and exits shortly before go
// test's -timeout would end the binary with a panic that runs no cleanup
// (as e2e does).
func guardTimeout() {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	d, ok := f.Value.(flag.Getter).Get().(time.Duration)
	if !ok || d <= 0 {
		return
	}
	time.AfterFunc(d-min(d/10, time.Minute), func() {
		labs.Lock()
		defer labs.Unlock()
		fmt.Printf("cyclonus: the test timeout (%s) is near: removing this run's labs and stopping\n", d)
		for _, name := range labs.names {
			out, err := exec.Command(filepath.Join(weft.dir, "weft"), "lab", "down", "--name", name).CombinedOutput()
			fmt.Printf("cyclonus: lab down --name %s: %v %s", name, err, out)
		}
		os.Exit(1)
	})
}
