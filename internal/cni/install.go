package cni

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/internal/atomicfile"
)

// Install copies src into dir as name with mode, atomically (temporary
// file in dir, fsync, rename), so a reader (kubelet, the container runtime)
// sees the old file or the whole new one.
func Install(src, dir, name string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	defer in.Close()
	if err := atomicfile.Write(filepath.Join(dir, name), in, mode); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	return nil
}

// CheckConflist reports whether b is a network configuration list with a
// name and at least one plugin, each with a type, whose weft-cni entries
// ParseConf accepts as the runtime will hand them over (with the list's
// name and cniVersion).
func CheckConflist(b []byte) error {
	var l struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	switch {
	case l.Name == "":
		return fmt.Errorf("conflist: no name")
	case l.CNIVersion == "":
		return fmt.Errorf("conflist: no cniVersion")
	case len(l.Plugins) == 0:
		return fmt.Errorf("conflist: no plugins")
	}
	for i, raw := range l.Plugins {
		var p map[string]any
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("conflist: plugin %d: %w", i, err)
		}
		typ, _ := p["type"].(string)
		if typ == "" {
			return fmt.Errorf("conflist: plugin %d has no type", i)
		}
		if typ != "weft-cni" {
			continue
		}
		p["name"], p["cniVersion"] = l.Name, l.CNIVersion
		conf, _ := json.Marshal(p)
		if _, err := ParseConf(conf); err != nil {
			return fmt.Errorf("conflist: plugin %d (weft-cni): %w", i, err)
		}
	}
	return nil
}
