package lameduck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lameduck/lameduck/inflight"
)

// ErrCut is returned, wrapped, by [Coordinator.Run] when in-flight work had
// to be cut: the shutdown deadline passed or a second signal forced the exit
// before every request, stream, connection and worker had finished.
var ErrCut = errors.New("lameduck: in-flight work was cut")

// Run starts every registered server and worker, waits for the shutdown
// signal, then shuts everything down without failing a request, and
// returns. It runs at most once.
//
// Run proceeds as follows:
//
//  1. Starting: Listen on every server, in registration order. If one
//     fails (say, the address is in use) Run closes the others, runs the
//     shutdown hooks, and returns that error: the process never turned
//     ready.
//  2. Serving: Serve on every server and start every worker. Readiness
//     answers 200 once [Coordinator.MarkReady] has been called and the
//     checks pass. Run waits for a shutdown signal (see [WithSignals]), for
//     ctx to end, or for a server or a worker to fail.
//  3. Lame duck: readiness answers 503, for good, and
//     Entered(PhaseLameDuck) is closed (see [Coordinator.Entered]): at
//     once, or, under an adaptive drain delay in Kubernetes, once the
//     process is no longer the last ready endpoint of one of its Services,
//     which it goes on serving as before until then (see
//     [WithAdaptiveDrainDelay]);
//     liveness keeps answering 200. Every server's LameDuck asks clients to
//     reconnect elsewhere while everything is still served, for the drain
//     delay (see [WithDrainDelay]), so that kube-proxy and load balancers
//     catch up. The delay is skipped if the process never became ready.
//  4. Draining: servers stop accepting and in-flight requests, RPCs and
//     streams finish; Entered(PhaseDraining) is closed and workers'
//     contexts are done. Long-lived work leaves at its turn, spread over
//     the departure window (see [WithDepartureWindow] and [Leaving]). Run
//     learns that the drain is over from events, not by polling, and moves
//     on at once.
//  5. If anything is left at the drain deadline — the grace period minus the
//     safety margin and the hook timeout, counted from the signal — servers
//     close it, and Run logs and returns what was cut.
//  6. Stopping: shutdown hooks (see [Coordinator.OnShutdown]) run in
//     reverse order, within the deadline: the grace period minus the safety
//     margin, counted from the signal.
//  7. Stopped: Run returns before that deadline, whatever servers, workers
//     and hooks do. If Run's own timers fire late, as on an overloaded
//     machine, Close still runs, within a quarter of the safety margin, so
//     that what is cut is still closed and reported.
//
// The shutdown starts at the first signal, whichever way it arrives: one
// of the Coordinator's own signals (see [WithSignals]), a value from
// [WithSignalChannel], or the end of ctx, as with [signal.NotifyContext] or
// a service's own signal handler that cancels ctx. One signal may arrive
// all these ways at once, and still counts once: only a second delivery
// forces the shutdown, skipping what remains of the delay, the drain and
// the hooks, and cutting what is in flight at once. Keep the Coordinator's
// own signals (the default) for that second signal to be seen.
//
// Run returns nil after a clean shutdown, whether a signal or the end of
// ctx started it. Otherwise it returns, joined, the failure that started the
// shutdown, an error wrapping [ErrCut] saying what was cut, and the hooks'
// errors. Register, Go, OnShutdown, OnPhase and AddCheck panic once Run has
// been called. Run returns an error at once, starting nothing, if ctx is nil
// or Run was called before.
func (c *Coordinator) Run(ctx context.Context) error {
	if ctx == nil {
		return errors.New("lameduck: Run: the context is nil; pass context.Background() or a context that ends the process")
	}
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return errors.New("lameduck: Run called twice; a Coordinator runs once, create another with New")
	}
	c.ran = true
	r := &run{
		c:         c,
		servers:   c.servers,
		admins:    newAdmins(c.admins),
		workers:   c.workers,
		hooks:     c.hooks,
		observers: c.observers,
		events:    make(chan exit, len(c.servers)+len(c.admins)+len(c.workers)),
		phaseAt:   c.clock.Now(),
	}
	c.mu.Unlock()
	return r.run(ctx)
}

// exit is a server's Serve or a worker returning.
type exit struct {
	who    string
	worker int  // index in run.workers; -1 for a server
	admin  bool // the server is an admin server
	server int  // index in run.servers, for a server
	err    error
	took   time.Duration // how long the worker ran
}

// run is the state of one call to Run.
type run struct {
	c       *Coordinator
	servers []Server
	admins  []*admin // admin.go
	workers []work
	hooks   []work
	// observers are OnPhase's (phase.go).
	observers []func(Event)

	events  chan exit // Serve and worker returns
	serving int       // Serve calls that have not returned
	serves  []bool    // serves[i]: servers[i]'s Serve has not returned
	running []bool    // running[i]: workers[i] has not returned
	working int       // workers that have not returned
	errs    []error   // failures of servers and workers

	signals *signals
	forced  bool              // a second signal arrived
	force   func(cause error) // cancels every deadline context

	delay      DelayReport     // what the drain delay measured, once over
	departures DepartureReport // how the long-lived work left, once cut

	phase   Phase
	phaseAt time.Time

	// The shutdown's moments, set once, at the signal, by setDeadlines:
	// the drain ends at drainDeadline, the hooks at deadline.
	signalAt, drainDeadline, deadline time.Time
	// The contexts that end at them: deadlineCtx at the deadline, hardCtx
	// also at a second signal, drainCtx (from the drain on) at the drain
	// deadline or a second signal, closeCtx (from the cut on) when Close
	// and what it ends must have returned (see closeDeadline). parent is
	// Run's context, without its cancellation.
	parent, deadlineCtx, hardCtx, drainCtx, closeCtx context.Context

	maxDelay     time.Duration   // the longest the drain delay could last
	stopWork     func()          // ends the workers' context, as the drain begins
	drains       *calls          // the servers' Drain calls
	cutCounts    inflight.Counts // what Close cut
	stillRunning []string        // the workers cut
	cleanup      []func()        // cancels the contexts, in reverse, as Run returns
}

func (r *run) run(ctx context.Context) error {
	sigs, stopSignals := notifySignals(&r.c.opts, r.c.log)
	defer stopSignals()
	r.signals = sigs
	defer r.cancel()

	if err := r.start(ctx); err != nil {
		return err
	}
	endpoints := prepareEndpoints(r.c) // endpoints.go: for an adaptive delay in Kubernetes
	defer endpoints.close()
	r.serve(ctx, endpoints)
	trigger := r.waitForShutdown(ctx)
	r.setDeadlines(ctx)
	r.lameDuck(trigger, endpoints)
	r.drain()         // drain.go
	cutErr := r.cut() // drain.go
	hookErr := r.stop()
	return errors.Join(errors.Join(r.errs...), cutErr, hookErr)
}

// start binds every server's listeners, in registration order, and enters
// PhaseStarting. If one fails, it closes the others, runs the hooks, and
// returns the error: the process never turned ready.
func (r *run) start(ctx context.Context) error {
	r.enter(PhaseStarting, inflight.Counts{}, slog.Int("servers", len(r.servers)+len(r.admins)), slog.Int("workers", len(r.workers)))
	for _, s := range r.servers {
		if d, ok := s.(Departer); ok {
			d.Departures().link(r.c.departures)
		}
	}
	for i, s := range r.servers {
		if err := s.Listen(); err != nil {
			return r.failStart(ctx, fmt.Errorf("lameduck: starting %s: %w", serverName(s, i), err), r.servers[:i+1])
		}
	}
	for _, a := range r.admins {
		a.listened = true
		if err := a.Listen(); err != nil {
			return r.failStart(ctx, fmt.Errorf("lameduck: starting %s: %w", a, err), r.servers)
		}
	}
	return nil
}

// serve starts every server's Serve and every worker, each in a goroutine
// of its own, and enters PhaseServing.
func (r *run) serve(ctx context.Context, endpoints *endpointsWatch) {
	c := r.c
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	r.stopWork = stopWork
	r.cleanup = append(r.cleanup, stopWork)
	r.serves = make([]bool, len(r.servers))
	for i, s := range r.servers {
		r.serving++
		r.serves[i] = true
		go func() { r.events <- exit{who: serverName(s, i), worker: -1, server: i, err: s.Serve()} }()
	}
	for i, a := range r.admins {
		a.serving = true
		go func() {
			a.err = a.Serve()
			close(a.served)
			r.events <- exit{who: a.String(), worker: -1, server: i, admin: true, err: a.err}
		}()
	}
	r.running = make([]bool, len(r.workers))
	for i, w := range r.workers {
		r.working++
		r.running[i] = true
		start := c.clock.Now() // here, not in the goroutine, which may first run after the clock has moved
		go func() {
			err := w.call(workCtx)
			r.events <- exit{who: "worker " + w.name, worker: i, err: err, took: c.clock.Now().Sub(start)}
		}()
	}
	var names []string
	for i, s := range r.servers {
		names = append(names, serverName(s, i))
	}
	for _, a := range r.admins {
		names = append(names, a.String())
	}
	ready := c.markServing()
	r.enter(PhaseServing, inflight.Counts{}, append(endpoints.attrs(c), slog.String("servers", strings.Join(names, ", ")), slog.Bool("ready", ready))...)
	if ready {
		c.log.Info("lameduck: ready")
	}
}

// setDeadlines computes, once, the deadlines of the shutdown that starts
// now, and the contexts that end at them.
func (r *run) setDeadlines(ctx context.Context) {
	c := r.c
	r.signalAt = c.clock.Now()
	r.deadline = r.signalAt.Add(c.opts.gracePeriod - c.opts.safetyMargin)
	r.drainDeadline = r.deadline.Add(-c.opts.hookTimeout)
	// deadlineCtx ends at the deadline; hardCtx also ends at a second
	// signal, which skips what remains but still lets Close report.
	r.parent = context.WithoutCancel(ctx)
	var cancel func(error)
	r.deadlineCtx, cancel = c.deadlineContext(r.parent, r.deadline)
	r.cleanup = append(r.cleanup, func() { cancel(nil) })
	r.hardCtx, r.force = context.WithCancelCause(r.deadlineCtx)
	force := r.force
	r.cleanup = append(r.cleanup, func() { force(nil) })
}

// lameDuck keeps readiness on while the process is the last endpoint of a
// Service (delay.go), then turns it off for good, asks every server to
// move its clients elsewhere, enters PhaseLameDuck, and waits out the
// drain delay. A process not ready at the signal has nothing routed to it:
// no hold, no delay.
func (r *run) lameDuck(trigger string, endpoints *endpointsWatch) {
	c := r.c
	delay := c.opts.delay.max
	if c.state.Load() != stateReady {
		delay = 0
	}
	lameDuck := newDelay(c, r.servers, r.signalAt, delay)
	c.progress.mu.Lock()
	c.progress.delay = lameDuck // status.go: Status reports it as it measures, the hold included
	c.progress.mu.Unlock()
	lameDuck.watch(endpoints)
	r.await(lameDuck.released, r.hardCtx)
	delay = lameDuck.release()
	wasReady := c.beginShutdown()
	if calls := r.each(r.hardCtx, func(i int, s Server) { s.LameDuck(lameDuck.arrivals[i].arrived) }); !calls.returned && r.deadlineCtx.Err() != nil {
		r.errs = append(r.errs, calls.hung("LameDuck"))
	}
	// Entered once the servers ask clients to leave, so that an observer
	// sees the phase in effect.
	r.enter(PhaseLameDuck, inflight.Counts{}, slog.String("trigger", trigger), slog.Bool("was_ready", wasReady),
		c.opts.delay.attr(delay), slog.Duration("drain_deadline_in", r.drainDeadline.Sub(r.signalAt)),
		slog.Duration("deadline_in", r.deadline.Sub(r.signalAt)))
	lameDuck.begin(r.phaseAt)
	r.await(lameDuck.done, r.hardCtx)
	r.delay = lameDuck.stop()
	r.maxDelay = delay
}

// stop runs the shutdown hooks in PhaseStopping, enters PhaseStopped,
// waits for the final scrape if asked to, and closes the admin servers,
// last, as Run returns. It returns the hooks' errors.
func (r *run) stop() error {
	c := r.c
	r.departures = c.departures.end()
	r.enter(PhaseStopping, r.cutCounts, append(workerAttrs(r.stillRunning), r.departures.attrs()...)...)
	hookErr := r.runHooks(r.hardCtx)
	r.enter(PhaseStopped, r.cutCounts, slog.Duration("since_signal", c.clock.Now().Sub(r.signalAt)))
	r.awaitFinalScrape(r.drainCtx) // admin.go
	r.closeAdmins(r.closeCtx)      // admin.go
	return hookErr
}

// cancel releases the contexts of the run, as Run returns.
func (r *run) cancel() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
}

var errForced = errors.New("lameduck: a second signal forced the shutdown")

// runningWorkers names the workers that have not returned.
func (r *run) runningWorkers() []string {
	var names []string
	for i, running := range r.running {
		if running {
			names = append(names, "worker "+r.workers[i].name)
		}
	}
	return names
}

// listed returns prefix followed by names, or "" if there are none.
func listed(prefix string, names []string) string {
	if len(names) == 0 {
		return ""
	}
	return prefix + strings.Join(names, ", ")
}

// workerAttrs is the log attribute that names the workers cut, if any.
func workerAttrs(names []string) []slog.Attr {
	if len(names) == 0 {
		return nil
	}
	return []slog.Attr{slog.String("workers_cut", strings.Join(names, ", "))}
}

// lateClose is the share of the safety margin that Close may still take
// when Run reaches it after the deadline.
const lateClose = 4

// closeDeadline is when Close, and the Drain and Serve calls it ends, must
// have returned: the deadline, or, when Run gets there after the deadline,
// as when an overloaded machine fires its timers late, a moment after now.
// Close then still runs, taking a quarter of the safety margin at most, so
// that what it cuts is closed and reported rather than left open and
// unknown.
func (r *run) closeDeadline(deadline time.Time) time.Time {
	if now := r.c.clock.Now(); !now.Before(deadline) {
		return now.Add(r.c.opts.safetyMargin / lateClose)
	}
	return deadline
}

// each calls f on every server and its index, concurrently, and waits for
// every call to return or for ctx to end: a server that breaks its
// contract by blocking cannot hold Run past its deadline.
func (r *run) each(ctx context.Context, f func(i int, s Server)) *calls {
	c := &calls{r: r, done: make(chan struct{}), pending: make([]atomic.Bool, len(r.servers))}
	var wg sync.WaitGroup
	for i, s := range r.servers {
		wg.Add(1)
		c.pending[i].Store(true)
		go func() {
			defer wg.Done()
			f(i, s)
			c.pending[i].Store(false)
		}()
	}
	go func() { wg.Wait(); close(c.done) }()
	c.returned = r.await(c.done, ctx)
	return c
}

// calls are the calls of one method on every server, made by each.
type calls struct {
	r        *run
	done     chan struct{} // closed once every call has returned
	returned bool          // every call returned before the context of each ended
	pending  []atomic.Bool // pending[i]: the call on servers[i] has not returned
}

// hung is the error of the calls of method that have not returned by the
// deadline, naming their servers.
func (c *calls) hung(method string) error {
	var names []string
	for i := range c.pending {
		if c.pending[i].Load() {
			names = append(names, serverName(c.r.servers[i], i))
		}
	}
	return fmt.Errorf("lameduck: %s did not return by the deadline: %s", method, strings.Join(names, ", "))
}

// waitForShutdown waits for a signal, the end of ctx, or a failure, and says
// which. The signal that starts the shutdown is counted (see signals.go), so
// that its other copies cannot force it.
func (r *run) waitForShutdown(ctx context.Context) string {
	s := r.signals
	for {
		select {
		case sig := <-s.own:
			s.received(ownSignals, sig, true)
			return "signal " + sig.String()
		case sig, ok := <-s.fed:
			if s.received(fedSignals, sig, ok); ok {
				return "signal " + sig.String()
			}
		case <-ctx.Done():
			return "context: " + context.Cause(ctx).Error()
		case e := <-r.events:
			r.exited(e)
			if e.err != nil || e.worker < 0 {
				return e.who + " failed"
			}
		}
	}
}

// await waits for done to be closed (a nil done never is) or for ctx to
// end, handling what happens meanwhile: servers and workers returning, and
// a second signal, which cancels every deadline context. It reports whether
// it returned because of an event or done rather than ctx.
func (r *run) await(done <-chan struct{}, ctx context.Context) bool {
	s := r.signals
	for {
		var force bool
		select {
		case <-done:
			return true
		case <-ctx.Done():
			return inflight.IsClosed(done) // both may be ready; done wins
		case sig := <-s.own:
			force = s.received(ownSignals, sig, true)
		case sig, ok := <-s.fed:
			force = s.received(fedSignals, sig, ok)
		case e := <-r.events:
			r.exited(e)
			if done == nil {
				return true
			}
		}
		if force {
			r.forced = true
			r.force(errForced)
		}
	}
}

// takeExits records the Serve and worker returns already reported, without
// waiting for more.
func (r *run) takeExits() {
	for {
		select {
		case e := <-r.events:
			r.exited(e)
		default:
			return
		}
	}
}

// exited records a Serve or worker return.
func (r *run) exited(e exit) {
	switch {
	case e.worker >= 0:
		r.working--
		r.running[e.worker] = false
	case e.admin:
		r.admins[e.server].reported = true
	default:
		r.serving--
		r.serves[e.server] = false
	}
	switch {
	case e.err != nil:
		r.errs = append(r.errs, fmt.Errorf("lameduck: %s: %w", e.who, e.err))
		r.c.log.Error("lameduck: "+e.who+" failed", slog.Any("error", e.err), slog.Duration("took", e.took))
	case e.worker >= 0:
		r.c.log.Info("lameduck: "+e.who+" returned", slog.Duration("took", e.took))
	case e.worker < 0 && r.phase < PhaseLameDuck:
		err := fmt.Errorf("lameduck: %s stopped serving before the shutdown", e.who)
		r.errs = append(r.errs, err)
		r.c.log.Error(err.Error())
	}
}

// failStart handles a server that could not listen: it closes the servers
// that were started, runs the hooks, and returns err with the hooks' errors.
func (r *run) failStart(ctx context.Context, err error, started []Server) error {
	c := r.c
	c.beginShutdown()
	c.log.Error("lameduck: start failed", slog.Any("error", err))
	// The hook timeout covers closing the servers and the hooks, as at
	// the end of a shutdown: a Close that blocks cannot hang Run.
	hookCtx, force := c.deadlineContext(context.WithoutCancel(ctx), c.clock.Now().Add(c.opts.hookTimeout))
	defer force(nil)
	r.force = force
	closed := make(chan struct{})
	var closing atomic.Int32 // the index of the server being closed
	go func() {
		defer close(closed)
		for i, s := range started {
			closing.Store(int32(i))
			s.Close()
		}
	}()
	if !r.await(closed, hookCtx) {
		i := int(closing.Load())
		err = errors.Join(err, fmt.Errorf("lameduck: Close did not return in time: %s", serverName(started[i], i)))
	}
	r.enter(PhaseStopping, inflight.Counts{})
	err = errors.Join(err, r.runHooks(hookCtx))
	r.enter(PhaseStopped, inflight.Counts{})
	r.closeAdmins(hookCtx) // admin.go
	return err
}

// ended returns why ctx has ended, or nil while it has not. A context
// whose deadline has passed has ended even before it is canceled: the
// context package closes a parent's Done channel before it cancels the
// parent's children, so that Run, woken at the deadline by deadlineCtx,
// could find hardCtx, its child, still live, and start a hook only to
// leave it behind at once.
func (c *Coordinator) ended(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if d, ok := ctx.Deadline(); ok && !c.clock.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// runHooks runs the shutdown hooks in reverse order within ctx, logs each
// that fails, and returns their errors joined.
func (r *run) runHooks(ctx context.Context) error {
	var errs []error
	for i := len(r.hooks) - 1; i >= 0; i-- {
		h := r.hooks[i]
		var err error
		if why := r.c.ended(ctx); why != nil {
			err = fmt.Errorf("lameduck: shutdown hook %s not run: %w", h.name, why)
		} else {
			var herr error
			done := make(chan struct{})
			start := r.c.clock.Now()
			go func() { herr = h.call(ctx); close(done) }()
			switch {
			case !r.await(done, ctx):
				// The hook ignores its context; leave it behind
				// rather than miss the deadline.
				err = fmt.Errorf("lameduck: shutdown hook %s did not return in time: %w", h.name, context.Cause(ctx))
			case herr != nil:
				err = fmt.Errorf("lameduck: shutdown hook %s: %w", h.name, herr)
			default:
				r.c.log.Info("lameduck: shutdown hook "+h.name+" done", slog.Duration("took", r.c.clock.Now().Sub(start)))
			}
		}
		if err != nil {
			r.c.log.Error(err.Error())
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
