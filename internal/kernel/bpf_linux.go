package kernel

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// BPFProgramName is the name of loaded BPF program id: how weft tells its
// own programs at a hook from others'. Opening a program by ID needs
// CAP_SYS_ADMIN; without it the error says so.
func BPFProgramName(id ebpf.ProgramID) (string, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return "", fmt.Errorf("open BPF program %d: %w (telling weft's programs from others' needs CAP_SYS_ADMIN)", id, err)
		}
		return "", fmt.Errorf("open BPF program %d: %w", id, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return "", fmt.Errorf("read BPF program %d: %w", id, err)
	}
	return info.Name, nil
}
