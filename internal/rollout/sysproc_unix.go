//go:build unix

package rollout

import (
	"net/netip"
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

// listening reports whether something listens on addr, a 127.0.0.1:PORT
// address: whether binding the port fails. The socket is bound without
// listening and closed at once, so a client connecting meanwhile is refused
// as it would be anyway; SO_REUSEADDR lets the bind succeed beside the
// connections the pod still has open on the port, and fail only beside a
// listening socket. A connection attempt would be seen by the pod, and a
// look at /proc/net/tcp would read thousands of lines every time.
func listening(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return true // cannot tell: say nothing happened
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return true
	}
	defer syscall.Close(fd)
	syscall.CloseOnExec(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return true
	}
	return syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}) != nil
}

// canWatchListeners says that listening works here.
const canWatchListeners = true
