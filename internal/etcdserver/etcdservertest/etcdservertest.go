// Package etcdservertest starts weft's embedded etcd for tests, on free
// loopback ports, stopped and removed when the test ends.
package etcdservertest

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/weftnet/weft/internal/etcdserver"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options returns options for a server on free loopback ports with a data
// directory of t's, and cheap password hashes (BcryptCost 4).
func Options(t testing.TB) etcdserver.Options {
	return etcdserver.Options{
		DataDir:    t.TempDir(),
		ClientURLs: []string{fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))},
		PeerURL:    fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		BcryptCost: 4,
	}
}

// Start starts a server with Options(t) and returns its client URL; it is
// stopped when t ends.
func Start(t testing.TB) string {
	t.Helper()
	o := Options(t)
	srv, err := etcdserver.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return o.ClientURLs[0]
}
