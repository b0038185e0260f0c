package lameduck

import (
	"context"
	"fmt"

	"github.com/lameduck/lameduck/inflight"
)

// A Server is a network server run by a [Coordinator]: an HTTP server (see
// package httpserver), a gRPC server (package grpcserver), or any server
// that can be adapted to the steps below. Package inflight counts its
// work.
//
// The Coordinator calls, from its own goroutines:
//
//   - Listen once, before anything else. It binds the server's listeners and
//     returns at once; an address already in use is an error returned here,
//     so that [Coordinator.Run] fails before the process turns ready.
//   - Serve once, in a goroutine of its own, if Listen succeeded. Serve serves
//     connections on the bound listeners and blocks until the server stops.
//     It returns nil once LameDuck, Drain or Close stopped it, and an error
//     if the server failed on its own, which shuts the whole process down.
//   - LameDuck once, when the shutdown begins. The server keeps serving
//     everything, new connections included, but asks clients to move
//     elsewhere: it ends HTTP/1 keep-alive connections after their next
//     response and sends HTTP/2 and gRPC clients a graceful GOAWAY. LameDuck
//     returns at once. From then on the server calls arrived, from any
//     goroutine, once for each connection accepted since that carries a
//     request other than a probe, when that request begins: a load balancer
//     still routes here, which an adaptive drain delay waits out (see
//     [WithAdaptiveDrainDelay]). Probes and health checks do not count.
//   - Drain once, after the drain delay. The server stops accepting, lets
//     in-flight work finish, and returns nil once nothing is left, or
//     ctx.Err() when ctx ends first. Drain must detect the end by events,
//     not by polling, so that the process exits as soon as it can.
//   - Close once, last: it closes whatever is still open, makes Serve and
//     Drain return, and reports what it cut. After a clean drain it cuts
//     nothing and only releases resources.
//   - InFlight at any time, from any goroutine, for [Coordinator.Status]:
//     the work in flight now.
//
// Every method must be safe to call once Listen has returned, even with an
// error, in any order and concurrently with Serve: a server that fails to
// start, or a second signal, makes the Coordinator skip steps.
type Server interface {
	Listen() error
	Serve() error
	LameDuck(arrived func())
	Drain(ctx context.Context) error
	Close() inflight.Counts
	InFlight() inflight.Counts
}

func serverName(s Server, i int) string {
	if st, ok := s.(fmt.Stringer); ok {
		return st.String()
	}
	return fmt.Sprintf("server %d", i+1)
}
