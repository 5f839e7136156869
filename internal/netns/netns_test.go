package netns_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/weftnet/weft/internal/netns"
	"github.com/weftnet/weft/internal/netns/netnstest"
)

func TestMain(m *testing.M) {
	netns.HandleExec()
	os.Exit(m.Run())
}

// mounted reports whether path is a mount point in this process's mount
// namespace (/proc/self/mountinfo's fifth field).
func mounted(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// TestCommandBind: the command sees the source directory at the mount
// point, runs in the network namespace, and the mount never shows in the
// caller's mount namespace (neither during nor after the command).
func TestCommandBind(t *testing.T) {
	ns := netnstest.New(t)
	src, base := t.TempDir(), t.TempDir()
	dst := filepath.Join(base, "mnt") // absent: CommandBind creates it
	if err := os.WriteFile(filepath.Join(src, "marker"), []byte("from src\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(netns.Path(ns), &st); err != nil {
		t.Fatal(err)
	}
	out, err := netns.CommandBind(ns, netns.Bind{Src: src, Dst: dst}, "sh", "-c",
		"cat "+dst+"/marker; readlink /proc/self/ns/net; grep -c ' "+dst+" ' /proc/self/mountinfo").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := fmt.Sprintf("from src\nnet:[%d]\n1\n", st.Ino)
	if string(out) != want {
		t.Errorf("the command printed %q, want %q", out, want)
	}
	if mounted(t, dst) {
		t.Errorf("%s is mounted in the caller's mount namespace", dst)
	}
	if _, err := os.Stat(filepath.Join(dst, "marker")); err == nil {
		t.Errorf("the caller sees %s/marker", dst)
	}
	// A mount point that exists is used as it is.
	out, err = netns.CommandBind(ns, netns.Bind{Src: src, Dst: dst}, "cat", dst+"/marker").CombinedOutput()
	if err != nil || string(out) != "from src\n" {
		t.Errorf("second run: %v %q", err, out)
	}
	if mounted(t, dst) {
		t.Errorf("%s is mounted in the caller's mount namespace after the second run", dst)
	}
}

// TestCommandBindErrors: a missing source or namespace fails the command
// with a message naming it, exit status 127.
func TestCommandBindErrors(t *testing.T) {
	ns := netnstest.New(t)
	dst := filepath.Join(t.TempDir(), "mnt")
	for _, tc := range []struct {
		ns, src, want string
	}{
		{ns, "/nonexistent-weft-src", "bind /nonexistent-weft-src onto " + dst},
		{"wt-no-such-ns", t.TempDir(), "netns wt-no-such-ns: open"},
	} {
		out, err := netns.CommandBind(tc.ns, netns.Bind{Src: tc.src, Dst: dst}, "true").CombinedOutput()
		ee, ok := err.(interface{ ExitCode() int })
		if !ok || ee.ExitCode() != 127 || !strings.Contains(string(out), tc.want) {
			t.Errorf("CommandBind(%s, %s): %v %q, want exit 127 naming %q", tc.ns, tc.src, err, out, tc.want)
		}
	}
}
