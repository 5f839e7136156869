package etcdflag

import (
	"flag"
	"io"
	"slices"
	"testing"

	"github.com/weftnet/weft/internal/lease/etcdstore"
)

func TestOptions(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f Flags
	f.Register(fs)
	if err := fs.Parse([]string{"--etcd-endpoints", "https://a:2379,https://b:2379", "--etcd-cafile", "ca.pem",
		"--etcd-certfile", "c.pem", "--etcd-keyfile", "k.pem", "--etcd-username", "u", "--etcd-password", "p"}); err != nil {
		t.Fatal(err)
	}
	o := f.Options()
	if !slices.Equal(o.Endpoints, []string{"https://a:2379", "https://b:2379"}) || o.Prefix != etcdstore.DefaultPrefix ||
		o.CAFile != "ca.pem" || o.CertFile != "c.pem" || o.KeyFile != "k.pem" || o.Username != "u" || o.Password != "p" {
		t.Errorf("options %+v", o)
	}
}
