package lockfile

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMain lets the test binary be the other process: with LOCKFILE_HOLD
// set it takes that lock, says so on stdout and waits to be killed.
func TestMain(m *testing.M) {
	if path := os.Getenv("LOCKFILE_HOLD"); path != "" {
		if _, err := Acquire(path); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		select {}
	}
	os.Exit(m.Run())
}

func pidIn(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s holds %q, not a PID", path, b)
	}
	return pid
}

// TestTwoOpensConflict: flock conflicts between open file descriptions,
// so a second Acquire in the same process is refused too, naming the PID.
func TestTwoOpensConflict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "subnet.env.lock") // the directory is made
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := pidIn(t, path); got != os.Getpid() {
		t.Errorf("the file names PID %d, want %d", got, os.Getpid())
	}
	_, err = Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) || held.PID != os.Getpid() || held.Path != path {
		t.Fatalf("second Acquire: %v, want a HeldError naming PID %d", err, os.Getpid())
	}
	if want := path + " is locked by PID " + strconv.Itoa(os.Getpid()); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	l, err = Acquire(path)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l.Release()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Release removed the file: %v", err)
	}
}

// TestHolderKilled: another process holds the lock and is named; once it
// is killed (SIGKILL: no chance to clean up), the kernel has released the
// lock and Acquire takes it, with no stale-lock cleanup.
func TestHolderKilled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env.lock")
	// A PID left by an earlier holder that is gone does not matter.
	if err := os.WriteFile(path, []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LOCKFILE_HOLD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("holder said %q, %v", line, err)
	}
	_, err = Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) || held.PID != cmd.Process.Pid {
		t.Fatalf("Acquire while PID %d holds the lock: %v", cmd.Process.Pid, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	l, err := Acquire(path)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	defer l.Release()
	if got := pidIn(t, path); got != os.Getpid() {
		t.Errorf("the file names PID %d, want %d", got, os.Getpid())
	}
}

// TestUnknownHolder: a holder that has not written its PID yet is named
// as unknown, not as PID 0.
func TestUnknownHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) || held.PID != 0 || err.Error() != path+" is locked by another process" {
		t.Errorf("Acquire: %v", err)
	}
}
