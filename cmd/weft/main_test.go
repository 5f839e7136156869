package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagsFromEnvironment(t *testing.T) {
	fs := newFlags("test", os.Stderr)
	ep := fs.String("etcd-endpoints", "default", "")
	prefix := fs.String("etcd-prefix", "default", "")
	masq := fs.Bool("ip-masq", false, "")
	t.Setenv("FLANNELD_ETCD_ENDPOINTS", "http://flannel:2379")
	t.Setenv("WEFT_ETCD_PREFIX", "/weft")
	t.Setenv("FLANNELD_ETCD_PREFIX", "/ignored") // WEFT_ wins
	t.Setenv("FLANNELD_IP_MASQ", "true")
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *ep != "http://flannel:2379" || *prefix != "/weft" || !*masq {
		t.Errorf("got %q %q %v", *ep, *prefix, *masq)
	}
	// The command line wins over the environment.
	fs = newFlags("test", os.Stderr)
	ep = fs.String("etcd-endpoints", "default", "")
	if err := parse(fs, []string{"--etcd-endpoints", "http://cli:2379"}); err != nil || *ep != "http://cli:2379" {
		t.Errorf("command line: %q %v", *ep, err)
	}
	t.Setenv("FLANNELD_IP_MASQ", "maybe")
	fs = newFlags("test", &bytes.Buffer{})
	fs.Bool("ip-masq", false, "")
	if err := parse(fs, nil); err == nil || !strings.Contains(err.Error(), "FLANNELD_IP_MASQ") {
		t.Errorf("a bad environment value must be named: %v", err)
	}
}

func TestFlagsAfterPositional(t *testing.T) {
	fs := newFlags("test", os.Stderr)
	ep := fs.String("etcd-endpoints", "", "")
	if err := parse(fs, []string{"10.244.3.0/24", "--etcd-endpoints", "http://x:2379"}); err != nil {
		t.Fatal(err)
	}
	if *ep != "http://x:2379" || fs.NArg() != 1 || fs.Arg(0) != "10.244.3.0/24" {
		t.Errorf("got %q %v", *ep, fs.Args())
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`), 0o644)
	os.WriteFile(bad, []byte(`{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}`), 0o644)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"config", "check", good}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"SubnetLen": 24`, `"SubnetMin": "10.244.1.0"`, `"SubnetMax": "10.244.255.0"`, `"Port": 8472`, `"VNI": 1`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("resolved config lacks %s:\n%s", want, out.String())
		}
	}
	err := run(context.Background(), []string{"config", "check", bad}, &out, &errb)
	if err == nil || err.Error() != "net-conf.json: SubnetLen: 31 is longer than /30; use a value between 18 and 30" {
		t.Errorf("bad config: %v", err)
	}
}
