// Package etcdflag holds the etcd client flags that the node agent and
// `weft store` share, with flannel's names.
package etcdflag

import (
	"flag"
	"strings"

	"github.com/weftnet/weft/internal/lease/etcdstore"
)

// Flags are the etcd client's flags.
type Flags struct {
	Endpoints, Prefix, CAFile, CertFile, KeyFile, Username, Password string
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "comma-separated etcd endpoints")
	fs.StringVar(&f.Prefix, "etcd-prefix", etcdstore.DefaultPrefix, "etcd prefix of the config and leases")
	fs.StringVar(&f.CAFile, "etcd-cafile", "", "CA file to verify etcd's certificate")
	fs.StringVar(&f.CertFile, "etcd-certfile", "", "client certificate for etcd")
	fs.StringVar(&f.KeyFile, "etcd-keyfile", "", "client key for etcd")
	fs.StringVar(&f.Username, "etcd-username", "", "etcd user name")
	fs.StringVar(&f.Password, "etcd-password", "", "etcd password (never logged)")
}

// Options are the store's options from the parsed flags.
func (f *Flags) Options() etcdstore.Options {
	return etcdstore.Options{
		Endpoints: strings.Split(f.Endpoints, ","), Prefix: f.Prefix,
		CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile,
		Username: f.Username, Password: f.Password,
	}
}
