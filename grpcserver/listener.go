package grpcserver

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lameduck/lameduck/inflight"
)

// pipeListener is the in-memory listener a grpc.Server serves: the Server's
// accept loop delivers the connections it accepts on the real listener.
type pipeListener struct {
	addr   net.Addr // the real listener's address; set before Serve
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener(addr net.Addr) *pipeListener {
	return &pipeListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and deliver fail; the real listener stays open.
func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr {
	if l.addr == nil {
		return pipeAddr{}
	}
	return l.addr
}

// deliver waits for Accept to take c, and reports whether it did: it
// returns false once the listener or abort is closed.
func (l *pipeListener) deliver(c net.Conn, abort <-chan struct{}) bool {
	select {
	case <-l.closed:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	case <-abort:
		return false
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// conn is an accepted connection as grpc-go sees it. A grpc.Server that was
// stopped between taking the connection and starting its handshake closes
// it without reading a byte (grpc-go's handleRawConn); the client would
// then fail its RPCs. conn turns such a Close into a hand-off to the
// current generation, which serves the connection as if it had just been
// accepted. It also records whether a byte has arrived, so that the drain
// can close connections that never speak (see handshakeGrace).
type conn struct {
	net.Conn
	s        *Server
	accepted time.Time
	used     atomic.Bool  // set once grpc-go has done anything with the connection
	heard    atomic.Bool  // set once a byte has been read from the connection
	handoffs atomic.Int32 // times Close handed it off again
	lameDuck bool         // accepted during the lame-duck phase
	arrival  inflight.Arrival
}

// maxHandoffs bounds how often an unused connection is handed off again,
// in case a grpc-go version closed unused connections for another reason.
const maxHandoffs = 4

func (c *conn) use() {
	if !c.used.Load() {
		c.used.Store(true)
	}
}

func (c *conn) Read(b []byte) (int, error) {
	c.use()
	n, err := c.Conn.Read(b)
	if n > 0 && !c.heard.Load() {
		c.heard.Store(true)
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.use()
	return c.Conn.Write(b)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.use()
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.use()
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.use()
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) Close() error {
	if !c.used.Load() && c.handoffs.Add(1) <= maxHandoffs {
		// Never used: hand it to the current generation, or close it if
		// there is none.
		c.s.handOff(c)
		return nil
	}
	return c.forceClose()
}

// forceClose closes the connection for good.
func (c *conn) forceClose() error {
	c.s.forget(c)
	return c.Conn.Close()
}

// SyscallConn gives grpc-go's channelz the socket options of the
// connection, as it would get them from a *net.TCPConn.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
