package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/internal/netns"
)

// TestProbeInNetns runs cyclonus's probe command through
// ExecuteRemoteCommand in a fresh network namespace against agnhost
// serve-hostname servers started the way the kubelet starts them.
func TestProbeInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	agnhost := binary(t, "WEFT_AGNHOST", "agnhost")
	var b [3]byte
	_, _ = rand.Read(b[:])
	ns := "cyp" + hex.EncodeToString(b[:])
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(ns); err != nil {
			t.Error(err)
		}
	})
	var kills []func()
	for _, proto := range []string{"--tcp", "--udp"} {
		kill, err := startKillable(ns, []string{agnhost, "serve-hostname", proto, "--http=false", "--port", "80"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(kill)
		kills = append(kills, kill)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		if err := serving(ctx, ns, p, 80); err != nil {
			t.Fatal(err)
		}
	}
	kl, err := NewKubelet(KubeletConfig{Nodes: []string{"n1"}})
	if err != nil {
		t.Fatal(err)
	}
	kl.running["x/a"] = &runningPod{sandbox: Sandbox{NetNS: ns}}
	k := &Kubernetes{Pods: kl, Agnhost: agnhost, Limit: 10 * time.Second}
	probe := func(port, proto string) (string, error, error) {
		_, stderr, cmdErr, err := k.ExecuteRemoteCommand("x", "a", "cont-80-tcp",
			[]string{"/agnhost", "connect", "127.0.0.1:" + port, "--timeout=1s", "--protocol=" + proto})
		return stderr, cmdErr, err
	}
	for _, proto := range []string{"tcp", "udp"} {
		if stderr, cmdErr, err := probe("80", proto); cmdErr != nil || err != nil {
			t.Errorf("%s to a server: %v %v %s", proto, cmdErr, err, stderr)
		}
		if stderr, cmdErr, err := probe("81", proto); cmdErr == nil || err != nil || !strings.Contains(stderr, "REFUSED") {
			t.Errorf("%s to no server: command error %v, error %v, stderr %q; want REFUSED", proto, cmdErr, err, stderr)
		}
	}
	if _, _, _, err := k.ExecuteRemoteCommand("x", "b", "c", []string{"/agnhost", "connect", "127.0.0.1:80"}); err == nil {
		t.Error("a probe from a pod that does not run did not fail to start")
	}
	if _, _, _, err := k.ExecuteRemoteCommand("x", "a", "c", []string{"/bin/sh", "-c", "true"}); err == nil {
		t.Error("a command other than agnhost ran")
	}
	for _, kill := range kills {
		kill()
	}
	if stderr, cmdErr, err := probe("80", "tcp"); cmdErr == nil || err != nil {
		t.Errorf("tcp after the server was killed: %v %v %s", cmdErr, err, stderr)
	}
}
