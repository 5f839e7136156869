package cni

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install copies src into dir as name with mode, atomically: a temporary
// file in dir is written, synced and renamed over the old one, so a reader
// (kubelet, the container runtime) sees the old file or the whole new one.
func Install(src, dir, name string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	defer in.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("install %s into %s: %w", name, dir, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: copy: %w", name, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	return nil
}

// CheckConflist reports whether b is a network configuration list with a
// name and at least one plugin, each with a type.
func CheckConflist(b []byte) error {
	var l struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []struct {
			Type string `json:"type"`
		} `json:"plugins"`
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
	for i, p := range l.Plugins {
		if p.Type == "" {
			return fmt.Errorf("conflist: plugin %d has no type", i)
		}
	}
	return nil
}
