// Package lockfile makes a process the only one of its kind for a path: an
// exclusive flock(2) on a file that holds the holder's PID. The kernel
// releases the lock when the holder's descriptor is closed, which happens
// however the process ends (exit, crash, SIGKILL), so a dead holder never
// leaves a stale lock behind: its PID stays in the file, but the next
// Acquire takes the lock and writes its own.
//
// The file itself is never removed: removing it while another process has
// it open but not yet locked would let that process lock the old inode and
// a third one a new file of the same name, two holders at once.
package lockfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// File is a held lock. Release it, or end the process, to let another
// take it.
type File struct {
	f *os.File
}

// HeldError says that another open of the file holds the lock.
type HeldError struct {
	Path string
	// PID is the holder's PID as the file says it, in the holder's PID
	// namespace (a container's, when the file is shared through a host
	// path); 0 when the holder has not written it yet.
	PID int
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("%s is locked by another process", e.Path)
	}
	return fmt.Sprintf("%s is locked by PID %d", e.Path, e.PID)
}

// Acquire takes the lock on path without waiting, creating the file (mode
// 0644) and its directory (0755) if needed, and writes the process's PID
// into it. If another open file description holds the lock, in this
// process or another, it returns a *HeldError naming the holder's PID.
// It is `flock --nonblock path`.
func Acquire(path string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &HeldError{Path: path, PID: holder(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the PID into %s: %w", path, err)
	}
	if _, err := f.WriteAt(pid, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the PID into %s: %w", path, err)
	}
	return &File{f: f}, nil
}

// flock is flock(2) LOCK_EX|LOCK_NB on f, retried when a signal interrupts it.
func flock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB); ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// holder reads the holder's PID from path. The holder writes it just after
// taking the lock, so an empty file is read again for a moment.
func holder(path string) int {
	for range 20 {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0
		}
		if b = bytes.TrimSpace(b); len(b) > 0 {
			pid, err := strconv.Atoi(string(b))
			if err != nil || pid <= 0 {
				return 0
			}
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

// Release releases the lock (closing the file, which is what releases it)
// and leaves the file in place. Calling it again does nothing.
func (l *File) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
