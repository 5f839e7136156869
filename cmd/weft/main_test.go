package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentMoved: the node agent is its own binary; `weft agent` says so.
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
