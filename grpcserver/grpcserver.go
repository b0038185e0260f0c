// Package grpcserver runs a gRPC server under a [lameduck.Coordinator], so
// that a rolling update on Kubernetes fails no RPC.
//
//	ld, err := lameduck.New()
//	if err != nil {
//		log.Fatal(err)
//	}
//	s := grpcserver.New(ld, ":9090", grpc.Creds(creds)) // options go to grpc.NewServer
//	pb.RegisterGreeterServer(s, greeter)
//	reflection.Register(s)
//	ld.Register(s)
//	ld.MarkReady()
//	if err := ld.Run(context.Background()); err != nil {
//		log.Fatal(err)
//	}
//
// [grpc.Server.GracefulStop] on SIGTERM refuses the connections that load
// balancers still send to the pod, and waits without bound for streams that
// never end. A [Server] goes through the steps of [lameduck.Coordinator.Run]
// instead:
//
//  1. Listen binds the address, before anything turns ready. The health
//     service answers NOT_SERVING until [lameduck.Coordinator.MarkReady],
//     SERVING then.
//  2. LameDuck, at the signal (or, while the pod is the last ready endpoint
//     of a Service, once another is, see
//     [lameduck.WithAdaptiveDrainDelay]; health stays SERVING until then):
//     health turns NOT_SERVING for good, and every
//     open connection receives a graceful GOAWAY, so that its client
//     reconnects through the Service; RPCs in flight finish. New connections
//     are accepted and served for the whole drain delay, and each is sent a
//     GOAWAY of its own within about 100 ms of its arrival.
//  3. Drain, after the delay: the listener closes, every connection receives
//     a GOAWAY, open health Watch streams end, and the other streams leave
//     at their turns, spread over the departure window
//     ([lameduck.WithDepartureWindow]), each with UNAVAILABLE, so that
//     their clients reconnect elsewhere at a steady rate (see Streams
//     below). Drain returns as soon as the last connection is gone.
//  4. Close, at the drain deadline: every connection is closed,
//     [grpc.Server.Stop] cancels the RPCs' contexts, and the unary RPCs and
//     streams still in flight are reported as cut ([lameduck.ErrCut]).
//
// New registers the standard health service (grpc.health.v1), for
// Kubernetes' gRPC probe and grpc-health-probe. The overall service "" and
// every registered service follow the Coordinator as above, in Check and
// Watch alike, and answer NOT_SERVING while a readiness check
// ([lameduck.Coordinator.AddCheck]) fails, as /readyz answers 503.
// [Server.Health] sets one service's status apart.
//
// # Streams
//
// Every RPC in which the server streams, server-streaming and bidi, takes a
// turn to leave among the Coordinator's departures, except the health
// service's Watch, which ends as the drain begins. Its stream's context
// carries the turn, so that a handler can select on
// lameduck.Leaving(stream.Context()), and ends at the turn, with a cause
// that says so ([context.Cause]). Whatever error the handler then returns —
// the context's, a status made from it, a failed call's — its client sees
// UNAVAILABLE, "lameduck: server shutting down; reconnect", which grpc-go's
// clients and retry policies take as "try again", rather than CANCELLED or
// UNKNOWN, which they take as final; its connection has received a GOAWAY
// and the listener is closed, so it reconnects through the load balancer to
// a pod that stays. So a handler that returns on ctx.Done needs no change;
// one that selects on Leaving can say more, such as where to resume. A
// handler that returns nil after its turn ends its stream OK, which its
// client takes as the stream's natural end, not as a cue to reconnect.
//
//	for {
//		select {
//		case <-lameduck.Leaving(ctx):
//			// Its turn: an UNAVAILABLE of the handler's own reaches the
//			// client as it is.
//			return status.Error(codes.Unavailable, "restarting; resume after "+lastID)
//		case <-ctx.Done():
//			return ctx.Err() // UNAVAILABLE at its turn, as any error
//		case ev := <-events:
//			if err := stream.Send(ev); err != nil {
//				return err
//			}
//			lastID = ev.Id
//		}
//	}
//
// Streams that begin during the shutdown take turns too, after the others.
// How the streams left is in [lameduck.Event].Departures: told to leave,
// left by themselves before their turn.
//
// Client-streaming RPCs take no turn: their one response, at the end, is
// their whole result, and nothing tells the client what the server received,
// so ending one at a turn would lose all that its client sent. They finish
// in the drain as unary RPCs do, or are cut at the deadline.
//
// # Limits
//
//   - grpc-go does not set TCP_USER_TIMEOUT on the connections, which reach
//     it wrapped: a peer that vanishes is detected by keepalive pings
//     ([google.golang.org/grpc/keepalive]), not by the kernel.
//   - The options given to [New] apply to every grpc.Server the Server
//     builds, one more at the signal and at each GOAWAY during the delay.
//   - Once the drain has begun, a connection silent for a second after it
//     was accepted, such as a TCP health checker's, is closed.
//   - Close does not wait for Stop, which blocks behind a handler that
//     ignores its context (grpc-go#9393): that handler runs on after Run
//     returns.
//   - Thousands of idle connections over TLS can outlast a short delay and
//     end early in the drain.
//
// How the connections are moved, why, and what was measured: [docs/grpc.md].
//
// [docs/grpc.md]: https://github.com/lameduck/lameduck/blob/main/docs/grpc.md
package grpcserver

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// A Server is a gRPC server run by a [lameduck.Coordinator]: it implements
// [lameduck.Server], and [grpc.ServiceRegistrar] and GetServiceInfo like a
// [grpc.Server], so that generated Register functions and
// [google.golang.org/grpc/reflection.Register] accept it. Create it with
// [New]; the zero value is not usable.
type Server struct {
	ld     *lameduck.Coordinator
	addr   string
	opts   []grpc.ServerOption
	health *health.Server
	hsvc   *healthService
	work   inflight.Tracker // unary RPCs and streams in flight, for Close's report
	// arrivals are the connections accepted during the lame-duck phase
	// that carry an RPC other than a probe, for what LameDuck is given.
	arrivals inflight.Arrivals
	// departures are the streams that take turns to leave (departures.go).
	departures lameduck.Departures

	stopWatches context.CancelFunc // ends health Watch streams: at Drain and Close
	shutdown    chan struct{}      // closed at the first of LameDuck, Drain, Close
	closing     chan struct{}      // closed by Close: connections being handed off are closed
	// drainBegan is closed once Drain has closed the listener and stopped
	// every generation gracefully: streams leave at their turns from then.
	drainBegan  chan struct{}
	watcherDone chan struct{} // closed when watchReadiness returns; nil if it never ran

	mu sync.Mutex
	// Guarded by mu.
	//
	// The Server's life is one ordered phase, and three facts that the
	// Coordinator's calls set in any order with it (the contract of
	// lameduck.Server). Their invariants:
	//
	//   - phase only moves forward; from phaseLameDuck on, shutdown is
	//     closed and health answers NOT_SERVING for good.
	//   - lis != nil implies listenCalled; serveCalled implies lis != nil.
	//   - stopAccept is closed exactly when the Server has closed lis:
	//     from phaseDraining on, or once a generation failed on its own.
	//   - acceptDone is set once no accept loop runs or ever will, so that
	//     no generation starts serving after Serve waits for them all
	//     (serving.Add never races serving.Wait): Listen failing or coming
	//     too late, the listener closed before Serve, the accept loop
	//     returning, or phaseClosed.
	//   - rotation is nil from phaseDraining on.
	phase        phase
	listenCalled bool
	serveCalled  bool
	acceptDone   bool
	// services are the RegisterService calls, in order, replayed on every
	// grpc.Server. Frozen once Listen is called.
	services []service
	// cur is the generation new connections are handed to; gens holds
	// the generations whose GracefulStop has not returned, cur included
	// until it stops.
	cur  *generation
	gens []*generation
	// lis is the bound listener: nil until Listen succeeds. stopAccept is
	// closed when lis is closed by the Server itself.
	lis        net.Listener
	stopAccept chan struct{}
	serveErr   error          // a generation's Serve failing on its own
	serving    sync.WaitGroup // running grpc.Server.Serve calls
	// rotation, while set, will ask the connections accepted during the
	// lame-duck phase to leave (see scheduleRotation).
	rotation *time.Timer

	connsMu sync.Mutex
	// conns are the accepted connections not closed yet; nil once Close
	// closed them all. timers close silent ones after the drain began.
	// lameDuckConns are those accepted during the lame-duck phase, by
	// their peer's address. Guarded by connsMu.
	conns         map[*conn]struct{}
	lameDuckConns map[string]*conn
	timers        []*time.Timer
}

// A phase is how far a Server's shutdown has gone. Phases only move
// forward, though a step may be skipped: Drain may come without LameDuck,
// and Close without either.
type phase uint8

const (
	phaseRunning  phase = iota // no shutdown step yet
	phaseLameDuck              // LameDuck: accepting, and rotating new connections away
	phaseDraining              // Drain: the listener closed, every generation stopping gracefully
	phaseClosed                // Close: every connection closed, every generation stopped
)

// service is one RegisterService call.
type service struct {
	desc *grpc.ServiceDesc
	impl any
}

// New returns a Server that will listen on addr, a TCP address such as
// ":9090" or "127.0.0.1:0" (an empty address, like ":0", lets the system
// choose the port; see [Server.Addr]), and serve gRPC with a [grpc.Server]
// created with opts. It registers the health service. Register services on
// it, then register it with ld.Register. New panics if ld is nil.
//
// Each grpc.Server the Server builds gets an interceptor that counts the
// RPCs in flight, for Close's report, and gives streams their turns to
// leave (see Streams in the package documentation). It runs after the interceptor of
// [grpc.UnaryInterceptor] or [grpc.StreamInterceptor], if opts has one, and
// before those of [grpc.ChainUnaryInterceptor] and
// [grpc.ChainStreamInterceptor].
func New(ld *lameduck.Coordinator, addr string, opts ...grpc.ServerOption) *Server {
	if ld == nil {
		panic("grpcserver: New: the coordinator is nil; create one with lameduck.New")
	}
	s := &Server{
		ld:         ld,
		addr:       addr,
		health:     health.NewServer(),
		shutdown:   make(chan struct{}),
		closing:    make(chan struct{}),
		drainBegan: make(chan struct{}),
		conns:      make(map[*conn]struct{}),
	}
	s.opts = append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.countUnary),
		grpc.ChainStreamInterceptor(s.countStream),
	}, opts...)
	// health.NewServer reports "" SERVING; nothing is ready yet.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(healthpb.Health_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	var stop context.Context
	stop, s.stopWatches = context.WithCancel(context.Background())
	s.hsvc = &healthService{Server: s.health, stop: stop, checks: newCheckState(ld)}
	s.cur = s.newGeneration()
	s.gens = []*generation{s.cur}
	return s
}

// RegisterService registers a service and its implementation, like
// [grpc.Server.RegisterService]; generated code calls it from
// RegisterXxxServer. The service's health status is NOT_SERVING until the
// Coordinator turns ready. Register every service before
// [lameduck.Coordinator.Run]: RegisterService panics once Listen has been
// called. The health service is already registered; set per-service status
// through [Server.Health].
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listenCalled || s.phase > phaseRunning {
		panic("grpcserver: RegisterService called after the server started; register every service before calling Coordinator.Run")
	}
	s.cur.srv.RegisterService(desc, impl)
	s.services = append(s.services, service{desc, impl})
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// GetServiceInfo returns the registered services, the health service
// included, like [grpc.Server.GetServiceInfo]; server reflection uses it.
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo {
	s.mu.Lock()
	g := s.cur
	s.mu.Unlock()
	return g.srv.GetServiceInfo()
}

// Health returns the health service. Its status follows the Coordinator
// (see the package documentation): when the Coordinator turns ready, the
// overall service "" and every registered service, the health service
// included, become SERVING, and at
// the shutdown every service becomes NOT_SERVING for good
// ([health.Server.Shutdown]). Use it to set the status of one service once
// the process is ready, not to Resume it. Readiness checks are applied to
// the answers, not to the statuses kept here: a SERVING status is answered
// NOT_SERVING while a check fails.
func (s *Server) Health() *health.Server { return s.health }

// Addr returns the address the Server listens on, with the port the system
// chose for a ":0" address, or nil before a successful Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// String describes the Server as "grpc " followed by its address: the
// bound one once listening, such as "grpc [::]:9090", as the servers of
// package httpserver do, and the one given to New before. The Coordinator
// names the Server so in logs, errors and Status.
func (s *Server) String() string {
	if a := s.Addr(); a != nil {
		return "grpc " + a.String()
	}
	if s.addr == "" {
		return "grpc :0"
	}
	return "grpc " + s.addr
}

// Listen binds the Server's address. An address in use is an error naming
// it, such as "listen tcp :9090: bind: address already in use". Listen is
// called once, by the Coordinator.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listenCalled {
		return errors.New("grpcserver: Listen called twice")
	}
	s.listenCalled = true
	if s.phase > phaseRunning {
		s.acceptDone = true
		return errors.New("grpcserver: Listen called after the shutdown began")
	}
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.acceptDone = true
		return err
	}
	s.lis, s.stopAccept = lis, make(chan struct{})
	s.cur.lis.addr = lis.Addr()
	s.watcherDone = make(chan struct{})
	go s.watchReadiness()
	return nil
}

// watchReadiness turns the health status SERVING once the Coordinator is
// ready, unless the shutdown began first.
func (s *Server) watchReadiness() {
	defer close(s.watcherDone)
	select {
	case <-s.ld.MarkedReady():
	case <-s.shutdown:
		return
	}
	s.mu.Lock()
	names := []string{healthpb.Health_ServiceDesc.ServiceName}
	for _, r := range s.services {
		names = append(names, r.desc.ServiceName)
	}
	s.mu.Unlock()
	// The overall status comes last: a client that sees "" SERVING finds
	// every service SERVING. If the shutdown began meanwhile, the health
	// server ignores these calls: Shutdown is a latch.
	for _, name := range append(names, "") {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

// Serve accepts and serves connections. It returns nil once the listener is
// closed and, after Drain, every grpc.Server has stopped, or, after Close,
// at once; it returns an error, at once, if accepting connections failed.
// It is called once, by the Coordinator, after a successful Listen.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.lis == nil || s.serveCalled {
		s.mu.Unlock()
		if s.serveCalled {
			return errors.New("grpcserver: Serve called twice")
		}
		return errors.New("grpcserver: Serve called without a successful Listen")
	}
	s.serveCalled = true
	if !s.acceptDone {
		for _, g := range s.gens {
			s.goServeLocked(g)
		}
	}
	lis, stop := s.lis, s.stopAccept
	s.mu.Unlock()

	err := s.accept(lis, stop)

	s.mu.Lock()
	s.acceptDone = true
	if err == nil {
		err = s.serveErr
	}
	s.mu.Unlock()
	if err != nil {
		// Failing on its own: return now, so that the Coordinator shuts
		// down. The grpc.Servers go on serving the open connections until
		// Drain and Close stop them.
		return err
	}
	// Wait for the grpc.Servers to stop, which Drain lets them do
	// gracefully, or for Close, which stops them without waiting (see
	// Close).
	stopped := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-s.closing:
	}
	return nil
}

// accept accepts connections on lis and hands them off until lis is closed
// by the Server (it then returns nil) or fails.
func (s *Server) accept(lis net.Listener, stop <-chan struct{}) error {
	var delay time.Duration // after a temporary error, as net/http and grpc-go do
	for {
		c, err := lis.Accept()
		if err != nil {
			select {
			case <-stop:
				return nil
			default:
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// Such as EMFILE: wait for descriptors to be freed.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
					continue
				case <-stop:
					t.Stop()
					return nil
				}
			}
			return err
		}
		delay = 0
		if wc := s.track(c); wc != nil {
			s.handOff(wc)
		}
	}
}

// track wraps and records an accepted connection, so that Drain and Close
// can close it; once Close has run, it closes c and returns nil.
func (s *Server) track(c net.Conn) *conn {
	s.mu.Lock()
	lameDuck := s.phase == phaseLameDuck
	s.mu.Unlock()
	wc := &conn{Conn: c, s: s, accepted: time.Now(), lameDuck: lameDuck}
	if lameDuck {
		wc.arrival.Expect()
	}
	s.connsMu.Lock()
	if s.conns == nil {
		s.connsMu.Unlock()
		c.Close()
		return nil
	}
	s.conns[wc] = struct{}{}
	if lameDuck {
		if s.lameDuckConns == nil {
			s.lameDuckConns = make(map[string]*conn)
		}
		s.lameDuckConns[c.RemoteAddr().String()] = wc
	}
	s.connsMu.Unlock()
	if lameDuck {
		s.scheduleRotation()
	}
	return wc
}

// forget removes a connection that is being closed.
func (s *Server) forget(c *conn) {
	s.connsMu.Lock()
	delete(s.conns, c)
	if c.lameDuck {
		delete(s.lameDuckConns, c.RemoteAddr().String())
	}
	s.connsMu.Unlock()
}

// handshakeGrace is how long after it was accepted a connection may stay
// silent once the drain has begun. grpc-go gives a new connection
// ConnectionTimeout (120 s by default) to send the HTTP/2 preface, and both
// GracefulStop and Stop wait for it meanwhile: a client that opens a TCP
// connection and sends nothing, such as some TCP health checkers, would
// hold the drain until the deadline. A gRPC client sends its preface (or
// its TLS ClientHello) as soon as it is connected, so a connection silent
// for this long carries no RPC, and closing it fails nothing.
const handshakeGrace = time.Second

// closeSilentConns closes, now or once handshakeGrace has passed since
// they were accepted, the connections on which no byte has arrived.
func (s *Server) closeSilentConns() {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for c := range s.conns {
		if c.heard.Load() {
			continue
		}
		wait := handshakeGrace - time.Since(c.accepted)
		if wait <= 0 {
			c.Conn.Close() // grpc-go's read fails, and it closes c
			continue
		}
		s.timers = append(s.timers, time.AfterFunc(wait, func() {
			if !c.heard.Load() {
				c.Conn.Close()
			}
		}))
	}
}

// closeConns closes every accepted connection. grpc-go's Stop waits for
// connections still in their handshake (up to ConnectionTimeout, 120 s by
// default): closing them first keeps Close from outliving the deadline.
func (s *Server) closeConns() {
	s.connsMu.Lock()
	conns, timers := s.conns, s.timers
	s.conns, s.timers, s.lameDuckConns = nil, nil, nil
	s.connsMu.Unlock()
	for _, t := range timers {
		t.Stop()
	}
	for c := range conns {
		c.Conn.Close()
	}
}

// LameDuck turns the health status NOT_SERVING for good, sends every open
// connection a graceful GOAWAY and goes on accepting and serving new
// connections. It returns at once. From now on it calls arrived once for
// each connection accepted, when its first RPC that is not a probe (a
// health check, or a call from the kubelet) begins (see [lameduck.Server]);
// each is asked to leave with a GOAWAY within about 100 ms of its
// acceptance, together with those accepted meanwhile.
func (s *Server) LameDuck(arrived func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase >= phaseLameDuck {
		return
	}
	s.phase = phaseLameDuck
	s.arrivals.Begin(arrived)
	s.beginShutdownLocked()
	s.rotateLocked()
}

// beginShutdownLocked turns health NOT_SERVING for good and stops waiting
// for readiness. Health first: watchReadiness may be setting SERVING, which
// the latch then ignores.
func (s *Server) beginShutdownLocked() {
	s.health.Shutdown()
	if !inflight.IsClosed(s.shutdown) {
		close(s.shutdown)
	}
}

// Drain closes the listener, sends every connection a GOAWAY, ends open
// health Watch streams, and waits for the RPCs in flight. It returns nil
// once every connection is gone, or ctx.Err() if ctx ends first; Close then
// cuts what remains.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.phase == phaseClosed {
		s.mu.Unlock()
		return nil
	}
	s.phase = phaseDraining
	s.stopRotationLocked()
	s.beginShutdownLocked()
	s.stopWatches()
	s.closeListenerLocked()
	gens := append([]*generation(nil), s.gens...)
	for _, g := range gens {
		g.gracefulStop()
	}
	if !inflight.IsClosed(s.drainBegan) {
		close(s.drainBegan)
	}
	s.mu.Unlock()
	s.closeSilentConns()

	for _, g := range gens {
		select {
		case <-g.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// closeListenerLocked stops accepting connections.
func (s *Server) closeListenerLocked() {
	if s.lis == nil {
		s.acceptDone = true
		return
	}
	if !inflight.IsClosed(s.stopAccept) {
		close(s.stopAccept)
		s.lis.Close()
	}
	if !s.serveCalled {
		s.acceptDone = true
	}
}

// Close stops the Server at once: it closes every connection and calls
// [grpc.Server.Stop], which cancels the contexts of the RPCs in flight. It
// returns the unary RPCs and streams that were still in flight, which is
// nothing after a clean drain. Neither Close nor Serve waits for Stop to
// return (see Limits in the package documentation). Calls after the first
// return zero Counts.
func (s *Server) Close() inflight.Counts {
	s.mu.Lock()
	if s.phase == phaseClosed {
		s.mu.Unlock()
		return inflight.Counts{}
	}
	s.phase = phaseClosed
	s.stopRotationLocked()
	cut := s.InFlight()
	s.beginShutdownLocked()
	s.stopWatches()
	close(s.closing)
	s.closeListenerLocked()
	s.acceptDone = true
	gens := append([]*generation(nil), s.gens...)
	watcherDone := s.watcherDone
	s.mu.Unlock()

	for _, g := range gens {
		g.lis.Close()
	}
	s.closeConns()
	for _, g := range gens {
		// In the background: Stop called while GracefulStop waits for a
		// handler that ignores its context blocks until that handler
		// returns (grpc-go#9393), and Close must not outlive the deadline.
		// Serve returns once every Stop has.
		go g.srv.Stop()
	}
	if watcherDone != nil {
		<-watcherDone
	}
	return cut
}

// InFlight returns the RPCs the Server has in flight now: unary RPCs as
// requests and streaming RPCs, health Watch streams included, as streams.
// Exporters read it through [lameduck.Coordinator.Status].
func (s *Server) InFlight() inflight.Counts { return s.work.InFlight() }

// countUnary counts a unary RPC in flight.
func (s *Server) countUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.work.Start(inflight.Request)
	if s.arrivals.Begun() {
		s.arrival(ctx, info.FullMethod)
	}
	defer s.work.Done(inflight.Request)
	return handler(ctx, req)
}

// countStream counts a streaming RPC in flight, and gives it its turn to
// leave if it takes one (see departs).
func (s *Server) countStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	s.work.Start(inflight.Stream)
	if s.arrivals.Begun() {
		s.arrival(ss.Context(), info.FullMethod)
	}
	defer s.work.Done(inflight.Stream)
	if departs(info) {
		return s.serveDeparting(srv, ss, handler)
	}
	return handler(srv, ss)
}

// arrival counts the connection of an RPC to method as an arrival (see
// Server.LameDuck) if it was accepted during the lame-duck phase, has not
// been counted yet, and the RPC is not a probe.
func (s *Server) arrival(ctx context.Context, method string) {
	if isProbe(ctx, method) {
		return
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return
	}
	s.connsMu.Lock()
	c := s.lameDuckConns[p.Addr.String()]
	s.connsMu.Unlock()
	if c != nil {
		s.arrivals.Arrive(&c.arrival)
	}
}

// isProbe reports whether an RPC to method says nothing about where the
// load balancer routes: a health check, or a call of the kubelet's gRPC
// probe ([inflight.IsProbe]).
func isProbe(ctx context.Context, method string) bool {
	if strings.HasPrefix(method, "/"+healthpb.Health_ServiceDesc.ServiceName+"/") {
		return true
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return slices.ContainsFunc(md.Get("user-agent"), inflight.IsProbe)
}
