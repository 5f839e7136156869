package cniinstall

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func files(t *testing.T) (plugin, conflist, binDir, confDir string) {
	t.Helper()
	dir := t.TempDir()
	plugin, conflist = filepath.Join(dir, "weft-cni"), filepath.Join(dir, "cni-conf.json")
	if err := os.WriteFile(plugin, []byte("\x7fELF plugin"), 0o700); err != nil {
		t.Fatal(err)
	}
	return plugin, conflist, filepath.Join(dir, "host", "opt", "cni", "bin"), filepath.Join(dir, "host", "etc", "cni", "net.d")
}

func TestInstall(t *testing.T) {
	for _, doc := range []string{
		`{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni"},{"type":"portmap"}]}`,
		// kube-flannel.yml's conflist, with only the type changed.
		`{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"weft-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true}},` +
			`{"type":"portmap","capabilities":{"portMappings":true}}]}`,
	} {
		install(t, doc)
	}
}

func install(t *testing.T, doc string) {
	t.Helper()
	plugin, conflist, binDir, confDir := files(t)
	if err := os.WriteFile(conflist, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := Run("weft-cni install", []string{"--plugin", plugin, "--bin-dir", binDir, "--conflist", conflist,
		"--conf-dir", confDir, "--conf-name", "10-weft.conflist"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path, content string
		mode          os.FileMode
	}{
		{filepath.Join(binDir, "weft-cni"), "\x7fELF plugin", 0o755},
		{filepath.Join(confDir, "10-weft.conflist"), doc, 0o644},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil || string(b) != f.content {
			t.Errorf("%s: %q, %v", f.path, b, err)
			continue
		}
		if st, _ := os.Stat(f.path); st.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, st.Mode().Perm(), f.mode)
		}
	}
	if want := "installed " + filepath.Join(binDir, "weft-cni") + " and " + filepath.Join(confDir, "10-weft.conflist"); !strings.Contains(out.String(), want) {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

// TestBadConflistInstallsNothing: a conflist that kubelet would reject is
// refused before the plugin is installed.
func TestBadConflistInstallsNothing(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"cniVersion":"1.0.0","name":"weft","plugins":[]}`, "no plugins"},
		{`{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni","delegate":{"mtu":10}}]}`, "plugin 0 (weft-cni): weft-cni: delegate.mtu 10 is not an MTU"},
	} {
		plugin, conflist, binDir, confDir := files(t)
		if err := os.WriteFile(conflist, []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err := Run("weft cni install", []string{"--plugin", plugin, "--bin-dir", binDir, "--conflist", conflist, "--conf-dir", confDir}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), conflist) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v; want one naming %s and %q", err, conflist, tc.want)
		}
		if _, err := os.Stat(binDir); !os.IsNotExist(err) {
			t.Errorf("the plugin directory was created (%v) for a bad conflist", err)
		}
	}
}
