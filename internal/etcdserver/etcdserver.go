// Package etcdserver runs weft's embedded single-member etcd (`weft store
// serve`, the lab's store, the Kubernetes-mode test harness). It is apart
// from the client (internal/lease/etcdstore) so that the node agent, which
// only needs the client, does not link etcd's server, raft and bbolt.
package etcdserver

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// Options configure the embedded etcd server.
type Options struct {
	DataDir    string
	ClientURLs []string // e.g. http://192.0.2.2:2379
	PeerURL    string   // default http://127.0.0.1:2380
	Name       string
	LogLevel   string // etcd's zap level; default "error"
	// TLS for clients: with CertFile and KeyFile set the client URLs must be
	// https; with ClientCAFile set, clients must present a certificate
	// signed by it.
	CertFile, KeyFile, ClientCAFile string
	// BcryptCost is the cost of hashing users' passwords (etcd's
	// --bcrypt-cost); 0 is etcd's default, 10. Tests lower it to 4, the
	// least bcrypt takes: at 10 each hash costs seconds under the race
	// detector on a busy machine.
	BcryptCost uint
}

// Server is a running embedded etcd.
type Server struct {
	e *embed.Etcd
}

// Start starts a single-member etcd and waits until it serves.
func Start(ctx context.Context, o Options) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Dir = o.DataDir
	if o.BcryptCost > 0 {
		cfg.BcryptCost = o.BcryptCost
	}
	cfg.Name = "weft"
	if o.Name != "" {
		cfg.Name = o.Name
	}
	cfg.LogLevel = "error"
	if o.LogLevel != "" {
		cfg.LogLevel = o.LogLevel
	}
	var urls []url.URL
	for _, s := range o.ClientURLs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("store: client URL %q: %w", s, err)
		}
		urls = append(urls, *u)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("store: no client URL to listen on")
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = urls, urls
	if o.CertFile != "" || o.KeyFile != "" {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile,
			TrustedCAFile: o.ClientCAFile, ClientCertAuth: o.ClientCAFile != ""}
	}
	peer := o.PeerURL
	if peer == "" {
		peer = "http://127.0.0.1:2380"
	}
	pu, err := url.Parse(peer)
	if err != nil {
		return nil, fmt.Errorf("store: peer URL %q: %w", peer, err)
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: start embedded etcd in %s: %w", o.DataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Server{e: e}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd failed: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd not ready after 60s")
	}
}

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.e.Err() }

// Close stops the server.
func (s *Server) Close() { s.e.Close() }
