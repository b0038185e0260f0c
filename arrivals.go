package lameduck

import (
	"sync"
	"time"
)

// Arrivals are one of the two kinds of evidence that end an adaptive drain
// delay (the other is the cluster's EndpointSlices, see endpoints.go).
// Once every client already connected has been told to leave (HTTP/1
// "Connection: close", HTTP/2 and gRPC GOAWAY) and has reconnected
// elsewhere, a new connection carries a request only if the load balancer
// still routes to this process. So the last arrival after the signal
// measures the load balancer's lag.

// An ArrivalReporter is a [Server] that counts, in [Arrivals], the
// connections accepted during the lame-duck phase that carry a request
// other than a probe, so that the Coordinator can measure the load
// balancer's lag and end an adaptive drain delay. The servers of packages
// httpserver and grpcserver are.
type ArrivalReporter interface {
	Server
	// Arrivals returns the server's Arrivals; it returns the same value
	// every time.
	Arrivals() *Arrivals
}

// Arrivals counts the connections that reach a server during the
// lame-duck phase, from its LameDuck call on, because a load balancer
// still routes to it. A server calls [Arrivals.Arrived] once for each
// connection accepted during the phase, when its first request other than
// a probe begins: the kubelet's probes and health checks say nothing about
// routing. The zero value is ready to use; an Arrivals must not be copied
// after first use.
type Arrivals struct {
	mu     sync.Mutex
	count  int       // connections arrived
	lastAt time.Time // when the last arrived
	// Set by the Coordinator while it watches: the clock that stamps
	// arrivals, and a channel poked on every arrival.
	clock Clock
	wake  chan struct{}
}

// Arrived records a connection that arrived during the lame-duck phase,
// now. It locks a mutex; call it once per connection.
func (a *Arrivals) Arrived() {
	a.mu.Lock()
	a.count++
	if a.clock != nil {
		a.lastAt = a.clock.Now()
	}
	wake := a.wake
	a.mu.Unlock()
	poke(wake)
}

// watch makes clock stamp arrivals, and every arrival poke wake.
func (a *Arrivals) watch(clock Clock, wake chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clock, a.wake = clock, wake
}

func (a *Arrivals) read() (count int, lastAt time.Time) {
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
