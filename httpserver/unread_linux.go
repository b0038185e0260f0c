package httpserver

import (
	"net"
	"syscall"
	"unsafe"
)

// control calls f with the socket of c, a connection or a listener, and
// reports whether it could. Control, unlike Read, does not wait for a read
// that net/http has in progress on the connection.
func control(c any, f func(fd uintptr)) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Control(f) == nil
}

// ioctlInt returns the int that ioctl request req gives for c's socket,
// and whether it could tell.
func ioctlInt(c net.Conn, req uintptr) (int, bool) {
	n, known := 0, false
	control(c, func(fd uintptr) {
		var v int32
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&v))); errno == 0 {
			n, known = int(v), true
		}
	})
	return n, known
}

// unread returns how many bytes have arrived on c that nobody has read yet,
// or 0 if it cannot tell.
func unread(c net.Conn) int {
	n, _ := ioctlInt(c, syscall.TIOCINQ)
	return n
}

// unsent returns how many bytes written to c its peer has not
// acknowledged yet, and whether it could tell.
func unsent(c net.Conn) (int, bool) { return ioctlInt(c, syscall.TIOCOUTQ) }

// queued returns how many connections wait in the accept queue of the
// listening socket l, and whether it could tell: on a listening socket,
// TCP_INFO's tcpi_unacked is the length of that queue (sk_ack_backlog).
func queued(l net.Listener) (int, bool) {
	n, known := 0, false
	control(l, func(fd uintptr) {
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

// cork sets TCP_CORK on c's socket, on or off, and reports whether it
// could. While it is on, the kernel holds back a segment that is not full
// until it is turned off or the connection is half-closed: the FIN then
// goes out in the segment that carries the last bytes written.
func cork(c net.Conn, on bool) bool {
	v := 0
	if on {
		v = 1
	}
	ok := false
	control(c, func(fd uintptr) {
		ok = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v) == nil
	})
	return ok
}
