package grpcserver

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// A Server is a Departer: its streaming RPCs leave at their turns.
var _ lameduck.Departer = (*Server)(nil)

// Departures returns the Server's streaming RPCs that take turns to leave
// (see the package documentation); the Coordinator links them to its
// schedule when it runs the Server.
func (s *Server) Departures() *lameduck.Departures { return &s.departures }

// errLeaving is the cause of a departing stream's context: the handler can
// tell, through context.Cause, that its turn came rather than its client
// going away.
var errLeaving = errors.New("grpcserver: the stream's turn to leave came; the server is shutting down")

// leavingMessage is the message of the UNAVAILABLE status that a stream
// sent away at its turn ends with.
const leavingMessage = "lameduck: server shutting down; reconnect"

// departs reports whether a streaming RPC takes a turn to leave: every RPC
// in which the server streams, server-streaming and bidi alike, except the
// health service's Watch, which ends as the drain begins (see
// healthService.Watch).
//
// Client-streaming RPCs take none. Their one response, at the end, is
// their whole result: the server cannot acknowledge what it received, nor
// tell its client where to resume, so a stream ended at its turn would
// lose everything its client sent, where a server stream's messages (event
// ids, acknowledgments) let a client resume elsewhere losing nothing. They
// finish in the drain as unary RPCs do.
func departs(info *grpc.StreamServerInfo) bool {
	return info.IsServerStream && info.FullMethod != healthpb.Health_Watch_FullMethodName
}

// serveDeparting runs a streaming RPC that takes a turn to leave: its
// context carries its Departure, for lameduck.Leaving, and is canceled at
// its turn; an error the handler returns from its turn on reaches the
// client as UNAVAILABLE, which clients retry or reconnect on, rather than
// CANCELLED or UNKNOWN, which they take as final.
func (s *Server) serveDeparting(srv any, ss grpc.ServerStream, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	ctx, dep := s.departures.Join(ctx, func() { s.leave(cancel) })
	err := handler(srv, &departingStream{ServerStream: ss, ctx: ctx})
	dep.Done()
	if err == nil {
		return nil // the handler ended the stream cleanly: OK
	}
	if !inflight.IsClosed(dep.Leaving()) {
		return err // its own error, before the turn
	}
	// Whatever the error, the turn may have caused it: a context error, a
	// status made from one, a failed call wrapping it.
	if status.Code(err) == codes.Unavailable {
		return err
	}
	return status.Error(codes.Unavailable, leavingMessage)
}

// leave cancels a stream's context at its turn, once the drain has closed
// the listener and sent every connection a GOAWAY: a turn that comes just
// before, as the drain begins, would otherwise let the client's new
// stream come back through the open port. It does not block.
func (s *Server) leave(cancel context.CancelCauseFunc) {
	select {
	case <-s.drainBegan:
		cancel(errLeaving)
		return
	case <-s.closing:
		cancel(errLeaving)
		return
	default:
	}
	go func() {
		select {
		case <-s.drainBegan:
		case <-s.closing:
		}
		cancel(errLeaving)
	}()
}

// departingStream is a stream whose context carries its Departure and
// ends at its turn.
type departingStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (d *departingStream) Context() context.Context { return d.ctx }
