// Package httpserver runs a [net/http.Server] under a [lameduck.Coordinator]
// so that a rolling update fails no request.
//
// [New] adapts an *http.Server, which keeps its handler, timeouts and TLS
// configuration, to the [lameduck.Server] interface:
//
//	srv := httpserver.New(&http.Server{Addr: ":8080", Handler: mux})
//	ld.Register(srv)
//
// The server speaks HTTP/1.1, HTTP/2 over TLS, and HTTP/2 with prior
// knowledge over plain TCP (h2c), unless [net/http.Server.Protocols] says
// otherwise.
//
// # What happens on shutdown
//
// Lame duck: the server keeps accepting and serving everything, but every
// response asks its client to leave gently: HTTP/1 responses carry
// "Connection: close", so that each keep-alive connection ends cleanly right
// after a response and the client's next request opens a new connection
// through the Service; on HTTP/2 the same header makes net/http send a
// graceful GOAWAY. The header is added when the response's header is
// written, so responses to requests that began before the signal carry it
// too. Idle connections are left alone: closing a keep-alive connection from
// the server side races a client that has just sent a request on it, and
// that is the race that fails requests in the textbook recipe
// (SetKeepAlivesEnabled(false), then a delay, then Shutdown).
//
// Drain: the listener closes; HTTP/1 connections that are idle — no request
// in flight and none arriving — are closed; requests in flight finish, and
// their connections close right after their responses. Every HTTP/2
// connection gets a graceful GOAWAY, if it has not had one yet, once no
// HTTP/1 connection is left (net/http's Shutdown sends it, and would drop an
// HTTP/1 request read after it began, golang/go#75591). The drain ends as
// soon as the last response is written and the last connection closed: it
// follows connection and request events and never polls, unlike Shutdown,
// whose poll interval grows to 500 ms.
//
// Deadline: [Server.Close] cancels request contexts (see
// [net/http.Server.BaseContext]), closes every connection, hijacked ones
// included (net/http does not track those, golang/go#17721), and reports
// what it cut.
//
// Long-lived responses, such as server-sent events, and hijacked
// connections, such as websockets, should watch
// [lameduck.Coordinator.Draining] and finish when it is closed.
//
// # Limits
//
// An HTTP/2 client that does not close its connection after a GOAWAY keeps
// it open until net/http closes it, one second after its last stream
// (golang/go#18701). Over TLS, an HTTP/1 connection is seen as finished when
// net/http closes it, 500 ms after its last response (net/http lingers to
// avoid a TCP reset, see rstAvoidanceDelay), and a connection whose TLS
// handshake is done but whose first request has not arrived holds the drain
// until the deadline. Handlers' ResponseWriter is wrapped: it implements
// [http.Flusher], [http.Hijacker] (HTTP/1), [io.ReaderFrom] (HTTP/1) and
// Unwrap for [http.ResponseController], but not the deprecated
// [http.CloseNotifier] and [http.Pusher].
package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/lameduck/lameduck"
)

// Server runs an *http.Server as a [lameduck.Server]. Create it with [New].
type Server struct {
	srv     *http.Server
	handler http.Handler // the user's handler
	tls     bool

	// Hooks the user had set on srv, which ours call.
	userConnState   func(net.Conn, http.ConnState)
	userBaseContext func(net.Listener) context.Context

	// baseCtx is the parent of every request context; Close cancels it.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	tracker  lameduck.Tracker
	lameDuck atomic.Bool // responses carry Connection: close
	draining atomic.Bool // the drain has begun: connection events wake it

	// changed wakes the drain when a connection changes state.
	changed chan struct{}

	mu sync.Mutex
	// Guarded by mu.
	ln       net.Listener // nil until Listen succeeds
	stopped  bool         // the listener was closed by Drain or Close: Serve returns nil
	conns    map[*conn]struct{}
	goAway   bool // the GOAWAY for idle HTTP/2 connections has been started
	closed   bool
	cut      lameduck.Counts
	shutdown chan struct{} // closed when the Shutdown started for GOAWAY returns

	shutdownCtx  context.Context
	stopShutdown context.CancelFunc
}

// New returns a Server that runs srv. It takes srv over: it wraps srv's
// Handler (nil means [http.DefaultServeMux]), ConnState and BaseContext, and
// when both Protocols and TLSNextProto are nil it enables HTTP/1, HTTP/2 and
// unencrypted HTTP/2 (h2c, prior knowledge only). The caller must not call
// srv's Serve, Shutdown or Close methods itself.
//
// The server listens on srv.Addr (":http" if empty, ":https" with TLS). It
// serves TLS when srv.TLSConfig has certificates (Certificates,
// GetCertificate or GetConfigForClient set).
func New(srv *http.Server) *Server {
	if srv == nil {
		panic("httpserver: New: the *http.Server is nil")
	}
	s := &Server{
		srv:             srv,
		handler:         srv.Handler,
		userConnState:   srv.ConnState,
		userBaseContext: srv.BaseContext,
		changed:         make(chan struct{}, 1),
		conns:           make(map[*conn]struct{}),
		shutdown:        make(chan struct{}),
	}
	if s.handler == nil {
		s.handler = http.DefaultServeMux
	}
	if c := srv.TLSConfig; c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil) {
		s.tls = true
	}
	if srv.Protocols == nil && srv.TLSNextProto == nil {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = p
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.shutdownCtx, s.stopShutdown = context.WithCancel(context.Background())
	srv.Handler = http.HandlerFunc(s.serveHTTP)
	srv.ConnState = s.connState
	srv.BaseContext = s.baseContext
	return s
}

// String describes the server for errors and logs, such as "http :8080".
func (s *Server) String() string {
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + " " + s.addr()
}

func (s *Server) addr() string {
	if a := s.Addr(); a != nil {
		return a.String()
	}
	switch {
	case s.srv.Addr != "":
		return s.srv.Addr
	case s.tls:
		return ":https"
	}
	return ":http"
}

// Addr returns the address the server listens on, once Listen has
// succeeded, and nil before: with srv.Addr ":0" it tells which port the
// system chose.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Listen binds the server's address. An address in use is an error naming
// it, returned before the process can turn ready.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.addr())
	if err != nil {
		return fmt.Errorf("httpserver: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ln.Close()
		return errors.New("httpserver: Listen called after Close")
	}
	s.ln = &listener{Listener: ln, s: s}
	return nil
}

// Serve serves on the listener bound by Listen until the drain or Close
// stops it, and then returns nil.
func (s *Server) Serve() error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return errors.New("httpserver: Serve called before a successful Listen")
	}
	var err error
	if s.tls {
		err = s.srv.ServeTLS(ln, "", "")
	} else {
		err = s.srv.Serve(ln)
	}
	s.mu.Lock()
	stopped := s.stopped || s.closed
	s.mu.Unlock()
	if stopped || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("httpserver: serving %s: %w", s.addr(), err)
}

// LameDuck makes every response from now on ask its client to leave: HTTP/1
// responses carry "Connection: close" and HTTP/2 connections get a graceful
// GOAWAY. The server keeps accepting and serving.
func (s *Server) LameDuck() { s.lameDuck.Store(true) }

// Drain stops accepting, closes idle connections, lets requests in flight
// finish, and returns once no request is in flight and every connection is
// closed or has sent its last response, or ctx.Err() when ctx ends first.
func (s *Server) Drain(ctx context.Context) error {
	s.lameDuck.Store(true)
	s.tracker.Drain()
	s.draining.Store(true)
	s.mu.Lock()
	if s.ln != nil && !s.stopped {
		s.stopped = true
		s.ln.Close()
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		live := s.settleLocked()
		s.mu.Unlock()
		busy := s.tracker.InFlight().Total() > 0
		if live == 0 && !busy {
			return nil
		}
		var idle <-chan struct{}
		if busy {
			idle = s.tracker.Idle()
		}
		select {
		case <-idle:
		case <-s.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settleLocked closes the connections the drain need not wait for, starts
// the GOAWAY for idle HTTP/2 connections when it is safe, and returns how
// many connections the drain still waits for.
func (s *Server) settleLocked() int {
	live, h1 := 0, 0
	for c := range s.conns {
		switch {
		case c.done():
			continue
		case c.idleH1():
			c.closeLocked()
			continue
		case !c.h2:
			h1++
		}
		live++
	}
	if live > h1 && h1 == 0 && !s.goAway {
		// Shutdown sends every HTTP/2 connection a graceful GOAWAY. It also
		// drops any HTTP/1 request read after it begins, which is why it
		// waits until no HTTP/1 connection is left. Its own polling is not
		// waited for: the drain follows events, and Close stops it.
		s.goAway = true
		go func() {
			defer close(s.shutdown)
			s.srv.Shutdown(s.shutdownCtx) //nolint:errcheck // stopped by Close on purpose
		}()
	}
	return live
}

// Close closes the listener and every connection, hijacked ones included,
// cancels request contexts, and reports the work it cut: handlers still
// running, requests still being received, and hijacked connections.
func (s *Server) Close() lameduck.Counts {
	s.mu.Lock()
	if s.closed {
		cut := s.cut
		s.mu.Unlock()
		return cut
	}
	s.closed = true
	cut := s.tracker.InFlight()
	for c := range s.conns {
		if !c.done() && !c.h2 && (c.reading.Load() || c.early.Load()) && (c.state == http.StateNew || c.state == http.StateIdle) {
			cut.Requests++ // a request was arriving
		}
	}
	s.cut = cut
	if s.ln != nil && !s.stopped {
		s.stopped = true
		s.ln.Close()
	}
	hijacked := make([]*conn, 0)
	for c := range s.conns {
		if c.hijacked && !c.closed {
			hijacked = append(hijacked, c)
		}
	}
	goAway := s.goAway
	s.mu.Unlock()

	s.cancelBase()
	s.srv.Close() //nolint:errcheck // the listener is already closed
	for _, c := range hijacked {
		c.Close()
	}
	s.stopShutdown()
	if goAway {
		<-s.shutdown
	}
	return cut
}

// baseContext is the parent of every request context: Close cancels it.
func (s *Server) baseContext(l net.Listener) context.Context {
	if s.userBaseContext == nil {
		return s.baseCtx
	}
	ctx := s.userBaseContext(l)
	ctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(s.baseCtx, cancel)
	return ctx
}

// notify wakes the drain.
func (s *Server) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// connState follows net/http's connection states: HTTP/1 connections
// become active when a request has been read and idle once its response is
// written; HTTP/2 connections are active while they have streams.
func (s *Server) connState(nc net.Conn, state http.ConnState) {
	if c := connOf(nc); c != nil {
		s.mu.Lock()
		switch state {
		case http.StateClosed:
			c.closed = true
			delete(s.conns, c)
		case http.StateHijacked:
			if !c.hijacked {
				c.hijacked = true
				s.tracker.Start(lameduck.Conn)
			}
		case http.StateActive, http.StateIdle:
			c.state = state
			if tc, ok := nc.(*tls.Conn); ok && !c.h2 {
				// HTTP/2 connections are handed to the HTTP/2 server as a
				// *tls.Conn, a real one or, for h2c, one wrapping the plain
				// connection.
				c.h2 = !s.tls || tc.ConnectionState().NegotiatedProtocol == "h2"
			}
			c.reading.Store(false)
			if state == http.StateActive {
				c.early.Store(false)
			}
		}
		s.mu.Unlock()
		if s.draining.Load() {
			s.notify()
		}
	}
	if s.userConnState != nil {
		s.userConnState(nc, state)
	}
}

func connOf(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// listener registers every connection it accepts.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, s: l.s, state: http.StateNew}
	l.s.mu.Lock()
	l.s.conns[c] = struct{}{}
	l.s.mu.Unlock()
	return c, nil
}

// conn is an accepted connection and what the drain knows of it.
type conn struct {
	net.Conn
	s *Server

	// reading is set when bytes arrive and cleared when the connection
	// turns idle: an idle HTTP/1 connection with bytes read is receiving a
	// request, and must not be closed.
	reading atomic.Bool
	// early is set when net/http's background read, which watches for the
	// client going away while a handler runs, catches the first byte of the
	// next request: that happens before the connection turns idle, so it
	// outlives the idle transition and is cleared only once the next
	// request has been read.
	early atomic.Bool

	// Guarded by s.mu.
	state       http.ConnState // StateNew, StateActive or StateIdle
	h2          bool
	hijacked    bool
	closeWriter bool // the server half-closed it after its last response
	closed      bool
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		// net/http's background read is the only one-byte read of a
		// plain HTTP/1 connection: requests are read through a bufio.Reader.
		flag := &c.reading
		if len(p) == 1 {
			flag = &c.early
		}
		if !flag.Load() {
			flag.Store(true)
		}
	}
	return n, err
}

// CloseWrite is how net/http ends an HTTP/1 connection after a response
// with "Connection: close": the response is written, and the drain need not
// wait for the connection to close, which net/http does 500 ms later.
func (c *conn) CloseWrite() error {
	var err error
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		err = cw.CloseWrite()
	}
	c.s.mu.Lock()
	c.closeWriter = true
	c.s.mu.Unlock()
	if c.s.draining.Load() {
		c.s.notify()
	}
	return err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	s := c.s
	s.mu.Lock()
	hijackDone := c.hijacked && !c.closed
	c.closed = true
	delete(s.conns, c)
	s.mu.Unlock()
	if hijackDone {
		s.tracker.Done(lameduck.Conn)
	}
	if s.draining.Load() {
		s.notify()
	}
	return err
}

// closeLocked closes an idle connection for the drain.
func (c *conn) closeLocked() {
	c.closed = true
	delete(c.s.conns, c)
	c.Conn.Close()
}

// done reports whether the drain has nothing more to wait for on c.
// Guarded by s.mu.
func (c *conn) done() bool {
	return c.closed || (c.closeWriter && !c.hijacked)
}

// idleH1 reports whether c is an HTTP/1 connection with no request in
// flight and none arriving. Guarded by s.mu.
func (c *conn) idleH1() bool {
	if c.h2 || c.hijacked || c.reading.Load() || c.early.Load() {
		return false
	}
	if c.state != http.StateIdle && (c.state != http.StateNew || c.s.tls) {
		return false
	}
	// Bytes that arrived but that net/http has not read yet are a request
	// on its way too.
	return unread(c.Conn) == 0
}
