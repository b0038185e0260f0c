package httpserver

import (
	"net"
	"syscall"
	"unsafe"
)

// unread returns how many bytes have arrived on c that nobody has read yet,
// or 0 if it cannot tell.
func unread(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	// Control, unlike Read, does not wait for the read that net/http has
	// in progress on the connection.
	rc.Control(func(fd uintptr) { //nolint:errcheck // 0 means "cannot tell"
		var v int32
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v))); errno == 0 {
			n = int(v)
		}
	})
	return n
}

// unsent returns how many bytes written to c its peer has not
// acknowledged yet, and whether it could tell.
func unsent(c net.Conn) (int, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	n, known := 0, false
	rc.Control(func(fd uintptr) { //nolint:errcheck // known stays false
		var v int32
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&v))); errno == 0 {
			n, known = int(v), true
		}
	})
	return n, known
}

// queued returns how many connections wait in the accept queue of the
// listening socket l, and whether it could tell: on a listening socket,
// TCP_INFO's tcpi_unacked is the length of that queue (sk_ack_backlog).
func queued(l net.Listener) (int, bool) {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	n, known := 0, false
	rc.Control(func(fd uintptr) { //nolint:errcheck // known stays false
		var info syscall.TCPInfo
		size := uint32(unsafe.Sizeof(info))
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
		if errno == 0 && info.State == tcpListen {
			n, known = int(info.Unacked), true
		}
	})
	return n, known
}

// tcpListen is the TCP_LISTEN state of Linux's tcp_info.
const tcpListen = 10
