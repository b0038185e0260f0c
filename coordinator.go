package lameduck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/testhook"
)

// Readiness states, in the only order they can change.
const (
	stateStarting int32 = iota
	stateReady
	stateShuttingDown
)

// A Coordinator runs a process's servers and workers through the
// zero-downtime shutdown sequence (see [Coordinator.Run]) and answers its
// readiness and liveness probes. Create one with [New].
type Coordinator struct {
	opts  options
	log   *slog.Logger
	clock testhook.Clock

	// state is the readiness latch: stateStarting, then stateReady (by
	// MarkReady), then stateShuttingDown, never back.
	state atomic.Int32

	readyOnce sync.Once
	ready     chan struct{} // closed by MarkReady
	// phaseDone[p] is closed once Run has entered phase p or a later one,
	// PhaseLameDuck's at the first moment of the shutdown.
	phaseDone [numPhases]chan struct{}

	mu sync.Mutex
	// Guarded by mu. Registration is only allowed before Run.
	ran     bool
	servers []Server
	admins  []Server // RegisterAdmin's (admin.go)
	workers []work
	hooks   []work
	// observers are OnPhase's, called in this order.
	observers []func(Event)
	checks    []*check
	// serving is set once Run serves: MarkReady logs from then on, so
	// that the log follows the order of events.
	serving bool

	progress progress // status.go: what Phase and Status report

	// departures gives the servers' long-lived work its turns to leave
	// (departures.go).
	departures *schedule
}

// New returns a Coordinator configured by opts, or an error that says which
// setting is wrong and what to change.
//
// The settings must fit in the grace period: drain delay + hook timeout +
// safety margin must be shorter than the grace period, leaving time for the
// drain itself. The default hook timeout and safety margin shrink with a
// short grace period, so that the defaults accept any grace period and any
// drain delay that leave time to drain; when they do not fit, the error
// lists every setting that would.
func New(opts ...Option) (*Coordinator, error) {
	o := options{
		gracePeriod: DefaultGracePeriod,
		delay:       delayConfig{max: DefaultDrainDelay},
		signals:     []os.Signal{syscall.SIGTERM, os.Interrupt},
		logger:      slog.Default(),
		clock:       realClock{},
	}
	for _, opt := range opts {
		if opt == nil {
			return nil, errors.New("lameduck: New: an option is nil")
		}
		opt.apply(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	c := &Coordinator{
		opts:       o,
		log:        o.logger,
		clock:      o.clock,
		ready:      make(chan struct{}),
		progress:   progress{finalRead: make(chan struct{})},
		departures: newSchedule(o.clock),
	}
	for p := range c.phaseDone {
		c.phaseDone[p] = make(chan struct{})
	}
	return c, nil
}

// Register adds a server for [Coordinator.Run] to start and shut down.
// Servers are started in the order they are registered. It panics if s is
// nil or already registered, or if Run has been called.
func (c *Coordinator) Register(s Server) {
	c.register("Register", s, &c.servers)
}

// register adds s to list for method, which the user called: Register or
// RegisterAdmin.
func (c *Coordinator) register(method string, s Server, list *[]Server) {
	if s == nil {
		panic("lameduck: " + method + ": the server is nil")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveRunLocked(method)
	// A server registered twice, by either method, would Listen twice.
	// Pointers, which servers almost always are, compare safely; other
	// values might panic.
	if reflect.TypeOf(s).Kind() == reflect.Pointer {
		for _, x := range append(c.servers[:len(c.servers):len(c.servers)], c.admins...) {
			if x == s {
				panic("lameduck: " + method + ": the server is already registered; register each server once, with Register or RegisterAdmin")
			}
		}
	}
	*list = append(*list, s)
}

// Go adds a background worker, such as a queue consumer, for
// [Coordinator.Run] to start in its own goroutine once every server
// listens. The worker's context is done when the drain begins; Run waits for
// the worker to return, like a server's in-flight work, until the drain
// deadline. A worker returning an error shuts the process down and Run
// returns the error; a worker returning nil early is simply done. Logs and
// errors call the worker name, or, if name is empty, after the line that
// called Go:
//
//	ld.Go("orders consumer", consumer.Run)
//
// Go panics if f is nil or Run has been called.
func (c *Coordinator) Go(name string, f func(ctx context.Context) error) {
	c.addWork(&c.workers, "Go", "worker", name, f)
}

// OnShutdown adds a hook for [Coordinator.Run] to call after the drain, such
// as closing a database pool or flushing telemetry. Hooks run one at a time,
// in reverse order of registration, so that what was set up first is torn
// down last. Their context ends at the deadline: together they get the hook
// timeout (see [WithHookTimeout]) plus whatever the drain left unused. A
// hook that panics or returns an error does not stop the others; Run
// returns every error, joined. Logs and errors call the hook name, or, if
// name is empty, after the line that called OnShutdown:
//
//	ld.OnShutdown("db pool", pool.Shutdown)
//
// OnShutdown panics if f is nil or Run has been called.
func (c *Coordinator) OnShutdown(name string, f func(ctx context.Context) error) {
	c.addWork(&c.hooks, "OnShutdown", "hook", name, f)
}

// addWork adds f, a worker or a hook (what) named name, to list for
// method, which the user called.
func (c *Coordinator) addWork(list *[]work, method, what, name string, f func(context.Context) error) {
	if f == nil {
		panic("lameduck: " + method + ": the " + what + " is nil")
	}
	add(c, list, method, newWork(name, f))
}

// OnPhase adds an observer for [Coordinator.Run] to call with an [Event]
// each time it enters a phase, for exporting metrics:
//
//	ld.OnPhase(func(e lameduck.Event) { phaseGauge.Set(float64(e.Phase)) })
//
// Observers are called one at a time, in order of registration,
// synchronously from Run, which waits for each: an observer must return at
// once, except in [PhaseStopped], when it may flush what it exports,
// bounded by the deadline, as package otellameduck does.
//
// OnPhase panics if f is nil or Run has been called.
func (c *Coordinator) OnPhase(f func(Event)) {
	if f == nil {
		panic("lameduck: OnPhase: the observer is nil")
	}
	add(c, &c.observers, "OnPhase", f)
}

// add appends v to list, one of the Coordinator's registrations, for
// method, which the user called.
func add[T any](c *Coordinator, list *[]T, method string, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveRunLocked(method)
	*list = append(*list, v)
}

func (c *Coordinator) mustNotHaveRunLocked(method string) {
	if c.ran {
		panic("lameduck: " + method + " called after Run; register everything before calling Run")
	}
}

// MarkReady records that initialisation is done: from now on the readiness
// probe answers 200 while every check passes, until the shutdown begins.
// Call it before [Coordinator.Run] to be ready as soon as the servers
// listen, or from another goroutine once caches are warm and dependencies
// reachable. Calls after the first, and calls once the shutdown has begun,
// do nothing.
func (c *Coordinator) MarkReady() {
	c.readyOnce.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		// Before Run serves, the serving line says ready instead.
		if c.state.CompareAndSwap(stateStarting, stateReady) && c.serving {
			c.log.Info("lameduck: ready")
		}
		close(c.ready)
	})
}

// markServing records that every server listens and serves, and reports
// whether the process is ready.
func (c *Coordinator) markServing() (ready bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serving = true
	return c.state.Load() == stateReady
}

// beginShutdown turns readiness off for good and closes
// Entered(PhaseLameDuck); it reports whether the process was ready. Run
// calls it once.
func (c *Coordinator) beginShutdown() (wasReady bool) {
	wasReady = c.state.Swap(stateShuttingDown) == stateReady
	c.departures.beginShutdown()
	c.enteredUpTo(PhaseLameDuck)
	return wasReady
}

// enteredUpTo closes the channels of Entered up to phase p. Only Run's
// goroutine calls it.
func (c *Coordinator) enteredUpTo(p Phase) {
	for q := PhaseStarting; q <= p; q++ {
		if !inflight.IsClosed(c.phaseDone[q]) {
			close(c.phaseDone[q])
		}
	}
}

// MarkedReady returns a channel that is closed once
// [Coordinator.MarkReady] has been called, and stays closed: it says that
// initialisation is done, not that the process is ready now, which
// [Status].Ready and the readiness probe say. Servers that publish
// readiness themselves, such as the gRPC health service, wait on it.
func (c *Coordinator) MarkedReady() <-chan struct{} { return c.ready }

// Entered returns a channel that is closed once [Coordinator.Run] has
// entered phase p, or a later one, for work that must act on the shutdown:
//
//   - Entered(PhaseLameDuck) is closed as readiness turns off and the
//     drain delay begins: at the first moment of the shutdown, or, while
//     the process is the last endpoint of a Service, once another is ready
//     (see [WithAdaptiveDrainDelay]); and when Run fails to start.
//     Everything is still served during the delay, and the load balancers
//     may still route new clients here.
//   - Entered(PhaseDraining) is closed when the drain begins, after the
//     delay: work that is neither a request nor a long-lived connection,
//     such as a queue consumer's batch, should then finish what it is doing
//     and return, before the deadline cuts it.
//
// Websockets, event streams and streaming RPCs should not end on these
// channels, which close for all of them at once: their clients would all
// reconnect in the same instant. [Leaving] gives each its own turn.
//
// Where Run is now, and how long each phase took, is in
// [Coordinator.Status]. Entered panics if p is not a [Phase].
func (c *Coordinator) Entered(p Phase) <-chan struct{} {
	if p < 0 || int(p) >= len(c.phaseDone) {
		panic(fmt.Sprintf("lameduck: Entered: %v is not a phase; use PhaseStarting to PhaseStopped", p))
	}
	return c.phaseDone[p]
}
