//go:build unix && !linux

package rollout

import "syscall"

// podSysProcAttr puts a pod in a process group of its own, so a Ctrl-C at
// the terminal reaches the simulator only, which then stops its pods.
func podSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
