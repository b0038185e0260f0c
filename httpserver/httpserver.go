// Package httpserver runs a [net/http.Server] under a [lameduck.Coordinator]
// so that a rolling update fails no request.
//
//	ld.Register(httpserver.New(&http.Server{Addr: ":8080", Handler: mux}))
//
// [New] keeps the server's handler, timeouts and TLS configuration, and
// serves HTTP/1.1, HTTP/2 over TLS and HTTP/2 with prior knowledge (h2c),
// unless [net/http.Server.Protocols] says otherwise. [Admin] adds a server
// for the probes and metrics that answers until Run returns.
//
// A [Server] goes through the steps of [lameduck.Coordinator.Run]:
//
//  1. Lame duck, at the signal (or, while the pod is the last ready
//     endpoint of a Service, once another is: see
//     [lameduck.WithAdaptiveDrainDelay]): everything is still accepted and
//     served, but every response asks its client to leave. HTTP/1 responses carry
//     "Connection: close", those to requests that began before the signal
//     included. A stream whose header went out before the signal, such as
//     server-sent events, could not carry it: its connection ends with its
//     last bytes, so that the client reconnects elsewhere. HTTP/2
//     connections get a graceful GOAWAY, open ones at once,
//     idle ones included, new ones after their first response. Idle HTTP/1
//     connections are left alone: closing one races a client that has just
//     sent a request on it. A 101 Switching Protocols goes out as its
//     handler wrote it, with "Connection: Upgrade": the connection it
//     hijacks is the handler's.
//  2. Drain, after the delay: the listener stops accepting, after taking the
//     connections the kernel has already queued. Idle HTTP/1 connections
//     end, without a reset, and a request sent at that moment is never read;
//     requests in flight finish, and their connections close after the
//     response; HTTP/2 connections end one round trip after their last
//     response. Websockets and event streams leave at their turns, spread
//     over the departure window (see [Server.Departures]). Drain returns
//     as soon as the last response is written and the last connection has
//     ended.
//  3. Close, at the drain deadline: request contexts are canceled and every
//     connection is closed, hijacked ones included; the handlers still
//     running, requests still being received and hijacked connections are
//     reported as cut ([lameduck.ErrCut]).
//
// A websocket handler selects on [lameduck.Leaving] of its request's
// context and closes its connection with code 1012 (service restart) when
// it is closed; an event stream handler needs nothing more than to return
// when its request's context ends. Other long-lived responses finish in the
// drain or are cut at the deadline.
//
// Limits:
//
//   - Ending thousands of idle HTTP/1 connections costs the kernel tens of
//     microseconds each: 5,000 end a few hundred milliseconds into the drain.
//   - An HTTP/2 client that does not acknowledge the PING after the GOAWAY
//     within a second has its connection ended without it; one that does not
//     close its end after the final GOAWAY holds it for up to a second.
//   - An HTTP/2 server of your own in TLSNextProto without an
//     "unencrypted_http2" entry gives its connections its own GOAWAY and
//     timers, through Shutdown.
//   - Handlers get a wrapped ResponseWriter: it implements [http.Flusher],
//     [http.Hijacker] (HTTP/1), [io.ReaderFrom] (HTTP/1) and Unwrap for
//     [http.ResponseController], but not [http.CloseNotifier] or
//     [http.Pusher].
//
// How the adapter ends connections without a reset, and why: [docs/http.md].
//
// [docs/http.md]: https://github.com/lameduck/lameduck/blob/main/docs/http.md
package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// Server runs an *http.Server as a [lameduck.Server]. Create it with [New].
type Server struct {
	srv     *http.Server
	handler http.Handler // the user's handler
	tls     bool

	// Hooks the user had set on srv, which ours call.
	userConnState   func(net.Conn, http.ConnState)
	userBaseContext func(net.Listener) context.Context
	userConnContext func(context.Context, net.Conn) context.Context

	// baseCtx is the parent of every request context; Close cancels it.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	tracker    inflight.Tracker
	departures lameduck.Departures // of upgraded connections and event streams (departures.go)
	arrivals   inflight.Arrivals   // the connections of the lame-duck phase, for LameDuck's arrived (writer.go)
	lameDuck   atomic.Bool         // responses carry Connection: close
	draining   atomic.Bool         // the drain has begun: connection events wake it
	// acksOptional is set once the drain has waited ackWait for HTTP/2
	// clients to acknowledge their PING.
	acksOptional atomic.Bool

	// changed wakes the drain when a connection changes state.
	changed chan struct{}

	mu sync.Mutex
	// Guarded by mu.
	ln      *listener // nil until Listen succeeds
	serving bool      // Serve has begun accepting on ln
	stopped bool      // Drain or Close stopped ln: Serve returns nil
	conns   map[*conn]struct{}
	// live counts the connections in conns that the drain waits for (see
	// conn.done); foreignH2 those of them that speak HTTP/2 without an
	// h2Conn (see wrapHTTP2).
	live      int
	foreignH2 int
	ackTimer  *time.Timer // ends the wait for PING acknowledgements (see ackWait)
	goAway    bool        // Shutdown has been started for net/http's GOAWAY
	closed    bool
	cut       inflight.Counts
	shutdown  chan struct{} // closed when the Shutdown started for GOAWAY returns

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
		userConnContext: srv.ConnContext,
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
	srv.ConnContext = s.connContext
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
	s.ln = &listener{Listener: ln, s: s, done: make(chan struct{})}
	return nil
}

// Serve serves on the listener bound by Listen until the drain or Close
// stops it, and then returns nil.
func (s *Server) Serve() error {
	s.mu.Lock()
	ln := s.ln
	s.serving = ln != nil
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
	// Nothing accepts any more, whatever made Serve return: a drain
	// waiting for queued connections must not wait for it.
	ln.Close()
	s.mu.Lock()
	stopped := s.stopped || s.closed
	s.mu.Unlock()
	if stopped || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("httpserver: serving %s: %w", s.addr(), err)
}

// LameDuck makes every response from now on ask its client to leave: HTTP/1
// responses carry "Connection: close", and HTTP/2 connections, idle ones
// included, get a graceful GOAWAY. The server keeps accepting and serving,
// and calls arrived once for each connection accepted from now on, when its
// first request that is not a probe begins (see [lameduck.Server]): the
// kubelet's probes ([inflight.IsProbe]) and requests that a ServeMux
// routes to a probe handler ([inflight.Prober]), such as the Coordinator's,
// say nothing about routing.
// Each such connection is asked to leave after its first response, so a
// load balancer that still routes here shows as new connections.
func (s *Server) LameDuck(arrived func()) {
	s.arrivals.Begin(arrived)
	s.lameDuck.Store(true)
	s.eachH2((*h2Conn).goAway)
}

// eachH2 calls f on every HTTP/2 connection whose frames the adapter
// follows, outside s.mu.
func (s *Server) eachH2(f func(*h2Conn)) {
	var h2 []*h2Conn
	s.mu.Lock()
	for c := range s.conns {
		if c.h2c != nil && !c.closed {
			h2 = append(h2, c.h2c)
		}
	}
	s.mu.Unlock()
	for _, h := range h2 {
		f(h)
	}
}

// Drain stops accepting, closes idle connections, lets requests in flight
// finish, and returns once no request is in flight and every connection is
// closed or has sent its last response, or ctx.Err() when ctx ends first.
func (s *Server) Drain(ctx context.Context) error {
	s.lameDuck.Store(true)
	s.mu.Lock()
	s.draining.Store(true)
	accepting := closedChan
	if s.ln != nil {
		accepting = s.ln.done
		if !s.stopped {
			s.stopped = true
			if s.serving {
				s.ln.stop()
			} else {
				s.ln.Close() // nobody will accept what is queued
			}
		}
	}
	// From now on connection events end idle connections as they turn
	// idle (see connState); these are the ones idle already.
	var h2 []*h2Conn
	var idle []*conn
	for c := range s.conns {
		switch {
		case c.done():
		case c.h2c != nil:
			h2 = append(h2, c.h2c)
		case c.idleH1():
			idle = append(idle, c)
		}
	}
	if !s.closed && s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(ackWait, s.stopWaitingForAcks)
	}
	s.mu.Unlock()
	// Outside the lock: the readers woken take it to report the end.
	for _, c := range idle {
		c.endIfIdle()
	}
	for _, h := range h2 {
		h.goAway()
		if h.waitedForAck() {
			h.stopWaitingForAck()
		}
	}
	for {
		s.mu.Lock()
		live := s.live
		if s.foreignH2 > 0 {
			s.startShutdownLocked()
		}
		s.mu.Unlock()
		busy := s.tracker.InFlight().Total() > 0
		if live == 0 && !busy && inflight.IsClosed(accepting) {
			return nil
		}
		var idle <-chan struct{}
		if busy {
			idle = s.tracker.Idle()
		}
		select {
		case <-idle:
		case <-s.changed: // connection events, and the listener closing
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopWaitingForAcks lets the HTTP/2 connections still waiting for their
// client's acknowledgement end without it (see ackWait).
func (s *Server) stopWaitingForAcks() {
	s.acksOptional.Store(true)
	s.eachH2((*h2Conn).stopWaitingForAck)
}

// startShutdownLocked starts net/http's Shutdown once no HTTP/1
// connection is left, for the HTTP/2 connections whose frames the adapter
// does not follow (see wrapHTTP2).
// Shutdown sends each of them that server's GOAWAY, after which it closes
// the connection once it has no stream, a second later (golang/go#18701).
// Shutdown also drops any HTTP/1 request read after it begins
// (golang/go#75591), hence the wait. Its own polling is not waited for:
// the drain follows events, and Close stops it.
func (s *Server) startShutdownLocked() {
	if s.goAway {
		return
	}
	for c := range s.conns {
		if !c.done() && !c.h2 {
			return
		}
	}
	s.goAway = true
	go func() {
		defer close(s.shutdown)
		s.srv.Shutdown(s.shutdownCtx) //nolint:errcheck // stopped by Close on purpose
	}()
}

// Close closes the listener and every connection, hijacked ones included,
// cancels request contexts, and reports the work it cut: handlers still
// running, requests still being received, and hijacked connections.
func (s *Server) Close() inflight.Counts {
	s.mu.Lock()
	if s.closed {
		cut := s.cut
		s.mu.Unlock()
		return cut
	}
	s.closed = true
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	cut := s.tracker.InFlight()
	for c := range s.conns {
		// A request was arriving: net/http has read bytes of it, or they
		// wait in the kernel for net/http's reader, which may not have run
		// since the connection was accepted.
		if !c.done() && c.betweenRequests() && (c.requestArriving() || unread(c.Conn) > 0) {
			cut.Requests++
		}
	}
	s.cut = cut
	if s.ln != nil {
		s.stopped = true
		s.ln.Close() // even if Drain's stop is still taking queued connections
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

// InFlight returns the work the server has in flight now: requests being
// handled, streaming responses, and hijacked connections. Exporters read it
// through [lameduck.Coordinator.Status].
func (s *Server) InFlight() inflight.Counts { return s.tracker.InFlight() }

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

// connKey is the request context key of the *conn a request arrived on.
type connKey struct{}

// connContext lets a request find its connection, for the lame duck.
func (s *Server) connContext(ctx context.Context, nc net.Conn) context.Context {
	if s.userConnContext != nil {
		ctx = s.userConnContext(ctx, nc)
	}
	if c := connOf(nc); c != nil {
		ctx = context.WithValue(ctx, connKey{}, c)
	}
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
		case http.StateNew:
			if tc, ok := nc.(*tls.Conn); ok {
				c.tc.Store(tc)
			}
			if s.draining.Load() && c.idleH1() {
				// Accepted from the queue after the drain began: served
				// if its request has arrived, ended otherwise.
				c.endIfIdle()
			}
		case http.StateClosed:
			c.closed = true
			delete(s.conns, c)
		case http.StateHijacked:
			if !c.hijacked {
				c.hijacked = true
				s.tracker.Start(inflight.Conn)
			}
		case http.StateActive, http.StateIdle:
			c.state = state
			if tc, ok := nc.(*tls.Conn); ok && s.tls && !c.h2 && tc.ConnectionState().NegotiatedProtocol == "h2" {
				// Served by an HTTP/2 server of the user's own.
				c.h2 = true
				if c.counted {
					s.foreignH2++
				}
			}
			c.reading.Store(false)
			if state == http.StateActive {
				c.early.Store(false)
			}
			if state == http.StateIdle {
				leaving := c.leaving.Load()
				if leaving {
					c.leaving.Store(false)
				}
				switch {
				case (leaving || s.draining.Load()) && c.idleH1():
					c.endIfIdle()
				case leaving:
					// The next request has begun to arrive, as the
					// client pipelined it: it is served, and its
					// response asks the client to leave.
					c.uncork()
				}
			}
		}
		c.countLocked()
		s.mu.Unlock()
	}
	if s.userConnState != nil {
		s.userConnState(userConn(nc), state)
	}
}

// connOf finds the *conn under what net/http hands its hooks: the *conn
// itself, a *tls.Conn, or the h2Conn of an HTTP/2 connection.
func connOf(nc net.Conn) *conn {
	switch h := nc.(type) {
	case *h2Conn:
		return h.c
	case h2TLSConn:
		return h.c
	case *tls.Conn:
		nc = h.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// userConn is the connection the user's ConnState hook sees: the *tls.Conn
// or the accepted connection, as without the adapter's h2Conn.
func userConn(nc net.Conn) net.Conn {
	switch h := nc.(type) {
	case *h2Conn:
		return h.Conn
	case h2TLSConn:
		return h.Conn
	}
	return nc
}

// listener registers every connection it accepts, and stops accepting
// without resetting the connections the kernel has already queued.
type listener struct {
	net.Listener
	s *Server

	wrapOnce  sync.Once
	stopping  atomic.Bool
	closeOnce sync.Once
	done      chan struct{} // closed once the listener is closed
}

// queuedWait is how long Accept waits for a connection once the listener is
// stopping, where the length of the kernel's accept queue is unknown (see
// queued): connections already queued come at once, and when none does,
// the listener closes.
const queuedWait = time.Millisecond

// stop makes Accept take the connections already queued, then close the
// listener. Closing it at once would make the kernel reset them, failing
// requests their clients have already sent: the clients of connections
// accepted by the kernel just before the drain began.
func (l *listener) stop() {
	l.stopping.Store(true)
	// Wake the Accept in progress.
	if l.setDeadline(time.Now()) != nil {
		l.Close()
	}
}

func (l *listener) Accept() (net.Conn, error) {
	// net/http has configured HTTP/2 by the time it first accepts.
	l.wrapOnce.Do(l.s.wrapHTTP2)
	for {
		stopping := l.stopping.Load()
		if stopping {
			if n, known := queued(l.Listener); known && n == 0 {
				l.Close()
				return nil, net.ErrClosed
			}
			l.setDeadline(time.Now().Add(queuedWait)) //nolint:errcheck // Accept's error tells
		}
		nc, err := l.Listener.Accept()
		if err == nil {
			// Accepted during the delay, it will be asked to leave after
			// its first response (see writer.commit and newH2Conn), and
			// counted as an arrival by its first request (see arrival).
			c := &conn{Conn: nc, s: l.s, state: http.StateNew, counted: true}
			if l.s.lameDuck.Load() && !l.s.draining.Load() {
				c.arrival.Expect()
			}
			l.s.mu.Lock()
			l.s.conns[c] = struct{}{}
			l.s.live++
			l.s.mu.Unlock()
			return c, nil
		}
		if !isTimeout(err) {
			return nil, err
		}
		if stopping {
			l.Close()
			return nil, net.ErrClosed
		}
		// stop woke this Accept: take what is queued.
	}
}

// setDeadline sets the deadline of Accept, if the listener has one.
func (l *listener) setDeadline(t time.Time) error {
	d, ok := l.Listener.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return errors.ErrUnsupported
	}
	return d.SetDeadline(t)
}

func (l *listener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		err = l.Listener.Close()
		close(l.done)
		if l.s.draining.Load() {
			l.s.notify()
		}
	})
	return err
}

// closedChan is a closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

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

	// idleCheck is set while the drain asks the reader whether c is idle
	// (see endIfIdle); the deadline net/http sets meanwhile waits in
	// readDeadline.
	idleCheck    atomic.Bool
	dmu          sync.Mutex
	readDeadline time.Time

	// alert is set while the last bytes written are one TLS alert record:
	// see SetWriteDeadline.
	alert atomic.Bool
	// tc is the *tls.Conn net/http serves over c, if any.
	tc atomic.Pointer[tls.Conn]

	// leaving is set when a stream that did not ask its client to leave
	// ends after the lame duck began (see leaveAfterResponse), and
	// cleared when c turns idle; corked is set while the end of that
	// stream may be held back in the kernel.
	leaving atomic.Bool
	corked  atomic.Bool

	// arrival is expected if c was accepted during the lame-duck phase,
	// until a request on it has counted it.
	arrival inflight.Arrival

	// Guarded by s.mu.
	state       http.ConnState // StateNew, StateActive or StateIdle
	h2          bool
	h2c         *h2Conn // the HTTP/2 connection over c, if net/http's HTTP/2 server serves it
	hijacked    bool
	closeWriter bool // the server half-closed it after its last HTTP/1 response
	closed      bool
	dep         *lameduck.Departure // of the request that hijacked it, if long-lived
	counted     bool                // counted in s.live
}

func (c *conn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if c.idleCheck.Load() {
			switch {
			case n > 0 || unread(c.Conn) > 0 || !c.stillIdle():
				// A request is arriving after all: serve it. The read
				// before this one may have taken bytes of it, or all of
				// it, since the drain found c idle: this read is then
				// the rest of it, or the background read net/http does
				// while the request's handler runs.
				c.endIdleCheck()
				c.uncork()
				if n == 0 {
					continue // the read timed out before taking it
				}
				err = nil
			case isTimeout(err):
				// Nothing came, nothing waits in the kernel: the client
				// is not sending; end the connection as if it had.
				c.lingerClose(p)
				return 0, io.EOF
			}
		}
		if n > 0 {
			// net/http's background read is the only one-byte read of a
			// plain HTTP/1 connection: requests are read through a
			// bufio.Reader.
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
}

// stillIdle reports whether c is still as the drain found it when it
// asked the reader to end c: an HTTP/1 connection between requests, with
// no byte of the next one read.
func (c *conn) stillIdle() bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.idleH1()
}

// endIfIdle ends c if it turns out to be idle: its reader, woken at once,
// returns EOF unless a byte of a request has come or waits in the kernel.
// Deciding in the reader leaves no moment where a request could have been
// taken from the kernel but not yet seen: only a request still on the
// network can meet a closing connection, which no server can prevent.
func (c *conn) endIfIdle() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.idleCheck.Load() {
		return
	}
	c.idleCheck.Store(true)
	c.Conn.SetReadDeadline(time.Unix(1, 0)) //nolint:errcheck // a broken connection ends anyway
}

// leaveAfterResponse makes c end right after the HTTP/1 response whose
// handler is returning: a stream, such as server-sent events, whose header
// went out before the lame duck, without "Connection: close". Left open,
// the connection would take the client's reconnect straight back to this
// pod, for another stream.
//
// Ending a keep-alive connection races a client that sends a request on
// it. c is corked, so that the end of the response, which net/http writes
// once the handler has returned (the final chunk), stays in the kernel
// until c turns idle; its reader then ends c as the drain ends an idle
// connection (see endIfIdle), and the FIN goes out in the segment that
// carries the last bytes of the response. A client that looks at its
// connection before reusing it, as browsers and curl do, or reconnects
// later, as an EventSource does after its retry delay, has seen the end;
// Go's Transport, which can hand the connection to a request before its
// reader has seen the end, retries a GET that meets it. A client that
// sends its next request right behind a response without looking, as load
// generators do, would meet the FIN: that is why only streams, which such
// clients do not read, end with their response, and an ordinary response
// leaves its connection open for the next request, which is answered with
// "Connection: close". Where TCP_CORK is missing (outside Linux), or the
// handler flushed the last bytes of a stream of known length itself, the
// FIN follows the last bytes within microseconds.
//
// Called from the goroutine serving c, which then finishes the response
// and reports c idle (see connState).
func (c *conn) leaveAfterResponse() {
	c.corked.Store(cork(c.Conn, true))
	c.leaving.Store(true)
}

// uncork sends what c holds back, if anything.
func (c *conn) uncork() {
	if c.corked.Load() {
		c.corked.Store(false)
		cork(c.Conn, false)
	}
}

// lingerClose ends an idle connection: it half-closes it, and reads, and
// drops, what the client still sends until it closes its end or
// lingerWait passes. A request the client sent at that very moment thus
// meets an orderly end of the connection, before any byte of a response,
// rather than a TCP reset, and is never read; and the drain, which has
// nothing more to wait for once the half-close is out, need not wait for
// the close, which takes the kernel longer.
func (c *conn) lingerClose(buf []byte) {
	if tc := c.tc.Load(); tc != nil {
		// The reader holds the *tls.Conn's input, not its output: the
		// close_notify alert can go out, ahead of the half-close.
		tc.CloseWrite() //nolint:errcheck // fails only before the handshake
	}
	c.CloseWrite()                                     //nolint:errcheck // a broken connection ends anyway
	c.Conn.SetReadDeadline(time.Now().Add(lingerWait)) //nolint:errcheck // the read fails then
	for {
		if _, err := c.Conn.Read(buf); err != nil {
			return
		}
	}
}

// endIdleCheck gives the reader back the deadline net/http last set.
func (c *conn) endIdleCheck() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.idleCheck.Store(false)
	c.Conn.SetReadDeadline(c.readDeadline) //nolint:errcheck
}

// SetReadDeadline records net/http's deadline, and applies it unless an
// idle check holds the reader.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDeadline = t
	if c.idleCheck.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Write writes p, noting whether it is one TLS alert record.
func (c *conn) Write(p []byte) (int, error) {
	if c.s.tls {
		c.alert.Store(isAlertRecord(p))
	}
	return c.Conn.Write(p)
}

// isAlertRecord reports whether p is one TLS record that can be an alert:
// its type says so up to TLS 1.2; TLS 1.3 encrypts it, as an application
// data record of 19 bytes (2 for the alert, 1 for the inner type, 16 for
// the AEAD tag).
func isAlertRecord(p []byte) bool {
	const alert, applicationData = 21, 23
	if len(p) < 5 || len(p) != 5+int(p[3])<<8|int(p[4]) {
		return false
	}
	return p[0] == alert || p[0] == applicationData && len(p) == 5+19
}

// SetWriteDeadline sees the end of an HTTP/1 connection over TLS.
// net/http ends one, after a response carrying "Connection: close", with
// a close_notify alert (tls.Conn.CloseWrite), after which crypto/tls sets
// a write deadline in the past so that nothing more is written; it then
// waits 500 ms before it closes the connection (see rstAvoidanceDelay in
// net/http). The adapter sends the TCP half-close right after the alert,
// so that the client sees the end at once, and the drain need not wait.
func (c *conn) SetWriteDeadline(t time.Time) error {
	err := c.Conn.SetWriteDeadline(t)
	if c.s.tls && !t.IsZero() && !t.After(time.Now()) && c.alert.Load() {
		c.s.mu.Lock()
		h1 := !c.h2 && !c.hijacked
		c.s.mu.Unlock()
		if h1 {
			c.CloseWrite() //nolint:errcheck // a broken connection ends anyway
		}
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closeWriteTCP half-closes the TCP connection.
func (c *conn) closeWriteTCP() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseWrite is how net/http ends an HTTP/1 connection after a response
// with "Connection: close": the response is written, and the drain need not
// wait for the connection to close, which net/http does 500 ms later.
func (c *conn) CloseWrite() error {
	err := c.closeWriteTCP()
	c.s.mu.Lock()
	c.closeWriter = true
	c.countLocked()
	c.s.mu.Unlock()
	return err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	s := c.s
	s.mu.Lock()
	hijackDone := c.hijacked && !c.closed
	c.closed = true
	dep := c.dep
	c.dep = nil
	delete(s.conns, c)
	c.countLocked()
	s.mu.Unlock()
	if hijackDone {
		s.tracker.Done(inflight.Conn)
	}
	if dep != nil {
		dep.Done()
	}
	return err
}

// countLocked takes c out of s.live once the drain has nothing more to
// wait for on it, and wakes the drain. Guarded by s.mu.
func (c *conn) countLocked() {
	if !c.counted || !c.done() {
		return
	}
	c.counted = false
	c.s.live--
	if c.h2 && c.h2c == nil {
		c.s.foreignH2--
	}
	if c.s.draining.Load() {
		c.s.notify()
	}
}

// done reports whether the drain has nothing more to wait for on c.
// Guarded by s.mu.
func (c *conn) done() bool {
	return c.closed || (c.closeWriter && !c.hijacked)
}

// betweenRequests reports whether c is an HTTP/1 connection whose handler
// is not running: it has not read a request yet, or has answered its last.
// Guarded by s.mu.
func (c *conn) betweenRequests() bool {
	return !c.h2 && !c.hijacked && (c.state == http.StateIdle || c.state == http.StateNew)
}

// requestArriving reports whether bytes of a request have been read since c
// last turned idle.
func (c *conn) requestArriving() bool { return c.reading.Load() || c.early.Load() }

// idleH1 reports whether c is an HTTP/1 connection that has neither a
// request in flight nor bytes of one read. Guarded by s.mu.
func (c *conn) idleH1() bool { return c.betweenRequests() && !c.requestArriving() }
