// Package etcdstore keeps leases in etcd v3 with flannel's key layout: the
// network config at <prefix>/config and one key per lease at
// <prefix>/subnets/<a.b.c.d>-<len>, attached to an etcd lease with a TTL.
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// DefaultPrefix is flannel's default etcd prefix.
const DefaultPrefix = "/coreos.com/network"

// Options say how to reach etcd.
type Options struct {
	Endpoints []string
	Prefix    string
	CAFile    string
	CertFile  string
	KeyFile   string
	Username  string
	Password  string // never logged
}

// Store is a lease.Store on etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
}

var _ lease.Store = (*Store)(nil)

// New connects to etcd. It does not block on the connection; the first call
// that needs etcd reports a failure.
func New(o Options, log *slog.Logger) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints; set --etcd-endpoints")
	}
	cfg := clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: 5 * time.Second,
		Username:    o.Username,
		Password:    o.Password,
		Logger:      nil,
	}
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" {
		info := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: load TLS client config: %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: connect to %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	return NewFromClient(cli, o.Prefix, log), nil
}

// NewFromClient wraps an existing client.
func NewFromClient(cli *clientv3.Client, prefix string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	return &Store{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), log: log}
}

// Close closes the client.
func (s *Store) Close() error { return s.cli.Close() }

// ConfigKey is the etcd key of the network config.
func (s *Store) ConfigKey() string  { return s.prefix + "/config" }
func (s *Store) subnetsKey() string { return s.prefix + "/subnets/" }

// LeaseKey is the etcd key of a lease.
func (s *Store) LeaseKey(l lease.Lease) string { return s.subnetsKey() + l.Key() }

// Config implements lease.Store.
func (s *Store) Config(ctx context.Context) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.ConfigKey())
	if err != nil {
		return nil, fmt.Errorf("etcd: get %s: %w", s.ConfigKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcd: %s is empty: %w; write one with 'weft store init --network 10.244.0.0/16 --backend vxlan'", s.ConfigKey(), lease.ErrNoConfig)
	}
	return resp.Kvs[0].Value, nil
}

// PutConfig stores the network config document.
func (s *Store) PutConfig(ctx context.Context, doc []byte) error {
	if _, err := s.cli.Put(ctx, s.ConfigKey(), string(doc)); err != nil {
		return fmt.Errorf("etcd: put %s: %w", s.ConfigKey(), err)
	}
	return nil
}

// List implements lease.Store. Keys or values that do not decode are
// skipped with a warning: one bad record must not stop the fabric.
func (s *Store) List(ctx context.Context) ([]lease.Lease, error) {
	ls, _, err := s.list(ctx)
	return ls, err
}

type record struct {
	modRev int64
}

func (s *Store) list(ctx context.Context) ([]lease.Lease, map[string]record, error) {
	resp, err := s.cli.Get(ctx, s.subnetsKey(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: list %s: %w", s.subnetsKey(), err)
	}
	out := make([]lease.Lease, 0, len(resp.Kvs))
	recs := make(map[string]record, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := strings.TrimPrefix(string(kv.Key), s.subnetsKey())
		v4, v6, err := lease.ParseKey(key)
		if err != nil {
			s.log.Warn("skipping lease with a bad key", "key", string(kv.Key), "err", err)
			continue
		}
		attrs, err := lease.ParseValue(kv.Value)
		if err != nil {
			s.log.Warn("skipping lease with a bad value", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, StoreID: kv.Lease})
		recs[key] = record{modRev: kv.ModRevision}
	}
	return out, recs, nil
}

// Acquire implements lease.Store.
func (s *Store) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	doc, err := s.Config(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	cfg, err := config.Parse(doc)
	if err != nil {
		return lease.Lease{}, err
	}
	value, err := req.Attrs.MarshalJSON()
	if err != nil {
		return lease.Lease{}, fmt.Errorf("encode lease attributes: %w", err)
	}
	for attempt := 0; attempt < 10; attempt++ {
		leases, recs, err := s.list(ctx)
		if err != nil {
			return lease.Lease{}, err
		}
		held, v4, v6, err := lease.Choose(cfg, leases, req, nil)
		if err != nil {
			return lease.Lease{}, err
		}
		l := lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: req.Attrs}
		key := s.subnetsKey() + l.Key()
		var cmp clientv3.Cmp
		if held != nil {
			// Our own lease: overwrite it only if nobody changed it since we read it.
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", recs[l.Key()].modRev)
		} else {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		var opts []clientv3.OpOption
		if held != nil && held.Reservation() {
			// A reservation stays permanent: keep it without TTL.
		} else {
			g, err := s.cli.Grant(ctx, ttlSeconds(req.TTL))
			if err != nil {
				return lease.Lease{}, fmt.Errorf("etcd: grant lease for %s: %w", key, err)
			}
			opts = append(opts, clientv3.WithLease(g.ID))
			l.StoreID = int64(g.ID)
			l.Expiration = time.Now().Add(time.Duration(g.TTL) * time.Second)
		}
		resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(value), opts...)).Commit()
		if err != nil {
			return lease.Lease{}, fmt.Errorf("etcd: create %s: %w", key, err)
		}
		if resp.Succeeded {
			if held != nil && held.StoreID != 0 && held.StoreID != l.StoreID {
				// The key moved to the new etcd lease; drop the old one.
				if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(held.StoreID)); err != nil {
					s.log.Debug("revoke old etcd lease", "id", held.StoreID, "err", err)
				}
			}
			return l, nil
		}
		if l.StoreID != 0 {
			_, _ = s.cli.Revoke(ctx, clientv3.LeaseID(l.StoreID))
		}
		s.log.Info("lost a race for a subnet, trying again", "subnet", l.Key())
	}
	return lease.Lease{}, fmt.Errorf("etcd: acquire lease: lost the race for a subnet 10 times in a row")
}

// Renew implements lease.Store: it refreshes the etcd lease's TTL.
func (s *Store) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if l.Reservation() {
		return l, nil
	}
	resp, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(l.StoreID))
	if err != nil {
		return l, fmt.Errorf("etcd: renew lease %s: %w", l.Key(), err)
	}
	l.Expiration = time.Now().Add(time.Duration(resp.TTL) * time.Second)
	return l, nil
}

// Delete removes a lease key (used to evict a node).
func (s *Store) Delete(ctx context.Context, key string) (bool, error) {
	resp, err := s.cli.Delete(ctx, s.subnetsKey()+key)
	if err != nil {
		return false, fmt.Errorf("etcd: delete %s: %w", s.subnetsKey()+key, err)
	}
	return resp.Deleted > 0, nil
}

// Reserve writes a permanent lease without TTL (a reservation).
func (s *Store) Reserve(ctx context.Context, l lease.Lease) error {
	value, err := l.Attrs.MarshalJSON()
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.LeaseKey(l), string(value)); err != nil {
		return fmt.Errorf("etcd: put %s: %w", s.LeaseKey(l), err)
	}
	return nil
}

// Watch implements lease.Store. It signals a change as soon as the watch
// is live and again after re-establishing it after an error, since events
// may have been missed in between.
func (s *Store) Watch(ctx context.Context, sink func(lease.Event)) error {
	changed := func() { // transitional: every change relists (replaced by a resumable watch)
		ls, err := s.List(ctx)
		if err == nil {
			sink(lease.Event{Reset: true, Cause: lease.CauseStart, Leases: lease.Records(ls)})
		}
	}
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range s.cli.Watch(wctx, s.subnetsKey(), clientv3.WithPrefix(), clientv3.WithCreatedNotify()) {
			if err := resp.Err(); err != nil {
				s.log.Warn("etcd watch interrupted", "err", err)
				break
			}
			// Once the watch is live, a change is signalled: a List made
			// before it could have missed a lease created in between.
			if resp.Created || len(resp.Events) > 0 {
				changed()
			}
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		changed()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func ttlSeconds(d time.Duration) int64 {
	if d <= 0 {
		d = 24 * time.Hour
	}
	s := int64(d / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
