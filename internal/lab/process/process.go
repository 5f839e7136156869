// Package process starts, finds and stops the processes a lab runs inside
// its namespaces (the store, the agents, flanneld, kube-apiserver), builds
// the agents' command lines, and reads their health and resource use.
// Processes are named by PID and recognised by their command line, so the
// lab ends only what it started.
package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netns"
)

// Start runs argv inside namespace ns as a daemon of its own (a new
// session), with env (KEY=VALUE) added to its environment and its output
// appended to logFile, and returns its PID.
func Start(ns, logFile string, env []string, argv ...string) (int, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd := netns.Command(ns, argv...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s in %s: %w", strings.Join(argv, " "), ns, err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return pid, nil
}

// Ours reports whether pid is a live process a lab started: a weft,
// weft-agent, flanneld or kube-apiserver process whose command line holds
// want (a node's subnet file, "serve" for the store, the certificate
// directory for the API server).
func Ours(pid int, want string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) < 2 {
		return false
	}
	for _, a := range args {
		if a == want {
			base := filepath.Base(args[0])
			return strings.Contains(base, "weft") || strings.Contains(base, "flanneld") || base == "kube-apiserver"
		}
	}
	return false
}

// Stop ends a process Ours recognises: SIGTERM, then SIGKILL after
// timeout. A process that is gone, or not ours, is success.
func Stop(pid int, want string, timeout time.Duration) error {
	if !Ours(pid, want) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !Alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 40 {
		if !Alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not exit", pid)
}

// Alive reports whether pid runs (a zombie does not count).
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// Run runs argv inside ns and returns its combined output.
func Run(ns string, argv ...string) ([]byte, error) {
	cmd := netns.Command(ns, argv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s (in %s): %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Tail is the last n lines of s (a log).
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TailFile is the last n lines of the file at path, or "" if it cannot be
// read.
func TailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return Tail(string(b), n)
}
