package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/internal/atomicfile"
)

// DefaultKeyFile is where the node's private key is kept unless
// WIREGUARD_KEY_FILE says otherwise: flannel's file (on /run, a tmpfs: a
// reboot gives the node a new key, as with flannel).
const DefaultKeyFile = "/run/flannel/wgkey"

// LoadKey returns the node's private key from path, a file with the key in
// standard base64 as flannel writes it (and as `wg genkey` prints it; a
// trailing newline is allowed). A missing file is created with a new
// random key, mode 0600, its directory made if need be (generated is
// true). A file that group or others may read or write, that cannot be
// read, or that holds no key is refused with an error of one line that
// names the file and says what to do; it never contains the key.
func LoadKey(path string) (key [KeyLen]byte, generated bool, err error) {
	// One descriptor for the checks and the read, so that what is read is
	// the file checked. A symbolic link is followed: a Kubernetes Secret's
	// file is one. O_NONBLOCK: opening a FIFO does not wait for a writer
	// (it is refused as not a regular file); a regular file ignores it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := wgtypes.GeneratePrivateKey() // crypto/rand, clamped
		if err != nil {
			return key, false, fmt.Errorf("wireguard key file %s: generate a key: %w", path, err)
		}
		// Written without a newline, as flannel writes it, so that flannel
		// reads it too. atomicfile writes a 0600 temporary file and renames
		// it: the key is never in a file others can read.
		if err := atomicfile.Write(path, bytes.NewReader([]byte(k.String())), 0o600); err != nil {
			return key, false, fmt.Errorf("wireguard key file %s: %w; make its directory writable or set WIREGUARD_KEY_FILE", path, err)
		}
		return k, true, nil
	}
	if err != nil {
		return key, false, fmt.Errorf("wireguard key file %s: %w; fix its permissions or set WIREGUARD_KEY_FILE", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return key, false, fmt.Errorf("wireguard key file %s: %w; fix its permissions or set WIREGUARD_KEY_FILE", path, err)
	case !fi.Mode().IsRegular():
		return key, false, fmt.Errorf("wireguard key file %s is not a regular file (%s); remove it to have a key generated, or set WIREGUARD_KEY_FILE", path, fi.Mode().Type())
	case fi.Mode().Perm()&0o077 != 0:
		return key, false, fmt.Errorf("wireguard key file %s is open to group or others (mode %#o); run chmod 600 %s (and give the node a new key if others read it)", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return key, false, fmt.Errorf("wireguard key file %s: %w; fix its permissions or set WIREGUARD_KEY_FILE", path, err)
	}
	k, err := ParseKey(string(bytes.TrimSpace(b)))
	if err != nil {
		return key, false, fmt.Errorf("wireguard key file %s holds no private key: %v, or remove it to have one generated", path, err)
	}
	return k, false, nil
}

// PublicKey is the public key of a private key (Curve25519).
func PublicKey(private [KeyLen]byte) [KeyLen]byte {
	return wgtypes.Key(private).PublicKey()
}
