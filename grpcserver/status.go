package grpcserver

import "github.com/lameduck/lameduck/inflight"

// InFlight returns the RPCs the Server has in flight now: unary RPCs as
// requests and streaming RPCs, health Watch streams included, as streams.
// Exporters read it through [lameduck.Coordinator.Status].
func (s *Server) InFlight() inflight.Counts { return s.work.InFlight() }
