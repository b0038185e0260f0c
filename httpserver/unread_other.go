//go:build !linux

package httpserver

import "net"

// unread returns 0: only Linux tells how many bytes wait unread.
func unread(net.Conn) int { return 0 }

// queued reports that it cannot tell how many connections are queued.
func queued(net.Listener) (int, bool) { return 0, false }

// unsent reports that it cannot tell how many bytes are unacknowledged.
func unsent(net.Conn) (int, bool) { return 0, false }

// cork reports that it cannot hold back the last bytes of a response: only
// Linux's TCP_CORK is used.
func cork(net.Conn, bool) bool { return false }
