package wireguard

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestLoadKeyGenerates: a missing file (and directory) is created 0600
// with a key in flannel's format, and read back the same on the next start.
func TestLoadKeyGenerates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "wgkey")
	k, generated, err := LoadKey(path)
	if err != nil || !generated {
		t.Fatalf("LoadKey = %v, %v", generated, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v; want mode 0600", fi.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	// flannel reads it with wgtypes.ParseKey, without trimming.
	fk, err := wgtypes.ParseKey(string(b))
	if err != nil || [KeyLen]byte(fk) != k {
		t.Fatalf("flannel reads %q as %v, %v", b, fk, err)
	}
	if k == [KeyLen]byte{} || PublicKey(k) == [KeyLen]byte{} || PublicKey(k) != [KeyLen]byte(fk.PublicKey()) {
		t.Fatalf("key %x public %x", k, PublicKey(k))
	}
	again, generated, err := LoadKey(path)
	if err != nil || generated || again != k {
		t.Fatalf("second LoadKey = %v, %v: not the same key", generated, err)
	}
}

// TestLoadKeyReadsWGGenkey: `wg genkey > FILE` (a newline at the end) is
// read; a symbolic link (a Kubernetes Secret) is followed.
func TestLoadKeyReadsWGGenkey(t *testing.T) {
	dir := t.TempDir()
	want, _ := wgtypes.GeneratePrivateKey()
	path := filepath.Join(dir, "key")
	if err := os.WriteFile(path, []byte(want.String()+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, link} {
		k, generated, err := LoadKey(p)
		if err != nil || generated || k != [KeyLen]byte(want) {
			t.Errorf("%s: %v, %v", p, generated, err)
		}
	}
}

// TestLoadKeyRefuses: each bad file is refused in one line that names it
// and never holds the key.
func TestLoadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	good, _ := wgtypes.GeneratePrivateKey()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct{ path, says string }{
		{write("world", good.String(), 0o644), "is open to group or others (mode 0644); run chmod 600"},
		{write("group", good.String(), 0o640), "is open to group or others (mode 0640)"},
		{write("short", base64.StdEncoding.EncodeToString([]byte("short")), 0o600), "holds no private key: 5 bytes once decoded"},
		{write("text", "hello world", 0o600), "holds no private key: not valid base64"},
		{dir, "is not a regular file"},
	}
	// A FIFO is refused at once: opening it waits for no writer.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct{ path, says string }{fifo, "is not a regular file (p"})
	if os.Geteuid() != 0 { // root reads a file whatever its mode
		cases = append(cases, struct{ path, says string }{write("unreadable", good.String(), 0o000), "permission denied; fix its permissions or set WIREGUARD_KEY_FILE"})
	}
	for _, tc := range cases {
		_, _, err := LoadKey(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), tc.path) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming the file saying %q", tc.path, err, tc.says)
		}
		if err != nil && strings.Contains(err.Error(), good.String()) {
			t.Errorf("%s: the error holds the key", tc.path)
		}
	}
	// A directory that cannot be made.
	blocker := write("blocker", "", 0o600)
	if _, _, err := LoadKey(filepath.Join(blocker, "wgkey")); err == nil || !strings.Contains(err.Error(), "set WIREGUARD_KEY_FILE") {
		t.Errorf("key under a file: %v", err)
	}
}
