//go:build unix

package rollout

import (
	"net"
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

// bindEphemeral binds socket fd, about to connect to address, to an
// ephemeral port of the loopback address of the same family, and returns
// that local address: a connection that the load balancer accepts and then
// resets before connect returns (a pod that refuses its dial) still says
// which it was. SO_REUSEADDR lets the port be one that a closed connection
// of the load keeps in TIME_WAIT, as connect's own choice of port could.
func bindEphemeral(fd uintptr, address string) (net.Addr, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, nil // not an IP address: leave the port to connect
	}
	if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, err
	}
	var sa syscall.Sockaddr = &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		sa = &syscall.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}
	}
	if err := syscall.Bind(int(fd), sa); err != nil {
		return nil, err
	}
	got, err := syscall.Getsockname(int(fd))
	if err != nil {
		return nil, err
	}
	switch a := got.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	}
	return nil, nil
}

// canWatchListeners says that listening works here.
const canWatchListeners = true
