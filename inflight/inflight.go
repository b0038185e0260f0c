// Package inflight counts the work a server has in flight: what the
// authors of lameduck's Server adapters need (packages httpserver and
// grpcserver are two), and the [Counts] in which lameduck reports what a
// shutdown cut.
//
// An adapter calls [Tracker.Start] when a request, stream or connection
// begins and [Tracker.Done] when it ends; its Drain waits on
// [Tracker.Idle], and its Close reports [Tracker.InFlight] as what it cut.
//
// The rest of the toolkit is what every adapter needs to tell lameduck
// about its lame-duck phase: [Arrivals] counts each connection accepted
// then once, as its LameDuck method must, and [IsProbe] and [Prober] tell
// the probes, which do not count, from the requests that do.
package inflight

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// A Kind is the kind of in-flight work a [Tracker] counts.
type Kind uint8

// The kinds of work a [Tracker] counts. They are reported separately in
// [Counts] because they are cut for different reasons: a request is usually
// short and only the deadline cuts it, a stream or a connection is long-lived
// and has been told to finish.
const (
	// Request is one HTTP request or one unary RPC being handled.
	Request Kind = iota
	// Stream is one streaming response (server-sent events, a flushed HTTP
	// response) or one streaming RPC.
	Stream
	// Conn is one connection taken over by a handler, such as a hijacked
	// HTTP/1 connection carrying a websocket.
	Conn

	numKinds = 3
)

// String names the kind as reports do: "request", "stream" or "connection".
func (k Kind) String() string {
	switch k {
	case Request:
		return "request"
	case Stream:
		return "stream"
	case Conn:
		return "connection"
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Counts counts work by kind: what is in flight ([Tracker.InFlight]) or what
// a server or the Coordinator cut at the shutdown deadline
// (a Server's Close, an Event's Cut). The zero value counts nothing.
type Counts struct {
	Requests int // HTTP requests and unary RPCs
	Streams  int // streaming responses and streaming RPCs
	Conns    int // hijacked and other tracked connections
	Workers  int // background workers (lameduck's Coordinator.Go) that did not return
}

// Add returns the sum of c and d.
func (c Counts) Add(d Counts) Counts {
	return Counts{
		Requests: c.Requests + d.Requests,
		Streams:  c.Streams + d.Streams,
		Conns:    c.Conns + d.Conns,
		Workers:  c.Workers + d.Workers,
	}
}

// Total returns the number of items counted, whatever their kind.
func (c Counts) Total() int { return c.Requests + c.Streams + c.Conns + c.Workers }

// String describes c for people, for example "2 requests, 1 stream".
// It returns "nothing" when c counts nothing.
func (c Counts) String() string {
	var parts []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(c.Requests, "request", "requests")
	add(c.Streams, "stream", "streams")
	add(c.Conns, "connection", "connections")
	add(c.Workers, "worker", "workers")
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// The three per-kind counters share one 64-bit word, so that starting or
// finishing a piece of work is a single atomic add and "nothing in flight"
// is a single comparison with zero. Each kind gets 21 bits.
const (
	kindBits = 21
	kindMax  = 1<<kindBits - 1
)

// A Tracker counts in-flight work so that a server can tell, without
// polling, when the last piece of it has finished. Server adapters call
// [Tracker.Start] when a request, stream or connection begins and
// [Tracker.Done] when it ends, and wait on [Tracker.Idle] in the drain.
//
// Start and Done cost one atomic add each and never allocate or lock until
// Idle has been called. A Tracker counts at most 2,097,151 items of each kind
// at once. The zero value is ready to use; a Tracker must not be copied after
// first use.
type Tracker struct {
	// word holds the three per-kind counters, kindBits bits each.
	word     atomic.Uint64
	watching atomic.Bool // Idle was called

	mu sync.Mutex
	// idle is closed while nothing is in flight once Idle was called; it is
	// replaced by a new channel when work starts again. Guarded by mu.
	idle       chan struct{}
	idleClosed bool
}

// Start records that a piece of work of kind k has begun. Every Start must be
// followed by exactly one [Tracker.Done] with the same kind.
func (t *Tracker) Start(k Kind) {
	shift := kindShift(k)
	if v := t.word.Add(1 << shift); (v>>shift)&kindMax == 0 {
		panic("inflight: Tracker.Start: more than 2097151 " + k.String() + "s in flight")
	}
}

// Done records that a piece of work of kind k, started with [Tracker.Start],
// has ended. It panics if no work of that kind is in flight.
func (t *Tracker) Done(k Kind) {
	shift := kindShift(k)
	v := t.word.Add(^uint64(1<<shift - 1)) // subtract 1<<shift
	if (v>>shift)&kindMax == kindMax {
		panic("inflight: Tracker.Done called for a " + k.String() + " that was not started")
	}
	if v == 0 && t.watching.Load() {
		t.signalIdle()
	}
}

// Move records that a piece of in-flight work changed kind, for example an
// HTTP response that turned into a stream when its handler flushed it. It is
// equivalent to Start(to) followed by Done(from), without a moment in
// between where the work is not counted.
func (t *Tracker) Move(from, to Kind) {
	if from == to {
		return
	}
	t.Start(to)
	t.Done(from)
}

// InFlight returns how much work is in flight now, by kind.
func (t *Tracker) InFlight() Counts {
	v := t.word.Load()
	return Counts{
		Requests: int(v >> kindShift(Request) & kindMax),
		Streams:  int(v >> kindShift(Stream) & kindMax),
		Conns:    int(v >> kindShift(Conn) & kindMax),
	}
}

// Idle returns a channel that is closed once nothing is in flight. Call it
// when the drain begins: from the first call on, Done closes the channel
// as the last piece of work ends (before it, Done costs one atomic add
// and nothing more). Work may still start after the channel was closed (a
// request that was already on its way): a caller woken by it should check
// [Tracker.InFlight], or call Idle again, which returns an open channel
// while work is in flight.
func (t *Tracker) Idle() <-chan struct{} {
	t.watching.Store(true)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	busy := t.word.Load() != 0
	switch {
	case t.idleClosed && busy:
		t.idle = make(chan struct{})
		t.idleClosed = false
	case !t.idleClosed && !busy:
		close(t.idle)
		t.idleClosed = true
	}
	return t.idle
}

func (t *Tracker) signalIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	// Check again under the lock: work may have started since the caller
	// saw zero, and Idle may have already replaced a closed channel.
	if !t.idleClosed && t.word.Load() == 0 {
		close(t.idle)
		t.idleClosed = true
	}
}

func (t *Tracker) initLocked() {
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
}

func kindShift(k Kind) uint {
	if k >= numKinds {
		panic(fmt.Sprintf("inflight: unknown Kind %d", k))
	}
	return uint(k) * kindBits
}
