package cni

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
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
	lastFile := filepath.Join(s.dir, lastReserved(subnet))
	if b, err := os.ReadFile(lastFile); err == nil {
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
	_ = os.WriteFile(lastFile, []byte(ip.String()), 0o644)
	return ip, nil
}

// lastReserved names the file that remembers the family's last allocated
// address, so that addresses go round the subnet before one is reused:
// "last_reserved_ip" for IPv4 (the name before IPv6), "last_reserved_ip6".
func lastReserved(subnet netip.Prefix) string {
	if subnet.Addr().Is4() {
		return "last_reserved_ip"
	}
	return "last_reserved_ip6"
}

func isBroadcast(subnet netip.Prefix, ip netip.Addr) bool {
	return ip.Is4() && !subnet.Contains(ip.Next())
}

// Lookup returns the addresses allocated to att (one per family), sorted,
// IPv4 first; none is not an error.
func (s *Store) Lookup(att Attachment) ([]netip.Addr, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	all, err := s.all()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for ip, a := range all {
		if a == att {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Release frees att's addresses; releasing nothing is success.
func (s *Store) Release(att Attachment) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	all, err := s.all()
	if err != nil {
		return err
	}
	return s.releaseLocked(all, func(a Attachment) bool { return a == att })
}

// GC frees every allocation whose attachment is not in keep. Before it
// does, and under the store's lock (so that no ADD is handed one of the
// addresses meanwhile), it calls before with the addresses, sorted; if
// before fails, nothing is freed.
func (s *Store) GC(keep []Attachment, before func([]netip.Addr) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	all, err := s.all()
	if err != nil {
		return err
	}
	valid := map[Attachment]bool{}
	for _, k := range keep {
		valid[k] = true
	}
	var gone []netip.Addr
	for ip, a := range all {
		if !valid[a] {
			gone = append(gone, ip)
		}
	}
	slices.SortFunc(gone, netip.Addr.Compare)
	if err := before(gone); err != nil {
		return err
	}
	return s.releaseLocked(all, func(a Attachment) bool { return !valid[a] })
}

func (s *Store) releaseLocked(all map[netip.Addr]Attachment, match func(Attachment) bool) error {
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
