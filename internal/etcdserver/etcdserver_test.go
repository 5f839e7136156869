package etcdserver_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/etcdserver"
	"github.com/weftnet/weft/internal/etcdserver/etcdservertest"
)

// TestServes: the server answers a client on its client URL and keeps the
// data in its data directory across a restart.
func TestServes(t *testing.T) {
	o := etcdservertest.Options(t)
	url := o.ClientURLs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round, op := range []string{"put", "get"} {
		srv, err := etcdserver.Start(ctx, o)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
		if err != nil {
			srv.Close()
			t.Fatal(err)
		}
		switch op {
		case "put":
			_, err = cli.Put(ctx, "/coreos.com/network/config", "{}")
		case "get":
			var r *clientv3.GetResponse
			if r, err = cli.Get(ctx, "/coreos.com/network/config"); err == nil && (len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "{}") {
				err = fmt.Errorf("got %v after a restart, want the value put before", r.Kvs)
			}
		}
		cli.Close()
		srv.Close()
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
}

func TestBadOptions(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		o    etcdserver.Options
		want string
	}{
		{etcdserver.Options{DataDir: t.TempDir()}, "no client URL"},
		{etcdserver.Options{DataDir: t.TempDir(), ClientURLs: []string{"http://[::1"}}, "client URL"},
		{etcdserver.Options{DataDir: t.TempDir(), ClientURLs: []string{"http://127.0.0.1:0"}, PeerURL: "http://[::1"}, "peer URL"},
	} {
		if _, err := etcdserver.Start(ctx, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v) = %v, want an error about %s", tc.o, err, tc.want)
		}
	}
}
