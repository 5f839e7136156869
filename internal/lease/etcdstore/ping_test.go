package etcdstore

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/etcdserver"
	"github.com/weftnet/weft/internal/etcdserver/etcdservertest"
)

// Ping answers while etcd runs and, once it stops, fails within its
// context naming the endpoint (the agent's /readyz shows it).
func TestPing(t *testing.T) {
	o := etcdservertest.Options(t)
	srv, err := etcdserver.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var stop sync.Once
	t.Cleanup(func() { stop.Do(srv.Close) })
	s, err := New(Options{Endpoints: o.ClientURLs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with etcd up: %v", err)
	}
	stop.Do(srv.Close)
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = s.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), o.ClientURLs[0]) {
		t.Fatalf("Ping with etcd down: %v, want an error naming %s", err, o.ClientURLs[0])
	}
}
