package rollout

import "syscall"

// podSysProcAttr puts a pod in a process group of its own, so a Ctrl-C at
// the terminal reaches the simulator only (which then stops its pods in
// order), and asks the kernel to SIGKILL the pod if the simulator dies
// without cleaning up, so no pod outlives a crashed run. (Pdeathsig fires
// when the thread that started the pod exits; the Go runtime keeps its
// threads unless a goroutine ends while locked to one, which this package
// never does.)
func podSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
