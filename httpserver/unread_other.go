//go:build !linux

package httpserver

import "net"

// unread returns 0: only Linux tells how many bytes wait unread.
func unread(net.Conn) int { return 0 }
