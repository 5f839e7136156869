package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/internal/netns"
)

// startIn starts cmd inside the network namespace name: the process is
// forked from a thread that netns.Do has moved into it, so it inherits the
// namespace (what `ip netns exec NAME cmd` does, without a second exec).
// The process gets SIGKILL if the harness dies.
func startIn(name string, cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return netns.Do(name, cmd.Start)
}

// runIn runs argv inside the network namespace name and returns its
// output; runErr is the command's failure (a non-zero exit), err a failure
// to start it. The command is killed when ctx ends.
func runIn(ctx context.Context, name string, argv []string) (stdout, stderr string, runErr, err error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := startIn(name, cmd); err != nil {
		return "", "", nil, fmt.Errorf("start %s in %s: %w", argv[0], name, err)
	}
	runErr = cmd.Wait()
	return out.String(), errOut.String(), runErr, nil
}

// startKillable starts argv inside netns name and returns the function
// that kills it (SIGKILL, by the PID it started) and reaps it.
func startKillable(name string, argv []string, log io.Writer) (func(), error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := startIn(name, cmd); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", argv[0], name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-done
		})
	}, nil
}

// serving returns nil once something answers on port/proto inside netns
// name: a TCP connection accepted, or a UDP datagram answered, on
// loopback (which no policy governs). It retries until ctx ends.
func serving(ctx context.Context, name string, proto corev1.Protocol, port int32) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var last error
	for {
		last = netns.Do(name, func() error { return answers(ctx, proto, addr) })
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/%s in %s: %w (last: %v)", addr, proto, name, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// answers tries once to reach a server on addr: what `agnhost connect`
// would call success.
func answers(ctx context.Context, proto corev1.Protocol, addr string) error {
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	switch proto {
	case corev1.ProtocolTCP:
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	case corev1.ProtocolUDP:
		c, err := d.DialContext(ctx, "udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("hostname\n")); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err == nil && n == 0 {
			err = errors.New("empty answer")
		}
		return err
	default:
		return fmt.Errorf("protocol %s: the harness serves only TCP and UDP", proto)
	}
}
