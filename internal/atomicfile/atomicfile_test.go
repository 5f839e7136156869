package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// onlyFile fails unless dir holds exactly the file name: no temporary file
// is left behind.
func onlyFile(t *testing.T, dir, name string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != name {
		t.Errorf("%s holds %v, want only %s", dir, names, name)
	}
}

func TestWriteCreatesWithExactMode(t *testing.T) {
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	t.Cleanup(func() { syscall.Umask(old) })
	for _, perm := range []os.FileMode{0o644, 0o755, 0o600} {
		dir := filepath.Join(t.TempDir(), "a", "b") // created by Write
		path := filepath.Join(dir, "f")
		if err := Write(path, strings.NewReader("content"), perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "content" {
			t.Fatalf("read back %q, %v", b, err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != perm {
			t.Errorf("mode %v, want %v", st.Mode().Perm(), perm)
		}
		onlyFile(t, dir, "f")
	}
}

// TestWriteReplacesAtomically: the new content arrives as a new file, so a
// reader that opened the old one still reads it whole.
func TestWriteReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "10-weft.conflist")
	if err := Write(path, strings.NewReader("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if err := Write(path, strings.NewReader("new, and longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(reader); string(b) != "old" {
		t.Errorf("the open reader sees %q, want the old content whole", b)
	}
	if b, _ := os.ReadFile(path); string(b) != "new, and longer" {
		t.Errorf("path holds %q", b)
	}
	onlyFile(t, dir, "10-weft.conflist")
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestWriteFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := Write(path, strings.NewReader("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(path, io.MultiReader(strings.NewReader("half"), failingReader{}), 0o644)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "subnet.env") {
		t.Fatalf("err = %v; want the reader's error, naming the file", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after a failed write path holds %q, want the old content", b)
	}
	onlyFile(t, dir, "subnet.env")
}

func TestWriteIntoMissingParentFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The parent is a file: neither MkdirAll nor CreateTemp can succeed.
	if err := Write(filepath.Join(file, "x"), strings.NewReader("x"), 0o644); err == nil {
		t.Error("writing below a regular file succeeded")
	}
}
