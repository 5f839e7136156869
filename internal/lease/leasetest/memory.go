// Package leasetest holds an in-memory lease.Store and the conformance suite
// that every Store implementation must pass.
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/config"
	"github.com/weftnet/weft/internal/lease"
)

// Memory is an in-memory lease.Store for fast tests.
type Memory struct {
	mu      sync.Mutex // guards the fields below
	config  []byte
	leases  map[string]lease.Lease
	ttl     map[int64]time.Duration // by StoreID
	nextID  int64
	waiters []chan struct{}
}

var _ lease.Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{leases: map[string]lease.Lease{}, ttl: map[int64]time.Duration{}}
}

// PutConfig sets the config document.
func (m *Memory) PutConfig(doc []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.config = append([]byte(nil), doc...)
}

// Reserve adds a lease without TTL.
func (m *Memory) Reserve(l lease.Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l.StoreID, l.Expiration = 0, time.Time{}
	m.leases[l.Key()] = l
	m.notifyLocked()
}

// Delete removes a lease.
func (m *Memory) Delete(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases, key)
	m.notifyLocked()
}

func (m *Memory) notifyLocked() {
	for _, w := range m.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

func (m *Memory) expireLocked() {
	now := time.Now()
	for k, l := range m.leases {
		if !l.Reservation() && now.After(l.Expiration) {
			delete(m.leases, k)
		}
	}
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

// Acquire implements lease.Store.
func (m *Memory) Acquire(ctx context.Context, req lease.Request) (lease.Lease, error) {
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
	held, v4, v6, err := lease.Choose(cfg, m.listLocked(), req, nil)
	if err != nil {
		return lease.Lease{}, err
	}
	l := lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: req.Attrs}
	if held == nil || !held.Reservation() {
		m.nextID++
		l.StoreID = m.nextID
		l.Expiration = time.Now().Add(req.TTL)
		m.ttl[l.StoreID] = req.TTL
	}
	m.leases[l.Key()] = l
	m.notifyLocked()
	return l, nil
}

// Renew implements lease.Store.
func (m *Memory) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if l.Reservation() {
		return l, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	cur, ok := m.leases[l.Key()]
	if !ok || cur.StoreID != l.StoreID {
		return l, errors.New("memory store: lease expired or taken over")
	}
	cur.Expiration = time.Now().Add(m.ttl[cur.StoreID])
	m.leases[l.Key()] = cur
	return cur, nil
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
	out := make([]lease.Lease, 0, len(m.leases))
	for _, l := range m.leases {
		out = append(out, l)
	}
	return out
}

// Watch implements lease.Store.
func (m *Memory) Watch(ctx context.Context, sink func(lease.Event)) error {
	changed := func() { // transitional: every change relists
		ls, _ := m.List(ctx)
		sink(lease.Event{Reset: true, Cause: lease.CauseStart, Leases: lease.Records(ls)})
	}
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.waiters = append(m.waiters, ch)
	m.mu.Unlock()
	changed() // the watch is live: anything before it is covered by a List now
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
			changed()
		}
	}
}
