package pod

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/internal/netns"
)

// Serve answers on every TCP and UDP port of ports, on all addresses of
// the network namespace it runs in (`weft lab serve`, started inside a
// pod): a TCP connection gets answer and a newline, then is closed; a UDP
// datagram gets answer and a newline back. SCTP ports are skipped. It
// returns when ctx ends, or when a port cannot be bound.
func Serve(ctx context.Context, answer string, ports []Port) error {
	reply := []byte(answer + "\n")
	g, ctx := errgroup.WithContext(ctx)
	var lc net.ListenConfig
	for _, p := range ports {
		addr := ":" + strconv.Itoa(int(p.Port))
		switch p.Protocol {
		case TCP:
			ln, err := lc.Listen(ctx, "tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", p, err)
			}
			g.Go(func() error { <-ctx.Done(); return ln.Close() })
			g.Go(func() error { return serveTCP(ctx, ln, reply) })
		case UDP:
			pc, err := lc.ListenPacket(ctx, "udp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", p, err)
			}
			g.Go(func() error { <-ctx.Done(); return pc.Close() })
			g.Go(func() error { return serveUDP(ctx, pc, reply) })
		}
	}
	return g.Wait()
}

func serveTCP(ctx context.Context, ln net.Listener, reply []byte) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(reply)
		}()
	}
}

func serveUDP(ctx context.Context, pc net.PacketConn, reply []byte) error {
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read on udp %s: %w", pc.LocalAddr(), err)
		}
		_, _ = pc.WriteTo(reply, from)
	}
}

// Ask connects from network namespace ns to dst over protocol (TCP or
// UDP) and returns what the server there answers, the way Serve answers:
// over TCP the first line; over UDP the reply to one datagram. timeout
// bounds the whole exchange; a denied connection times out or is refused.
func Ask(ns, protocol string, dst netip.AddrPort, timeout time.Duration) (string, error) {
	network := map[string]string{TCP: "tcp", UDP: "udp"}[protocol]
	if network == "" {
		return "", fmt.Errorf("ask %s over %s: only TCP and UDP", dst, protocol)
	}
	deadline := time.Now().Add(timeout)
	var c net.Conn
	err := netns.Do(ns, func() error {
		var err error
		c, err = (&net.Dialer{Deadline: deadline}).Dial(network, dst.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	if network == "udp" {
		if _, err := c.Write([]byte("hostname")); err != nil {
			return "", err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s/%s: %w", dst, protocol, err)
	}
	return strings.TrimSpace(line), nil
}
