package pod

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/internal/netns"
)

// nsExec runs CNI plugins inside a node's namespace, as a container runtime
// on that node would: it is libcni's RawExec with the process started there.
type nsExec struct {
	ns string
}

var _ invoke.Exec = nsExec{}

func (e nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := netns.Command(e.ns, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			var te types.Error
			if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr == nil && te.Code != 0 {
				return nil, &te
			}
		}
		return nil, fmt.Errorf("%s: %w: %s%s", filepath.Base(pluginPath), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (nsExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}
