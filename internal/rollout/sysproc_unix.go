//go:build unix

package rollout

import (
	"os"
	"syscall"
)

// signalTerm sends SIGTERM to the process itself, not its group: the
// kubelet signals only a container's main process.
func signalTerm(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// killGroup sends SIGKILL to the process's group (the pod runs in a group
// of its own), so children such as a "go run" wrapper's program die too.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		p.Kill()
	}
}
