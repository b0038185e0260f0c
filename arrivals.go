package lameduck

import (
	"sync"
	"time"

	"github.com/lameduck/lameduck/internal/testhook"
)

// Arrivals are one of the two kinds of evidence that end an adaptive drain
// delay (the other is the cluster's EndpointSlices, see endpoints.go).
// Once every client already connected has been told to leave (HTTP/1
// "Connection: close", HTTP/2 and gRPC GOAWAY) and has reconnected
// elsewhere, a new connection carries a request only if the load balancer
// still routes to this process. So the last arrival after the signal
// measures the load balancer's lag. A server reports each arrival by
// calling the function its LameDuck is given (see [Server]).

// arrivals counts the connections that reached one server during the
// lame-duck phase.
type arrivals struct {
	clock testhook.Clock
	wake  chan struct{} // poked on every arrival

	mu     sync.Mutex
	count  int       // connections arrived
	lastAt time.Time // when the last arrived
}

// arrived records a connection that arrived now. It is what a server's
// LameDuck is given to call.
func (a *arrivals) arrived() {
	now := a.clock.Now()
	a.mu.Lock()
	a.count++
	a.lastAt = now
	a.mu.Unlock()
	poke(a.wake)
}

func (a *arrivals) read() (count int, lastAt time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count, a.lastAt
}

// poke wakes whoever waits on ch, without blocking; a nil ch is no one.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
