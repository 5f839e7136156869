// Package etcdstore keeps leases in etcd v3 with flannel's key layout: the
// network config at <prefix>/config and one key per lease at
// <prefix>/subnets/<a.b.c.d>-<len> (dual stack <a.b.c.d>-<len>&<v6>-<len>,
// IPv6-only 0.0.0.0-0&<v6>-<len>), attached to an etcd lease with a TTL.
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
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
	cli       *clientv3.Client
	prefix    string
	endpoints string // as the client has them, comma-separated, for errors and logs
	log       *slog.Logger
}

var _ lease.SubnetChooser = (*Store)(nil)

// New connects to etcd. It does not block on the connection; the first call
// that needs etcd reports a failure, naming the endpoints. An endpoint that
// is not scheme://host:port (http or https) or unix://PATH is refused.
func New(o Options, log *slog.Logger) (*Store, error) {
	eps, err := endpoints(o.Endpoints)
	if err != nil {
		return nil, err
	}
	cfg := clientv3.Config{
		Endpoints:   eps,
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
		return nil, fmt.Errorf("etcd: connect to %s: %w", strings.Join(eps, ","), err)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	return NewFromClient(cli, o.Prefix, log), nil
}

// endpoints checks the endpoints as the user gave them. The etcd client
// would take "127.0.0.1:2379" or "http://etcd" and then fail at every call
// with an error that names neither the endpoint nor the mistake.
func endpoints(eps []string) ([]string, error) {
	var out []string
	for _, ep := range eps {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if why := badEndpoint(ep); why != "" {
			return nil, fmt.Errorf("etcd endpoint %q %s: want scheme://host:port with scheme http or https, or unix://PATH, e.g. http://127.0.0.1:2379", ep, why)
		}
		out = append(out, ep)
	}
	if len(out) == 0 {
		return nil, errors.New("etcd: no endpoints; set --etcd-endpoints, e.g. http://127.0.0.1:2379")
	}
	return out, nil
}

// badEndpoint says what is wrong with an endpoint, or "".
func badEndpoint(ep string) string {
	u, err := url.Parse(ep)
	switch {
	case err != nil || u.Opaque != "":
		return "is not a URL"
	case u.Scheme == "unix" || u.Scheme == "unixs":
		if u.Host+u.Path == "" {
			return "names no socket"
		}
		return ""
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("has scheme %q", u.Scheme)
	case u.Hostname() == "" || u.Port() == "":
		return "has no host:port"
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "has more than scheme://host:port"
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return fmt.Sprintf("has port %q, not 1-65535", u.Port())
	}
	return ""
}

// NewFromClient wraps an existing client.
func NewFromClient(cli *clientv3.Client, prefix string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	return &Store{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), endpoints: strings.Join(cli.Endpoints(), ","), log: log}
}

// Close closes the client.
func (s *Store) Close() error { return s.cli.Close() }

// ConfigKey is the etcd key of the network config.
func (s *Store) ConfigKey() string  { return s.prefix + "/config" }
func (s *Store) subnetsKey() string { return s.prefix + "/subnets/" }

// LeaseKey is the etcd key of a lease.
func (s *Store) LeaseKey(l lease.Lease) string { return s.subnetsKey() + l.Key() }

// fail wraps the error of a request to etcd. It names the endpoints: most
// such errors (a deadline, a refused connection) mean etcd was not reached,
// and the line must say where it was looked for.
func (s *Store) fail(op string, err error) error {
	return fmt.Errorf("etcd at %s: %s: %w", s.endpoints, op, err)
}

// Config implements lease.Store.
func (s *Store) Config(ctx context.Context) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.ConfigKey())
	if err != nil {
		return nil, s.fail("get "+s.ConfigKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcd: %s is empty: %w; write one with 'weft store init --network 10.244.0.0/16 --backend vxlan'", s.ConfigKey(), lease.ErrNoConfig)
	}
	return resp.Kvs[0].Value, nil
}

// PutConfig stores the network config document.
func (s *Store) PutConfig(ctx context.Context, doc []byte) error {
	if _, err := s.cli.Put(ctx, s.ConfigKey(), string(doc)); err != nil {
		return s.fail("put "+s.ConfigKey(), err)
	}
	return nil
}

// List implements lease.Store. Keys or values that do not decode are
// skipped (logged at debug level: the agent reports each bad record once,
// from its watch); one bad record must not stop the fabric.
func (s *Store) List(ctx context.Context) ([]lease.Lease, error) {
	valid, invalid, _, _, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range invalid {
		s.log.Debug("skipping a lease that does not decode", "key", lease.ShortKey(r.Key), "err", r.Err)
	}
	out := make([]lease.Lease, len(valid))
	for i, r := range valid {
		out[i] = r.Lease
	}
	return out, nil
}

// records reads every record under subnets/: those that decode, those
// that do not, the mod revision of each decoded one by key, and the
// revision etcd read them at.
func (s *Store) records(ctx context.Context) (valid, invalid []lease.Record, modRevs map[string]int64, rev int64, err error) {
	resp, err := s.cli.Get(ctx, s.subnetsKey(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, nil, 0, s.fail("list "+s.subnetsKey(), err)
	}
	modRevs = make(map[string]int64, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r := s.decode(kv.Key, kv.Value, kv.Lease, kv.CreateRevision)
		if r.Err != nil {
			invalid = append(invalid, r)
			continue
		}
		valid = append(valid, r)
		modRevs[r.Key] = kv.ModRevision
	}
	return valid, invalid, modRevs, resp.Header.Revision, nil
}

// decode turns a key and value under subnets/ into a record. A record
// that does not decode carries the reason in Err, which never quotes the
// value (lease.ParseValue does not decode one over lease.MaxValueSize).
func (s *Store) decode(key, value []byte, storeID, created int64) lease.Record {
	r := lease.Record{Key: strings.TrimPrefix(string(key), s.subnetsKey())}
	v4, v6, err := lease.ParseKey(r.Key)
	if err != nil {
		r.Err = err
		return r
	}
	attrs, err := lease.ParseValue(value)
	if err != nil {
		r.Err = fmt.Errorf("lease %s: %w", r.Key, err)
		return r
	}
	r.Lease = lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, StoreID: storeID, Created: created}
	return r
}

// ChoosesSubnets implements lease.SubnetChooser.
func (s *Store) ChoosesSubnets() {}

// Acquire implements lease.Store. With req.Reclaim it writes this node's
// record back (reclaim) instead of choosing a subnet.
func (s *Store) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	value, err := req.Attrs.MarshalJSON()
	if err != nil {
		return lease.Lease{}, fmt.Errorf("encode lease attributes: %w", err)
	}
	if req.Reclaim {
		return s.reclaim(ctx, req, string(value))
	}
	doc, err := s.Config(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	cfg, err := config.Parse(doc)
	if err != nil {
		return lease.Lease{}, err
	}
	// One etcd lease serves every attempt; revoked unless a put took it.
	var grant *clientv3.LeaseGrantResponse
	var granted time.Time
	defer func() {
		if grant != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := s.cli.Revoke(rctx, grant.ID); err != nil {
				s.log.Debug("revoke unused etcd lease", "id", grant.ID, "err", err)
			}
		}
	}()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return lease.Lease{}, fmt.Errorf("etcd: acquire lease: %w", err)
			}
		}
		valid, _, modRevs, rev, err := s.records(ctx)
		if err != nil {
			return lease.Lease{}, err
		}
		leases := make([]lease.Lease, len(valid))
		// rawKeys: a lease's key as stored, which may be spelled otherwise
		// than lease.Key writes it (an IPv6 address with leading zeros,
		// written by hand): a delete or a compare must name that one.
		rawKeys := make(map[string]string, len(valid))
		for i, r := range valid {
			leases[i] = r.Lease
			rawKeys[r.Lease.Key()] = r.Key
		}
		c, err := lease.Choose(cfg, leases, req, nil)
		staleCmps, staleOps := s.staleOps(c.Stale, rawKeys, modRevs)
		if errors.Is(err, lease.ErrNoFreeSubnet) && len(c.Stale) > 0 {
			// This node's stale leases fill the network: delete them, as
			// flannel does before it allocates, and look again.
			resp, err := s.cli.Txn(ctx).If(staleCmps...).Then(staleOps...).Commit()
			if err != nil {
				return lease.Lease{}, s.fail("delete stale leases", err)
			}
			if resp.Succeeded {
				s.logStale(c)
			}
			continue
		}
		if err != nil {
			return lease.Lease{}, err
		}
		held := c.Held
		l := lease.Lease{Subnet: c.Subnet, IPv6Subnet: c.IPv6Subnet, Attrs: req.Attrs}
		key := s.subnetsKey() + l.Key()
		var cmps []clientv3.Cmp
		if held != nil {
			// Our own lease, under its key as stored: overwrite it only if
			// nobody changed it since we read it.
			key = s.subnetsKey() + rawKeys[held.Key()]
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", modRevs[rawKeys[held.Key()]]))
			l.Created = held.Created
		} else {
			cmps = append(cmps, s.createCmps(key, rev)...)
		}
		var opts []clientv3.OpOption
		if held != nil && held.Reservation() {
			// A reservation stays permanent: keep it without TTL.
		} else {
			if grant == nil {
				g, err := s.cli.Grant(ctx, ttlSeconds(req.TTL))
				if err != nil {
					return lease.Lease{}, s.fail("grant lease for "+key, err)
				}
				grant, granted = g, time.Now()
			}
			opts = append(opts, clientv3.WithLease(grant.ID))
			l.StoreID = int64(grant.ID)
			l.Expiration = granted.Add(time.Duration(grant.TTL) * time.Second)
		}
		cmps = append(cmps, staleCmps...)
		ops := append([]clientv3.Op{clientv3.OpPut(key, string(value), opts...)}, staleOps...)
		for _, u := range c.Unusable {
			s.log.Warn("this node's reservation is not allowed by the network config; keeping it, and leasing another subnet",
				"key", s.LeaseKey(u))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			// The write may have been applied (a timeout, a lost
			// connection): revoking the etcd lease would delete the key
			// behind the caller's back. Left alone, it expires within
			// its TTL unless the key holds it and the node renews it.
			grant = nil
			return lease.Lease{}, s.fail("create "+key, err)
		}
		if resp.Succeeded {
			if l.StoreID != 0 {
				grant = nil // the key holds it now
			}
			if held == nil {
				l.Created = resp.Header.Revision
			}
			s.logStale(c)
			if held != nil && held.StoreID != 0 && held.StoreID != l.StoreID {
				// The key moved to the new etcd lease; drop the old one.
				if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(held.StoreID)); err != nil {
					s.log.Debug("revoke old etcd lease", "id", held.StoreID, "err", err)
				}
			}
			return l, nil
		}
		s.log.Debug("the leases changed while choosing a subnet; reading them again", "subnet", l.Key(), "attempt", attempt+1)
	}
	return lease.Lease{}, fmt.Errorf("etcd: acquire lease: the leases under %s changed %d times in a row while choosing a subnet", s.subnetsKey(), maxAttempts)
}

// maxAttempts bounds how often Acquire reads the leases again after its
// write lost to another one. A loss means another writer succeeded, so
// agents that start together all get through: each round at least one.
const maxAttempts = 32

// pause waits before attempt (1, 2, ...) of a contended write, for
// backoff(attempt), so that agents that lost together do not read and
// write together again. It returns ctx's error if ctx ends first.
func pause(ctx context.Context, attempt int) error {
	t := time.NewTimer(backoff(attempt, rand.Int64N))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// backoff is the pause before attempt (1, 2, ...): 1ms plus rnd(limit),
// where limit is 10ms doubled per attempt after the first, at most 320ms;
// rnd returns a number in [0, n).
func backoff(attempt int, rnd func(n int64) int64) time.Duration {
	limit := 320 * time.Millisecond
	if attempt <= 6 {
		limit = 10 * time.Millisecond << (attempt - 1)
	}
	return time.Duration(rnd(int64(limit))) + time.Millisecond
}

// createCmps are the conditions of creating key with subnets chosen as
// free in the leases read at revision rev: the key is new, and no record
// under subnets/ was written since (its ModRevision <= rev, over the whole
// prefix; true when the prefix is empty). The key alone would not do: in
// dual stack it names both subnets, and a node that read the same leases
// may have taken one of ours beside another subnet of the other family. A
// deletion is not seen, but it frees subnets and takes none.
func (s *Store) createCmps(key string, rev int64) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.subnetsKey()).WithPrefix(), "<", rev+1),
	}
}

// staleOps delete this node's stale leases (lease.Choice.Stale), as
// flannel deletes a lease of its public IP that the config no longer
// allows; each only if it is still as read, so that a lease someone just
// rewrote is not lost.
func (s *Store) staleOps(stale []lease.Lease, rawKeys map[string]string, modRevs map[string]int64) ([]clientv3.Cmp, []clientv3.Op) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, st := range stale {
		raw := rawKeys[st.Key()]
		k := s.subnetsKey() + raw
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", modRevs[raw]))
		ops = append(ops, clientv3.OpDelete(k))
	}
	return cmps, ops
}

// logStale says which of this node's leases were deleted (c.Stale), and
// why.
func (s *Store) logStale(c lease.Choice) {
	for _, st := range c.Stale {
		if older, ok := c.Overlapping[st.Key()]; ok {
			s.log.Info("deleted a lease of this node that overlaps an older lease", "key", s.LeaseKey(st), "older", s.subnetsKey()+older)
			continue
		}
		s.log.Info("deleted a lease of this node that the network config no longer allows", "key", s.LeaseKey(st))
	}
}

// reclaim writes this node's record (req.Prefer[0], and for dual stack the
// first IPv6 subnet of req.Prefer) back with req.Attrs, whatever it holds
// now: with a new TTL lease, unless req.Reservation (this node's lease was
// a reservation, a key without TTL). The write is a compare-and-swap on the
// record as read; a race with another writer reads it again. A record
// deleted meanwhile is written back only if no other lease overlaps it
// (else the node leases anew, preferring its subnets), and only if no
// lease was written since that was checked.
func (s *Store) reclaim(ctx context.Context, req lease.Request, value string) (lease.Lease, error) {
	l, err := req.Reclaimed()
	if err != nil {
		return lease.Lease{}, fmt.Errorf("%s: %w", "etcd", err)
	}
	key := s.LeaseKey(l)
	for attempt := 0; attempt < 10; attempt++ {
		cur, err := s.cli.Get(ctx, key)
		if err != nil {
			return lease.Lease{}, s.fail("get "+key, err)
		}
		var cmps []clientv3.Cmp
		l.Created, l.StoreID, l.Expiration = 0, 0, time.Time{}
		if len(cur.Kvs) > 0 {
			kv := cur.Kvs[0]
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
			l.Created = kv.CreateRevision
		} else {
			// Deleted meanwhile: written back only if no other lease took
			// one of its subnets; else leased anew, preferring them.
			valid, _, _, rev, err := s.records(ctx)
			if err != nil {
				return lease.Lease{}, err
			}
			for _, r := range valid {
				if r.Lease.Overlaps(l) && !r.Lease.SameSubnets(l) {
					s.log.Warn("this node's deleted lease overlaps a lease made since; leasing subnets anew", "subnet", l.Key(), "other", lease.ShortKey(r.Key))
					req.Reclaim = false
					return s.Acquire(ctx, req)
				}
			}
			cmps = s.createCmps(key, rev)
		}
		var opts []clientv3.OpOption
		if !req.Reservation {
			g, err := s.cli.Grant(ctx, ttlSeconds(req.TTL))
			if err != nil {
				return lease.Lease{}, s.fail("grant lease for "+key, err)
			}
			opts = append(opts, clientv3.WithLease(g.ID))
			l.StoreID = int64(g.ID)
			l.Expiration = time.Now().Add(time.Duration(g.TTL) * time.Second)
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, value, opts...)).Commit()
		if err != nil {
			return lease.Lease{}, s.fail("reclaim "+key, err)
		}
		if resp.Succeeded {
			if l.Created == 0 {
				l.Created = resp.Header.Revision
			}
			return l, nil
		}
		if l.StoreID != 0 {
			_, _ = s.cli.Revoke(ctx, clientv3.LeaseID(l.StoreID))
		}
		s.log.Info("the lease changed while reclaiming it, trying again", "subnet", l.Key())
	}
	return lease.Lease{}, fmt.Errorf("etcd: reclaim %s: it changed under us 10 times in a row", key)
}

// Renew implements lease.Store: it refreshes the etcd lease's TTL.
func (s *Store) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if l.Reservation() {
		return l, nil
	}
	resp, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(l.StoreID))
	if err != nil {
		return l, s.fail("renew lease "+l.Key(), err)
	}
	l.Expiration = time.Now().Add(time.Duration(resp.TTL) * time.Second)
	return l, nil
}

// Delete removes a lease key (used to evict a node).
func (s *Store) Delete(ctx context.Context, key string) (bool, error) {
	resp, err := s.cli.Delete(ctx, s.subnetsKey()+key)
	if err != nil {
		return false, s.fail("delete "+s.subnetsKey()+key, err)
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
		return s.fail("put "+s.LeaseKey(l), err)
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
