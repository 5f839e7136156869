package pod

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteConflist(t *testing.T) {
	dir := t.TempDir()
	r := Runtime{NS: "x-n1", Dir: dir, SubnetFile: filepath.Join(dir, "subnet.env"),
		ConfDir: filepath.Join(dir, "cni", "net.d"), BinDirs: []string{filepath.Join(dir, "bin")}} // no portmap there
	if err := r.WriteConflist(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(r.ConfDir, "10-weft.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.CNIVersion != "1.1.0" || doc.Name != "weft" || len(doc.Plugins) != 1 ||
		doc.Plugins[0]["type"] != "weft-cni" || doc.Plugins[0]["subnetFile"] != r.SubnetFile ||
		doc.Plugins[0]["dataDir"] != filepath.Join(dir, "ipam") {
		t.Errorf("conflist:\n%s", b)
	}
}

func TestDelWithoutConfigIsSuccess(t *testing.T) {
	r := Runtime{NS: "x-n1", Dir: t.TempDir(), ConfDir: filepath.Join(t.TempDir(), "none")}
	if err := r.Del(context.Background(), &Pod{Name: "n1-p1", NS: "x-n1-p1"}); err != nil {
		t.Errorf("DEL on a node without CNI config: %v", err)
	}
	if err := r.Add(context.Background(), &Pod{Name: "n1-p1", NS: "x-n1-p1"}); err == nil {
		t.Error("ADD without CNI config succeeded")
	}
}
