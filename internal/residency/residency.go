// Package residency returns pages of the running executable that only
// start-up needed.
//
// A Go program runs the init function of every package it links before
// main, and the kernel maps each page it faults in together with its
// neighbours (fault-around, 64 KiB by default). weft links an etcd server,
// client-go and the lab, so an agent that has just started has most of its
// executable resident although its steady state runs a small part of it:
// measured on an idle agent, 42 MiB of its 56 MiB RSS were pages of the
// executable. Release unmaps them from this process; the ones still in use
// are faulted back in from the page cache on their next use.
package residency

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mapping is one mapping of the executable as /proc/self/smaps lists it.
type Mapping struct {
	Start, End uintptr
	Perms      string
	RssKiB     int64
	AnonKiB    int64 // private copies (relocations); such a mapping is never released
}

// releasable reports whether dropping the mapping's pages loses nothing:
// it must be read-only and hold no private copy, so that every page reads
// back from the file exactly as it was.
func (m Mapping) releasable() bool {
	return !strings.Contains(m.Perms, "w") && m.AnonKiB == 0 && strings.HasPrefix(m.Perms, "r")
}

// Release drops this process's resident pages of its own executable's
// read-only mappings (code, read-only data, symbol tables) and returns how
// many KiB were resident in them before. Writable mappings and any mapping
// with private copies are left alone.
func Release() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("find the executable: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("read mappings: %w", err)
	}
	maps, err := ParseSmaps(f, exe)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("read mappings: %w", err)
	}
	var kib int64
	var errs []error
	for _, m := range maps {
		if !m.releasable() {
			continue
		}
		if err := madviseDontNeed(m.Start, m.End); err != nil {
			errs = append(errs, fmt.Errorf("release %x-%x of %s: %w", m.Start, m.End, exe, err))
			continue
		}
		kib += m.RssKiB
	}
	return kib, errors.Join(errs...)
}

// ParseSmaps returns the mappings of path in an smaps listing.
func ParseSmaps(r io.Reader, path string) ([]Mapping, error) {
	var out []Mapping
	var cur *Mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		if !strings.HasSuffix(fs[0], ":") { // a mapping header: "start-end perms offset dev inode [path]"
			cur = nil
			if len(fs) < 6 || strings.Join(fs[5:], " ") != path {
				continue
			}
			start, end, ok := strings.Cut(fs[0], "-")
			s, err1 := strconv.ParseUint(start, 16, 64)
			e, err2 := strconv.ParseUint(end, 16, 64)
			if !ok || err1 != nil || err2 != nil || e <= s {
				return nil, fmt.Errorf("malformed mapping %q", line)
			}
			out = append(out, Mapping{Start: uintptr(s), End: uintptr(e), Perms: fs[1]})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil || len(fs) < 2 {
			continue
		}
		v, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			continue // fields like VmFlags
		}
		switch fs[0] {
		case "Rss:":
			cur.RssKiB = v
		case "Anonymous:":
			cur.AnonKiB = v
		}
	}
	return out, sc.Err()
}

func madviseDontNeed(start, end uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED)
	if e != 0 {
		return e
	}
	return nil
}
