package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/etcdserver/etcdservertest"
)

// TestAgentMoved: the node agent is its own binary; `weft agent` runs the
// weft-agent beside it, and says where it went when there is none (here:
// beside the test binary).
func TestAgentMoved(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"agent", "--ip-masq"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "weft-agent") {
		t.Errorf("weft agent: %v; want an error naming weft-agent", err)
	}
	if err := run(context.Background(), []string{"help"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "weft agent") || !strings.Contains(out.String(), "weft-agent") {
		t.Errorf("usage still offers weft agent, or does not name weft-agent:\n%s", out.String())
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

// TestStoreInit writes the network config through the etcd flags and the
// backend table, refuses an unknown backend naming the choices, and lists
// the (empty) leases.
func TestStoreInit(t *testing.T) {
	url := etcdservertest.Start(t)
	ctx := context.Background()
	var out, errb bytes.Buffer
	err := run(ctx, []string{"store", "init", "--etcd-endpoints", url, "--network", "10.244.0.0/16", "--backend", "host-gw"}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if want := `wrote /coreos.com/network/config: {"Backend":{"Type":"host-gw"},"Network":"10.244.0.0/16"}`; strings.TrimSpace(out.String()) != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
	err = run(ctx, []string{"store", "init", "--etcd-endpoints", url, "--network", "10.244.0.0/16", "--backend", "geneve"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `unknown backend "geneve"`) || !strings.Contains(err.Error(), "vxlan, host-gw, udp") {
		t.Errorf("unknown backend: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"store", "leases", "--etcd-endpoints", url}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "SUBNET") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("leases of an empty store: %q", out.String())
	}
}

// TestHelp: -h and --help print the usage of weft and of each of its
// commands here (lab and policy test their own), and the binary exits 0
// for them; a mistake exits non-zero.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stdout or stderr
	}{
		{[]string{"-h"}, "Usage:\n  weft store serve"},
		{[]string{"--help"}, "Usage:\n  weft store serve"},
		{[]string{"help"}, "Usage:\n  weft store serve"},
		{[]string{"store", "-h"}, "weft store evict SUBNET"},
		{[]string{"store", "--help"}, "weft store evict SUBNET"},
		{[]string{"store", "serve", "-h"}, "-data-dir string"},
		{[]string{"store", "init", "--help"}, "-network string"},
		{[]string{"store", "leases", "-h"}, "-etcd-endpoints string"},
		{[]string{"store", "evict", "-h"}, "-etcd-endpoints string"},
		{[]string{"config", "-h"}, "weft config check FILE"},
		{[]string{"config", "check", "--help"}, "weft config check FILE"},
		{[]string{"cni", "-h"}, "usage: weft cni install --plugin FILE"},
		{[]string{"cni", "install", "--help"}, "-conflist string"},
		{[]string{"policy", "-h"}, "weft policy explain"},
		{[]string{"policy", "--help"}, "weft policy explain"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errb)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("weft %q: %v", tc.args, err)
		}
		if !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("weft %q printed %q%q, want %q in it", tc.args, out.String(), errb.String(), tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"-h"}, 0}, {[]string{"--help"}, 0}, {[]string{"store", "serve", "--help"}, 0},
		{[]string{"config", "check", "-h"}, 0}, {[]string{"cni", "install", "-h"}, 0},
		{[]string{"store", "serve", "--nope"}, 1}, {[]string{}, 2},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMainProcess$")
		cmd.Env = append(os.Environ(), "WEFT_MAIN_ARGS="+strings.Join(tc.args, " "))
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("weft %q: exit status %d, want %d", tc.args, code, tc.code)
		}
	}
}

// TestMainProcess is weft's main in a process of its own, for TestHelp:
// it runs only with WEFT_MAIN_ARGS set.
func TestMainProcess(t *testing.T) {
	args, ok := os.LookupEnv("WEFT_MAIN_ARGS")
	if !ok {
		t.Skip("run by TestHelp")
	}
	os.Args = append([]string{"weft"}, strings.Fields(args)...)
	main()
	os.Exit(0)
}
