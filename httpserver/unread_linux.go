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
