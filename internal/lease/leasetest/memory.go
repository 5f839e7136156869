// Package leasetest holds an in-memory lease.Store and the conformance suite
// that every Store implementation must pass.
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// Memory is an in-memory lease.Store for fast tests. Its Watch sends
// events as etcd's does: a Reset, then one Event per change, expiries
// included.
type Memory struct {
	mu      sync.Mutex // guards the fields below
	config  []byte
	records map[string]lease.Record // by key; Err set for a record that does not decode
	ttl     map[int64]time.Duration // by StoreID
	nextID  int64
	created int64 // the last Created given to a new key
	watches map[*memWatch]struct{}
}

// memWatch is the queue of one Watch: changes are queued under Memory.mu
// and sent from the watching goroutine, so a slow sink holds no lock.
type memWatch struct {
	mu    sync.Mutex // guards queue
	queue []lease.Event
	wake  chan struct{} // 1-slot: something was queued
}

var _ lease.SubnetChooser = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{records: map[string]lease.Record{}, ttl: map[int64]time.Duration{}, watches: map[*memWatch]struct{}{}}
}

// PutConfig sets the config document.
func (m *Memory) PutConfig(doc []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.config = append([]byte(nil), doc...)
}

// Reserve adds a lease without TTL, or overwrites one (as `etcdctl put`
// does: the key keeps its Created and loses its TTL).
func (m *Memory) Reserve(l lease.Lease) {
	l.StoreID, l.Expiration = 0, time.Time{}
	m.Put(lease.Record{Key: l.Key(), Lease: l})
}

// PutLease writes l with a TTL, as another writer (flanneld, or an
// operator with etcdctl put --lease) would, without the checks of Acquire:
// a new key gets the next Created, an existing one keeps its own. It
// returns the lease as stored.
func (m *Memory) PutLease(l lease.Lease, ttl time.Duration) lease.Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.grantLocked(&l, ttl)
	return m.putLocked(lease.Record{Key: l.Key(), Lease: l}).Lease
}

// Put writes a record as an operator would, without TTL: a record whose
// Err is set stands for a key or value that does not decode. A new key
// gets the next Created; an existing one keeps its own.
func (m *Memory) Put(r lease.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.Lease.StoreID, r.Lease.Expiration = 0, time.Time{}
	if r.Err != nil {
		r.Lease = lease.Lease{}
	}
	m.putLocked(r)
}

// putLocked stores r, giving it its Created, and tells the watches; m.mu
// is held.
func (m *Memory) putLocked(r lease.Record) lease.Record {
	m.expireLocked()
	if r.Err == nil {
		if old, ok := m.records[r.Key]; ok {
			r.Lease.Created = old.Lease.Created
		} else {
			m.created++
			r.Lease.Created = m.created
		}
	} else if _, ok := m.records[r.Key]; !ok {
		m.created++ // an undecodable record is created too, as in etcd
	}
	m.records[r.Key] = r
	m.sendLocked(lease.Event{Record: r})
	return r
}

// Delete removes a lease.
func (m *Memory) Delete(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	m.deleteLocked(key)
}

// deleteLocked removes a record and tells the watches; m.mu is held.
func (m *Memory) deleteLocked(key string) {
	if _, ok := m.records[key]; !ok {
		return
	}
	delete(m.records, key)
	m.sendLocked(lease.Event{Record: lease.Record{Key: key}, Deleted: true})
}

// sendLocked queues e for every watch; m.mu is held.
func (m *Memory) sendLocked(e lease.Event) {
	for w := range m.watches {
		w.mu.Lock()
		w.queue = append(w.queue, e)
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// expireLocked deletes the leases whose TTL has run out, as etcd does
// when their etcd lease expires; m.mu is held.
func (m *Memory) expireLocked() {
	now := time.Now()
	for k, r := range m.records {
		if r.Err == nil && !r.Lease.Reservation() && now.After(r.Lease.Expiration) {
			delete(m.records, k)
			m.sendLocked(lease.Event{Record: lease.Record{Key: k}, Deleted: true})
		}
	}
}

// nextExpiryLocked is when the next lease expires (zero if none does);
// m.mu is held.
func (m *Memory) nextExpiryLocked() time.Time {
	var next time.Time
	for _, r := range m.records {
		if e := r.Lease.Expiration; r.Err == nil && !r.Lease.Reservation() && (next.IsZero() || e.Before(next)) {
			next = e
		}
	}
	return next
}

// Config implements lease.Store.
func (m *Memory) Config(ctx context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.config == nil {
		return nil, fmt.Errorf("memory store: %w", lease.ErrNoConfig)
	}
	return append([]byte(nil), m.config...), nil
}

// ChoosesSubnets implements lease.SubnetChooser.
func (m *Memory) ChoosesSubnets() {}

// Acquire implements lease.Store.
func (m *Memory) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
	if req.Reclaim {
		if l, ok, err := m.reclaim(req); ok || err != nil {
			return l, err
		}
	}
	doc, err := m.Config(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	cfg, err := config.Parse(doc)
	if err != nil {
		return lease.Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := lease.Choose(cfg, m.listLocked(), req, nil)
	for _, st := range c.Stale {
		m.deleteLocked(st.Key()) // as flannel does
	}
	if errors.Is(err, lease.ErrNoFreeSubnet) && len(c.Stale) > 0 {
		c, err = lease.Choose(cfg, m.listLocked(), req, nil) // without them
	}
	if err != nil {
		return lease.Lease{}, err
	}
	l := lease.Lease{Subnet: c.Subnet, IPv6Subnet: c.IPv6Subnet, Attrs: req.Attrs}
	if c.Held == nil || !c.Held.Reservation() {
		m.grantLocked(&l, req.TTL)
	}
	return m.putLocked(lease.Record{Key: l.Key(), Lease: l}).Lease, nil
}

// grantLocked gives l a new TTL; m.mu is held.
func (m *Memory) grantLocked(l *lease.Lease, ttl time.Duration) {
	m.nextID++
	l.StoreID = m.nextID
	l.Expiration = time.Now().Add(ttl)
	m.ttl[l.StoreID] = ttl
}

// reclaim writes the node's record (req.Prefer[0], and the first IPv6
// subnet of req.Prefer) back with req.Attrs, whatever it holds now: with a
// new TTL unless req.Reservation. A record that is gone and overlaps
// another lease now is not written (ok false): the node leases anew.
func (m *Memory) reclaim(req lease.Request) (l lease.Lease, ok bool, err error) {
	l, err = req.Reclaimed()
	if err != nil {
		return lease.Lease{}, false, fmt.Errorf("%s: %w", "memory store", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	if _, held := m.records[l.Key()]; !held {
		for _, o := range m.listLocked() {
			if o.Overlaps(l) {
				return lease.Lease{}, false, nil
			}
		}
	}
	if !req.Reservation {
		m.grantLocked(&l, req.TTL)
	}
	return m.putLocked(lease.Record{Key: l.Key(), Lease: l}).Lease, true, nil
}

// Renew implements lease.Store.
func (m *Memory) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if l.Reservation() {
		return l, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	cur, ok := m.records[l.Key()]
	if !ok || cur.Err != nil || cur.Lease.StoreID != l.StoreID {
		return l, errors.New("memory store: lease expired or taken over")
	}
	// Renewing changes no record: no event, as in etcd.
	cur.Lease.Expiration = time.Now().Add(m.ttl[cur.Lease.StoreID])
	m.records[l.Key()] = cur
	return cur.Lease, nil
}

// List implements lease.Store.
func (m *Memory) List(ctx context.Context) ([]lease.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listLocked(), nil
}

// listLocked returns the leases that have not expired; m.mu is held.
func (m *Memory) listLocked() []lease.Lease {
	m.expireLocked()
	out := make([]lease.Lease, 0, len(m.records))
	for _, r := range m.records {
		if r.Err == nil {
			out = append(out, r.Lease)
		}
	}
	return out
}

// Watch implements lease.Store. The store never breaks, so the only Reset
// is the first.
func (m *Memory) Watch(ctx context.Context, sink func(lease.Event)) error {
	w := &memWatch{wake: make(chan struct{}, 1)}
	m.mu.Lock()
	m.expireLocked()
	reset := lease.Event{Reset: true, Cause: lease.CauseStart}
	for _, r := range m.records {
		if r.Err != nil {
			reset.Invalid = append(reset.Invalid, r)
		} else {
			reset.Leases = append(reset.Leases, r)
		}
	}
	m.watches[w] = struct{}{}
	m.mu.Unlock()
	byKey := func(a, b lease.Record) int { return strings.Compare(a.Key, b.Key) }
	slices.SortFunc(reset.Leases, byKey)
	slices.SortFunc(reset.Invalid, byKey)
	defer func() {
		m.mu.Lock()
		delete(m.watches, w)
		m.mu.Unlock()
	}()
	sink(reset)
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	for {
		m.mu.Lock()
		m.expireLocked()
		next := m.nextExpiryLocked()
		m.mu.Unlock()
		w.mu.Lock()
		queue := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, e := range queue {
			sink(e)
		}
		if len(queue) > 0 {
			continue // more may have come while sending
		}
		d := time.Hour
		if !next.IsZero() {
			d = max(time.Until(next)+time.Millisecond, time.Millisecond)
		}
		expiry.Reset(d)
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-expiry.C:
		}
	}
}
