// Package kubeapitest starts a real kube-apiserver on loopback for tests:
// an embedded etcd in the test process and the binary named by
// WEFT_KUBE_APISERVER (test.sh builds it from tools/kube).
package kubeapitest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/etcdserver"
	"github.com/weftnet/weft/internal/kubeapi"
	"github.com/weftnet/weft/internal/kubeclient"
)

// Server is a running API server.
type Server struct {
	URL   string
	Files *kubeapi.Files
	Admin kubernetes.Interface // client-go's clientset, for tests
	// Client is weft's own client, with the admin token.
	Client *kubeclient.Client
}

// Binary returns the kube-apiserver to run, skipping the test when there is
// none, and failing it in CI, where test.sh always builds one.
func Binary(t testing.TB) string {
	p := os.Getenv("WEFT_KUBE_APISERVER")
	if p == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("WEFT_KUBE_APISERVER is not set in CI; test.sh builds kube-apiserver from tools/kube")
		}
		t.Skip("no kube-apiserver (set WEFT_KUBE_APISERVER; test.sh builds it)")
	}
	return p
}

// Start runs etcd and kube-apiserver for the test and stops both at its end.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	lo := netip.MustParseAddr("127.0.0.1")
	dir := t.TempDir()
	ports := make([]int, 3)
	for i := range ports {
		p, err := kubeapi.FreePort(lo)
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	ctx := context.Background()
	etcd, err := etcdserver.Start(ctx, etcdserver.Options{DataDir: filepath.Join(dir, "etcd"),
		ClientURLs: []string{etcdURL}, PeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1])})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	files, err := kubeapi.Prepare(filepath.Join(dir, "pki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "kube-apiserver.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, files.Args(etcdURL, lo, ports[2])...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	url := kubeapi.URL(lo, ports[2])
	alive := func() error {
		select {
		case err := <-exited:
			exited <- err
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("kube-apiserver exited (%v): %s", err, tail(string(b), 3000))
		default:
			return nil
		}
	}
	if err := files.WaitReady(ctx, url, nil, 90*time.Second, alive); err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(files.Config(url, files.AdminToken, nil))
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubeclient.New(files.Config(url, files.AdminToken, nil))
	if err != nil {
		t.Fatal(err)
	}
	return &Server{URL: url, Files: files, Admin: admin, Client: client}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
