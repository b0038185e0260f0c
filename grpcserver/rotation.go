package grpcserver

// The rotation of grpc.Servers, which works around how grpc-go shuts a
// server down.
//
// grpc-go sends a graceful GOAWAY only from GracefulStop, to every
// connection of a grpc.Server at once, and GracefulStop closes the
// server's listeners too: the connections that load balancers still send
// to a terminating pod are then refused, and their RPCs fail with
// UNAVAILABLE (grpc-go#4650). GracefulStop also waits without bound for
// RPCs that never end (grpc-go#1355, grpc-go#6921).
//
// So the Server owns the listener and hands each connection it accepts,
// through an in-memory listener (listener.go), to the grpc.Server of the
// moment: a generation. Rotating generations moves the connections off
// while the port stays open: a new grpc.Server, with the same options and
// services, takes the new connections, and the old one stops gracefully
// in the background, so that each of its connections gets a GOAWAY and
// its client reconnects through the load balancer. The Server rotates at
// the signal, and rotateAfter after each connection accepted during the
// delay; at the drain every generation stops gracefully, and Close calls
// Stop on each at the deadline rather than wait for GracefulStop. A
// connection that grpc-go would close unread, because its generation
// stopped as it was handed over (grpc-go's handleRawConn), goes to the
// next generation instead (see conn.Close).
//
// What was measured, and why 100 ms: docs/grpc.md.

import (
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// generation is one grpc.Server and the in-memory listener it serves.
type generation struct {
	srv     *grpc.Server
	lis     *pipeListener
	served  bool          // Serve was started; guarded by Server.mu
	stopped chan struct{} // closed once GracefulStop has returned
	forget  func()        // called then: drops it from Server.gens
	once    sync.Once
}

// gracefulStop stops g from accepting and calls GracefulStop in the
// background: every connection receives a GOAWAY and its RPCs finish.
func (g *generation) gracefulStop() {
	g.once.Do(func() {
		// Closing the in-memory listener first makes a hand-off in
		// progress go to the next generation rather than to this one.
		g.lis.Close()
		go func() {
			g.srv.GracefulStop()
			close(g.stopped)
			g.forget()
		}()
	})
}

// newGeneration builds a grpc.Server with the Server's options, the health
// service and every service registered so far.
func (s *Server) newGeneration() *generation {
	srv := grpc.NewServer(s.opts...)
	healthpb.RegisterHealthServer(srv, s.hsvc)
	for _, r := range s.services {
		srv.RegisterService(r.desc, r.impl)
	}
	var addr net.Addr
	if s.lis != nil {
		addr = s.lis.Addr()
	}
	g := &generation{srv: srv, lis: newPipeListener(addr), stopped: make(chan struct{})}
	// A stopped generation has no connection left and nothing more to
	// stop: forgetting it keeps a delay that rotates ten times a second
	// from holding hundreds of them.
	g.forget = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.gens = slices.DeleteFunc(s.gens, func(x *generation) bool { return x == g })
	}
	return g
}

// goServeLocked starts serving g's in-memory listener.
func (s *Server) goServeLocked(g *generation) {
	if g.served {
		return
	}
	g.served = true
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		err := g.srv.Serve(g.lis)
		// The in-memory listener only fails once closed, which happens
		// when the generation is stopped; anything else is a failure.
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			s.mu.Lock()
			if s.serveErr == nil {
				s.serveErr = err
			}
			s.closeListenerLocked()
			s.mu.Unlock()
		}
	}()
}

// handOff gives c to the current generation. If that generation stops
// before taking it, c goes to the next one; if there is none, c is closed.
func (s *Server) handOff(c *conn) {
	for {
		s.mu.Lock()
		g := s.cur
		s.mu.Unlock()
		if g.lis.deliver(c, s.closing) {
			return
		}
		s.mu.Lock()
		moved := s.cur != g
		s.mu.Unlock()
		if !moved {
			c.forceClose()
			return
		}
	}
}

// rotateLocked hands new connections to a new generation and stops the
// current one gracefully: its connections get a GOAWAY, their RPCs finish
// and their clients reconnect, through the load balancer, elsewhere.
func (s *Server) rotateLocked() {
	if s.lis == nil || s.acceptDone || s.phase >= phaseDraining {
		return // nothing accepts: Drain stops everything
	}
	old := s.cur
	s.cur = s.newGeneration()
	s.gens = append(s.gens, s.cur)
	if s.serveCalled {
		s.goServeLocked(s.cur)
	}
	old.gracefulStop()
}

// rotateAfter is how long the connections accepted during the lame-duck
// phase are served before they are asked to leave, all those of a batch
// together: long enough for a client to send the RPCs it connected for, so
// that it does not reconnect in a loop while the load balancer still
// routes here, short enough to end each connection well before the drain.
// An RPC sent as the GOAWAY arrives is still served (grpc-go's
// GracefulStop sends a first GOAWAY that refuses nothing, then a PING),
// or refused before it runs, which grpc-go clients retry transparently.
const rotateAfter = 100 * time.Millisecond

// scheduleRotation makes the connections accepted during the lame-duck
// phase leave rotateAfter from now, unless a rotation is
// already due.
func (s *Server) scheduleRotation() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rotation != nil || s.phase >= phaseDraining {
		return
	}
	s.rotation = time.AfterFunc(rotateAfter, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.rotation = nil
		s.rotateLocked()
	})
}

// stopRotationLocked cancels a rotation that is due: the drain or Close
// stops every generation anyway.
func (s *Server) stopRotationLocked() {
	if s.rotation != nil {
		s.rotation.Stop()
		s.rotation = nil
	}
}
