package cni

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Store is a persistent, concurrency-safe address allocator on disk: one
// file per allocated address, named by the address and holding
// "<containerID>\n<ifname>\n", guarded by an flock so that parallel plugin
// processes never hand out one address twice.
type Store struct {
	dir string
}

// Attachment identifies one container interface.
type Attachment struct {
	ContainerID string
	IfName      string
}

// OpenStore opens (creating) the allocation directory.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ipam: create %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// lock takes the store's exclusive lock; the returned func releases it.
func (s *Store) lock() (func(), error) {
	return lockFile(filepath.Join(s.dir, "lock"))
}

// lockFile takes an exclusive flock on path (created 0600), waiting for
// other plugin processes to release it; the returned func releases it.
// Same as `flock path`.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// all reads every allocation. Caller holds the lock.
func (s *Store) all() (map[netip.Addr]Attachment, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: read %s: %w", s.dir, err)
	}
	out := map[netip.Addr]Attachment{}
	for _, e := range ents {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("ipam: read allocation %s: %w", ip, err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		var a Attachment
		if sc.Scan() {
			a.ContainerID = strings.TrimSpace(sc.Text())
		}
		if sc.Scan() {
			a.IfName = strings.TrimSpace(sc.Text())
		}
		out[ip] = a
	}
	return out, nil
}

// Allocate returns the address of att in subnet, allocating the next free
// one after the last allocated if att has none. Network, gateway (first) and
// broadcast (last) addresses are never handed out.
func (s *Store) Allocate(subnet netip.Prefix, att Attachment) (netip.Addr, error) {
	unlock, err := s.lock()
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	all, err := s.all()
	if err != nil {
		return netip.Addr{}, err
	}
	for ip, a := range all {
		if a == att && subnet.Contains(ip) {
			return ip, nil
		}
	}
	first := subnet.Masked().Addr().Next().Next() // skip network and gateway
	start := first
	if b, err := os.ReadFile(filepath.Join(s.dir, "last_reserved_ip")); err == nil {
		if last, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && subnet.Contains(last) {
			start = last.Next()
		}
	}
	ip := start
	for {
		if !subnet.Contains(ip) || isBroadcast(subnet, ip) {
			ip = first
		}
		if _, used := all[ip]; !used {
			break
		}
		ip = ip.Next()
		if ip == start {
			return netip.Addr{}, fmt.Errorf("ipam: no free address left in %s (%d allocated)", subnet, len(all))
		}
	}
	f, err := os.OpenFile(filepath.Join(s.dir, ip.String()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ipam: reserve %s: %w", ip, err)
	}
	_, werr := fmt.Fprintf(f, "%s\n%s\n", att.ContainerID, att.IfName)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(filepath.Join(s.dir, ip.String()))
		return netip.Addr{}, fmt.Errorf("ipam: write allocation %s: %w", ip, werr)
	}
	_ = os.WriteFile(filepath.Join(s.dir, "last_reserved_ip"), []byte(ip.String()), 0o644)
	return ip, nil
}

func isBroadcast(subnet netip.Prefix, ip netip.Addr) bool {
	return ip.Is4() && !subnet.Contains(ip.Next())
}

// Lookup returns the address allocated to att, if any.
func (s *Store) Lookup(att Attachment) (netip.Addr, bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return netip.Addr{}, false, err
	}
	defer unlock()
	all, err := s.all()
	if err != nil {
		return netip.Addr{}, false, err
	}
	for ip, a := range all {
		if a == att {
			return ip, true, nil
		}
	}
	return netip.Addr{}, false, nil
}

// Release frees att's address; releasing nothing is success.
func (s *Store) Release(att Attachment) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.releaseLocked(func(a Attachment) bool { return a == att })
}

// GC frees every allocation whose attachment is not in keep.
func (s *Store) GC(keep []Attachment) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	valid := map[Attachment]bool{}
	for _, k := range keep {
		valid[k] = true
	}
	return s.releaseLocked(func(a Attachment) bool { return !valid[a] })
}

func (s *Store) releaseLocked(match func(Attachment) bool) error {
	all, err := s.all()
	if err != nil {
		return err
	}
	var errs []error
	for ip, a := range all {
		if match(a) {
			if err := os.Remove(filepath.Join(s.dir, ip.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("ipam: release %s: %w", ip, err))
			}
		}
	}
	return errors.Join(errs...)
}
