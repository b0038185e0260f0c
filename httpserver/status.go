package httpserver

import "github.com/lameduck/lameduck/inflight"

// InFlight returns the work the server has in flight now: requests being
// handled, streaming responses, and hijacked connections. Exporters read it
// through [lameduck.Coordinator.Status].
func (s *Server) InFlight() inflight.Counts { return s.tracker.InFlight() }
