package process

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Handle names a process the lab started by its PID and its start time
// (field 22 of /proc/PID/stat, in clock ticks since boot): the pair is
// unique for the machine's uptime, so a recorded handle never names a
// later process that reused the PID. It serves processes whose command
// line says nothing of the lab (agnhost serve-hostname in a pod).
type Handle struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// StartHandle runs argv inside namespace ns as Start does and returns its
// handle.
func StartHandle(ns, logFile string, env []string, argv ...string) (Handle, error) {
	pid, err := Start(ns, logFile, env, argv...)
	if err != nil {
		return Handle{}, err
	}
	st, err := startTime(pid)
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL) // ours: started just now
		return Handle{}, fmt.Errorf("start %s in %s: %w", strings.Join(argv, " "), ns, err)
	}
	return Handle{PID: pid, Start: st}, nil
}

// Running reports whether the process h names still runs.
func (h Handle) Running() bool {
	if h.PID <= 0 || !Alive(h.PID) {
		return false
	}
	st, err := startTime(h.PID)
	return err == nil && st == h.Start
}

// Stop ends the process h names: SIGTERM, then SIGKILL after timeout. A
// process that is gone (or a PID now used by another process) is success.
func (h Handle) Stop(timeout time.Duration) error {
	if !h.Running() {
		return nil
	}
	if err := syscall.Kill(h.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", h.PID, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !h.Running() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(h.PID, syscall.SIGKILL)
	for range 40 {
		if !h.Running() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not exit", h.PID)
}

// startTime reads the start time of pid from /proc/PID/stat.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStartTime(string(b))
}

// parseStartTime takes field 22 of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may hold spaces and parentheses,
// so fields are counted from the last ')'.
func parseStartTime(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc stat line %q: %d fields after the name", stat, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}
