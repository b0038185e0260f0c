package inflight

import (
	"strings"
	"sync/atomic"
)

// The rest of a Server adapter's toolkit: what both of lameduck's adapters
// need besides counting work, and what a third would need too.

// A Prober is a handler that serves probes: a request it serves says
// nothing about where the load balancer routes, so an adapter does not
// count its connection as an arrival (see [Arrivals]). The handlers of
// lameduck's Coordinator.ReadinessHandler and LivenessHandler are Probers.
// An HTTP adapter asks its [net/http.ServeMux] which handler a request is
// routed to, and checks whether that handler is a Prober.
type Prober interface {
	// Probe marks the handler; it is never called.
	Probe()
}

// kubeProbeAgent begins the User-Agent of the kubelet's HTTP and gRPC
// probes, such as "kube-probe/1.31" or "kube-probe/1.31 grpc-go/1.72.0".
const kubeProbeAgent = "kube-probe/"

// IsProbe reports whether a request or RPC with this User-Agent is one of
// the kubelet's probes, HTTP and gRPC alike: its connection is not an
// arrival (see [Arrivals]).
func IsProbe(userAgent string) bool { return strings.HasPrefix(userAgent, kubeProbeAgent) }

// Arrivals counts the arrivals of a Server's lame-duck phase for the
// function given to its LameDuck method: the connections accepted during
// that phase, each counted once, by its first request or RPC that is not a
// probe. Every client connected before the phase has been asked to leave,
// so a new connection that carries work shows that the load balancer still
// routes to the server; lameduck's adaptive drain delay ends once none
// comes.
//
// An adapter calls [Arrivals.Begin] from LameDuck; gives each connection
// an [Arrival], on which it calls [Arrival.Expect] if the connection was
// accepted after Begin and before the drain; and, as each request or RPC
// begins, once [Arrivals.Begun] is true, calls [Arrivals.Arrive] unless
// the request is a probe ([IsProbe], [Prober], a health check).
//
// The zero value counts nothing until Begin; Begun, Arrive and Expect may
// be called from any goroutine.
type Arrivals struct {
	arrived atomic.Pointer[func()]
}

// Begin starts counting: from now on Arrive calls arrived, the function a
// Server's LameDuck is given. A nil arrived counts nothing. Calls after
// the first change nothing.
func (a *Arrivals) Begin(arrived func()) {
	if arrived == nil {
		arrived = func() {}
	}
	a.arrived.CompareAndSwap(nil, &arrived)
}

// Begun reports whether Begin has been called: before, no request needs
// looking at, which costs one atomic load.
func (a *Arrivals) Begun() bool { return a.arrived.Load() != nil }

// Arrive counts c as an arrival if Begin has been called, and c is
// expected and has not been counted yet. Call it as a request or RPC that
// is not a probe begins on the connection c belongs to; a nil c is a
// connection the adapter does not know, and is not counted.
func (a *Arrivals) Arrive(c *Arrival) {
	f := a.arrived.Load()
	if f == nil || c == nil || !c.state.CompareAndSwap(arrivalExpected, arrivalCounted) {
		return
	}
	(*f)()
}

// An Arrival is one connection's part in [Arrivals]. The zero value is a
// connection that is never counted: one accepted before the lame-duck
// phase, or once the drain has begun. An Arrival must not be copied after
// first use.
type Arrival struct {
	state atomic.Uint32 // arrivalNone, then arrivalExpected, then arrivalCounted
}

const (
	arrivalNone = iota
	arrivalExpected
	arrivalCounted
)

// Expect marks the connection as accepted during the lame-duck phase: its
// first request or RPC that is not a probe counts it.
func (c *Arrival) Expect() { c.state.CompareAndSwap(arrivalNone, arrivalExpected) }

// Expected reports whether the connection was accepted during the
// lame-duck phase and has not been counted yet: while it is false, nothing
// on the connection needs looking at.
func (c *Arrival) Expected() bool { return c.state.Load() == arrivalExpected }

// IsClosed reports whether ch is closed, without waiting; a nil ch never
// is. It is for channels that are closed and never sent on, such as those
// of [Tracker.Idle] and of lameduck's Departure.Leaving: on another, it
// would take a value.
func IsClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
