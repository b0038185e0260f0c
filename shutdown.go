package lameduck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults, chosen to fit a pod spec that does not set
// terminationGracePeriodSeconds (30 s).
const (
	// DefaultGracePeriod is Kubernetes' default terminationGracePeriodSeconds.
	DefaultGracePeriod = 30 * time.Second
	// DefaultDrainDelay is long enough for kube-proxy and most load balancers
	// to stop sending new connections to a terminating pod.
	DefaultDrainDelay = 5 * time.Second
	// DefaultHookTimeout is the time reserved for closing servers and
	// running shutdown hooks.
	DefaultHookTimeout = 3 * time.Second
	// DefaultSafetyMargin is kept free at the end of the grace period for the
	// process to exit before the kubelet sends SIGKILL.
	DefaultSafetyMargin = 2 * time.Second
)

// ErrCut is returned, wrapped, by [Coordinator.Run] when in-flight work had
// to be cut: the shutdown deadline passed or a second signal forced the exit
// before every request, stream, connection and worker had finished.
var ErrCut = errors.New("lameduck: in-flight work was cut")

// A Server is a network server run by a [Coordinator]: an HTTP server (see
// package httpserver), a gRPC server (package grpcserver), or any server
// that can be adapted to the four steps below.
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
//     returns at once.
//   - Drain once, after the drain delay. The server stops accepting, lets
//     in-flight work finish, and returns nil once nothing is left, or
//     ctx.Err() when ctx ends first. Drain must detect the end by events,
//     not by polling, so that the process exits as soon as it can.
//   - Close once, last: it closes whatever is still open, makes Serve and
//     Drain return, and reports what it cut. After a clean drain it cuts
//     nothing and only releases resources.
//
// Every method must be safe to call once Listen has returned, even with an
// error, in any order and concurrently with Serve: a server that fails to
// start, or a second signal, makes the Coordinator skip steps.
type Server interface {
	Listen() error
	Serve() error
	LameDuck()
	Drain(ctx context.Context) error
	Close() Counts
}

// A Clock tells the time and runs functions later. The Coordinator uses it
// for every timer of the shutdown sequence and of readiness checks, so that
// tests can drive the sequence with a fake clock. The default is the real
// time of package time.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, unless stop
	// is called first; stop reports whether it prevented the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// A Phase is a step of the sequence that [Coordinator.Run] goes through.
type Phase int

// The phases, in the order Run enters them.
const (
	// PhaseStarting: Run binds every server's listeners.
	PhaseStarting Phase = iota
	// PhaseServing: every server serves; readiness follows MarkReady and
	// the checks. Run waits for a signal, the end of its context, or a
	// failure.
	PhaseServing
	// PhaseLameDuck: readiness answers 503 for good; servers keep serving
	// but ask clients to move elsewhere, for the drain delay. It is entered
	// once every server's LameDuck has returned.
	PhaseLameDuck
	// PhaseDraining: servers stop accepting and in-flight work finishes;
	// [Coordinator.Draining] is closed and workers' contexts are done. At
	// the drain deadline whatever remains is cut.
	PhaseDraining
	// PhaseStopping: shutdown hooks run, in reverse order of registration.
	PhaseStopping
	// PhaseStopped: Run is about to return.
	PhaseStopped
)

var phaseNames = [...]string{"starting", "serving", "lame duck", "draining", "stopping", "stopped"}

func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// An Event reports that [Coordinator.Run] entered a phase. Observers set
// with [WithObserver] receive one per phase, in order.
type Event struct {
	// Phase is the phase just entered.
	Phase Phase
	// Elapsed is how long the previous phase lasted; zero for
	// PhaseStarting.
	Elapsed time.Duration
	// Cut counts the work cut at the deadline or by a second signal. It is
	// set from PhaseStopping on.
	Cut Counts
}

// An Option configures a [Coordinator]; pass options to [New].
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	gracePeriod  time.Duration
	drainDelay   time.Duration
	hookTimeout  time.Duration
	safetyMargin time.Duration
	signals      []os.Signal
	signalCh     <-chan os.Signal
	signalChSet  bool
	logger       *slog.Logger
	observers    []func(Event)
	clock        Clock
	checkDetails bool
	errs         []error // nil values passed to options
}

// WithGracePeriod sets the time from the shutdown signal to the moment the
// process is killed: the pod's terminationGracePeriodSeconds, which must be
// set to the same value. The default is [DefaultGracePeriod], Kubernetes'
// default.
func WithGracePeriod(d time.Duration) Option {
	return optionFunc(func(o *options) { o.gracePeriod = d })
}

// WithDrainDelay sets how long the process keeps serving after the shutdown
// signal, with readiness off, while load balancers and kube-proxy stop
// sending it new connections. During the delay every response asks its
// client to reconnect elsewhere. Zero skips the delay, which is only safe
// when no load balancer routes to the process. The default is
// [DefaultDrainDelay]. A process that never became ready skips the delay:
// nothing routes to it.
func WithDrainDelay(d time.Duration) Option {
	return optionFunc(func(o *options) { o.drainDelay = d })
}

// WithHookTimeout sets the time reserved at the end of the shutdown for
// closing the servers and running the hooks registered with
// [Coordinator.OnShutdown], all of them together: the drain is cut that long
// before the deadline. It must be positive. The default is
// [DefaultHookTimeout].
func WithHookTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.hookTimeout = d })
}

// WithSafetyMargin sets the time kept free at the end of the grace period:
// [Coordinator.Run] returns at least this long before the grace period ends,
// leaving the process time to exit before SIGKILL. The default is
// [DefaultSafetyMargin].
func WithSafetyMargin(d time.Duration) Option {
	return optionFunc(func(o *options) { o.safetyMargin = d })
}

// WithSignals sets the operating-system signals that start the shutdown; a
// second one forces it. The default is SIGTERM, which the kubelet sends, and
// SIGINT (Ctrl-C). With no signals, only the end of the context given to
// [Coordinator.Run], a failure, or [WithSignalChannel] starts the shutdown.
func WithSignals(sig ...os.Signal) Option {
	for _, s := range sig {
		if s == nil {
			return optionFunc(func(o *options) {
				o.errs = append(o.errs, errors.New("WithSignals: a signal is nil; pass signals such as syscall.SIGTERM"))
			})
		}
	}
	sig = append([]os.Signal(nil), sig...)
	return optionFunc(func(o *options) { o.signals = sig })
}

// WithSignalChannel makes every value received from ch count as a shutdown
// signal, in addition to the signals of [WithSignals]: the first starts the
// shutdown, the second forces it. Tests use it to drive the sequence without
// sending signals to the test process.
func WithSignalChannel(ch <-chan os.Signal) Option {
	return optionFunc(func(o *options) {
		if ch == nil {
			o.errs = append(o.errs, errors.New("WithSignalChannel: the channel is nil; pass a channel you send signals on"))
		}
		o.signalCh, o.signalChSet = ch, true
	})
}

// WithLogger sets the logger for the one line per phase and for failing
// readiness checks. The default is [slog.Default].
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l == nil {
			o.errs = append(o.errs, errors.New("WithLogger: the logger is nil; pass slog.New(slog.DiscardHandler) to discard logs"))
		}
		o.logger = l
	})
}

// WithObserver adds a function called with an [Event] each time
// [Coordinator.Run] enters a phase, for exporting metrics. It is called
// synchronously from Run and must not block. There is no observer by
// default.
func WithObserver(f func(Event)) Option {
	return optionFunc(func(o *options) {
		if f == nil {
			o.errs = append(o.errs, errors.New("WithObserver: the function is nil"))
			return
		}
		o.observers = append(o.observers, f)
	})
}

// WithClock sets the clock behind every timer: the drain delay, the
// deadline, hook and check timeouts. The default is the real time.
func WithClock(c Clock) Option {
	return optionFunc(func(o *options) {
		if c == nil {
			o.errs = append(o.errs, errors.New("WithClock: the clock is nil; leave the option out to use the real time"))
		}
		o.clock = c
	})
}

// WithCheckDetails makes verbose readiness responses (?verbose) include the
// error text of failing checks. By default they show only each check's name
// and whether it passed, because error text can carry hostnames, credentials
// or internal details and probe endpoints are often reachable by more people
// than logs are; the text is logged instead.
func WithCheckDetails() Option {
	return optionFunc(func(o *options) { o.checkDetails = true })
}

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
	clock Clock

	// state is the readiness latch: stateStarting, then stateReady (by
	// MarkReady), then stateShuttingDown, never back.
	state atomic.Int32

	readyOnce sync.Once
	ready     chan struct{} // closed by MarkReady
	draining  chan struct{} // closed when the drain begins

	mu sync.Mutex
	// Guarded by mu. Registration is only allowed before Run.
	ran     bool
	servers []Server
	workers []func(context.Context) error
	hooks   []func(context.Context) error
	checks  []*check

	progress progress // status.go: what Phase and Status report
}

// New returns a Coordinator configured by opts, or an error that says which
// setting is wrong and what to change.
//
// The settings must fit in the grace period: drain delay + hook timeout +
// safety margin must be shorter than the grace period, leaving time for the
// drain itself.
func New(opts ...Option) (*Coordinator, error) {
	o := options{
		gracePeriod:  DefaultGracePeriod,
		drainDelay:   DefaultDrainDelay,
		hookTimeout:  DefaultHookTimeout,
		safetyMargin: DefaultSafetyMargin,
		signals:      []os.Signal{syscall.SIGTERM, os.Interrupt},
		logger:       slog.Default(),
		clock:        realClock{},
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
	return &Coordinator{
		opts:     o,
		log:      o.logger,
		clock:    o.clock,
		ready:    make(chan struct{}),
		draining: make(chan struct{}),
	}, nil
}

func (o *options) validate() error {
	if len(o.errs) > 0 {
		err := errors.Join(o.errs...)
		return fmt.Errorf("lameduck: invalid option: %w", err)
	}
	for _, d := range []struct {
		name, option string
		value        time.Duration
	}{
		{"drain delay", "WithDrainDelay", o.drainDelay},
		{"safety margin", "WithSafetyMargin", o.safetyMargin},
	} {
		if d.value < 0 {
			return fmt.Errorf("lameduck: %s is %v; it must be zero or more (%s)", d.name, d.value, d.option)
		}
	}
	if o.hookTimeout <= 0 {
		return fmt.Errorf("lameduck: hook timeout is %v; it must be positive: it is the time kept after the drain to close the servers and run the shutdown hooks (WithHookTimeout)", o.hookTimeout)
	}
	if o.gracePeriod <= 0 {
		return fmt.Errorf("lameduck: grace period is %v; set it with WithGracePeriod to the pod's terminationGracePeriodSeconds (30s by default)", o.gracePeriod)
	}
	if reserved := addSaturated(o.drainDelay, o.hookTimeout, o.safetyMargin); reserved >= o.gracePeriod {
		need := reserved.Truncate(time.Second)/time.Second + 1
		return fmt.Errorf("lameduck: drain delay %v + hook timeout %v + safety margin %v = %v leaves no time to drain "+
			"within the grace period of %v; set terminationGracePeriodSeconds to at least %d in the pod spec and "+
			"WithGracePeriod(%d * time.Second) to match (more leaves in-flight work time to finish), or shorten the drain delay",
			o.drainDelay, o.hookTimeout, o.safetyMargin, reserved, o.gracePeriod, need, need)
	}
	return nil
}

// addSaturated adds non-negative durations, returning the largest duration
// instead of overflowing: huge settings must fail the budget check, not wrap
// around and pass it.
func addSaturated(ds ...time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		if sum > math.MaxInt64-d {
			return math.MaxInt64
		}
		sum += d
	}
	return sum
}

// Register adds a server for [Coordinator.Run] to start and shut down.
// Servers are started in the order they are registered. It panics if s is
// nil or already registered, or if Run has been called.
func (c *Coordinator) Register(s Server) {
	if s == nil {
		panic("lameduck: Register: the server is nil")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveRunLocked("Register")
	// A server registered twice would Listen twice. Pointers, which
	// servers almost always are, compare safely; other values might panic.
	if reflect.TypeOf(s).Kind() == reflect.Pointer {
		for _, x := range c.servers {
			if x == s {
				panic("lameduck: Register: the server is already registered; register each server once")
			}
		}
	}
	c.servers = append(c.servers, s)
}

// Go adds a background worker, such as a queue consumer, for
// [Coordinator.Run] to start in its own goroutine once every server
// listens. The worker's context is done when the drain begins; Run waits for
// the worker to return, like a server's in-flight work, until the drain
// deadline. A worker returning an error shuts the process down and Run
// returns the error; a worker returning nil early is simply done. It panics
// if f is nil or Run has been called.
func (c *Coordinator) Go(f func(ctx context.Context) error) {
	if f == nil {
		panic("lameduck: Go: the worker is nil")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveRunLocked("Go")
	c.workers = append(c.workers, f)
}

// OnShutdown adds a hook for [Coordinator.Run] to call after the drain, such
// as closing a database pool or flushing telemetry. Hooks run one at a time,
// in reverse order of registration, so that what was set up first is torn
// down last. Their context ends at the deadline: together they get the hook
// timeout (see [WithHookTimeout]) plus whatever the drain left unused. A
// hook that panics or returns an error does not stop the others; Run
// returns every error, joined. It panics if f is nil or Run has been called.
func (c *Coordinator) OnShutdown(f func(ctx context.Context) error) {
	if f == nil {
		panic("lameduck: OnShutdown: the hook is nil")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveRunLocked("OnShutdown")
	c.hooks = append(c.hooks, f)
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
		if c.state.CompareAndSwap(stateStarting, stateReady) {
			c.log.Info("lameduck: ready")
		}
		close(c.ready)
	})
}

// Ready returns a channel that is closed once [Coordinator.MarkReady] has
// been called. Servers that publish readiness themselves, such as the gRPC
// health service, wait on it.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Draining returns a channel that is closed when the drain begins, after
// the drain delay: long-lived work (server-sent event streams, websockets,
// streaming RPCs, consumers) should then finish what it is doing and
// return, before the deadline cuts it.
func (c *Coordinator) Draining() <-chan struct{} { return c.draining }

// ShuttingDown reports whether the shutdown has begun: readiness answers 503
// from that moment on.
func (c *Coordinator) ShuttingDown() bool { return c.state.Load() == stateShuttingDown }

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
//  3. Lame duck: readiness answers 503, for good, at once; liveness keeps
//     answering 200. Every server's LameDuck asks clients to reconnect
//     elsewhere while everything is still served, for the drain delay (see
//     [WithDrainDelay]), so that kube-proxy and load balancers catch up. The
//     delay is skipped if the process never became ready.
//  4. Draining: servers stop accepting and in-flight requests, RPCs and
//     streams finish; [Coordinator.Draining] is closed and workers'
//     contexts are done. Run learns that the drain is over from events, not
//     by polling, and moves on at once.
//  5. If anything is left at the drain deadline — the grace period minus the
//     safety margin and the hook timeout, counted from the signal — servers
//     close it, and Run logs and returns what was cut.
//  6. Stopping: shutdown hooks (see [Coordinator.OnShutdown]) run in
//     reverse order, within the deadline: the grace period minus the safety
//     margin, counted from the signal.
//  7. Stopped: Run returns before that deadline, whatever servers, workers
//     and hooks do.
//
// A second signal at any point skips what remains of the delay, the drain
// and the hooks, and cuts what is in flight at once.
//
// Run returns nil after a clean shutdown, whether a signal or the end of
// ctx started it. Otherwise it returns, joined, the failure that started the
// shutdown, an error wrapping [ErrCut] saying what was cut, and the hooks'
// errors. Register, Go, OnShutdown and AddCheck panic once Run has been
// called. Run returns an error at once, starting nothing, if ctx is nil or
// Run was called before.
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
		c:       c,
		servers: c.servers,
		workers: c.workers,
		hooks:   c.hooks,
		events:  make(chan exit, len(c.servers)+len(c.workers)),
		phaseAt: c.clock.Now(),
	}
	c.mu.Unlock()
	return r.run(ctx)
}

// exit is a server's Serve or a worker returning.
type exit struct {
	who    string
	worker bool
	err    error
}

// run is the state of one call to Run.
type run struct {
	c       *Coordinator
	servers []Server
	workers []func(context.Context) error
	hooks   []func(context.Context) error

	events  chan exit // Serve and worker returns
	serving int       // Serve calls that have not returned
	working int       // workers that have not returned
	errs    []error   // failures of servers and workers

	signals chan os.Signal    // OS signals and those of WithSignalChannel
	forced  bool              // a second signal arrived
	force   func(cause error) // cancels every deadline context

	phase   Phase
	phaseAt time.Time
}

func (r *run) run(ctx context.Context) error {
	c := r.c
	r.enter(PhaseStarting, Counts{}, slog.Int("servers", len(r.servers)), slog.Int("workers", len(r.workers)))
	defer r.notifySignals()()

	for i, s := range r.servers {
		if err := s.Listen(); err != nil {
			return r.failStart(ctx, fmt.Errorf("lameduck: starting %s: %w", serverName(s, i), err), r.servers[:i+1])
		}
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	for i, s := range r.servers {
		r.serving++
		go func() { r.events <- exit{who: serverName(s, i), err: s.Serve()} }()
	}
	for i, w := range r.workers {
		r.working++
		go func() { r.events <- exit{who: fmt.Sprintf("worker %d", i+1), worker: true, err: call(workCtx, w)} }()
	}
	names := make([]string, len(r.servers))
	for i, s := range r.servers {
		names[i] = serverName(s, i)
	}
	r.enter(PhaseServing, Counts{}, slog.String("servers", strings.Join(names, ", ")))

	trigger := r.waitForShutdown(ctx)
	signalAt := c.clock.Now()
	deadline := signalAt.Add(c.opts.gracePeriod - c.opts.safetyMargin)
	// deadlineCtx ends at the deadline; hardCtx also ends at a second
	// signal, which skips what remains but still lets Close report.
	deadlineCtx, cancelDeadline := c.deadlineContext(context.WithoutCancel(ctx), deadline)
	defer cancelDeadline(nil)
	hardCtx, force := context.WithCancelCause(deadlineCtx)
	defer force(nil)
	r.force = force

	// Lame duck.
	wasReady := c.state.Swap(stateShuttingDown) == stateReady
	delay := c.opts.drainDelay
	if !wasReady {
		delay = 0
	}
	if _, ok := r.each(hardCtx, func(s Server) { s.LameDuck() }); !ok && deadlineCtx.Err() != nil {
		r.errs = append(r.errs, errors.New("lameduck: a server's LameDuck did not return by the deadline"))
	}
	// Entered once the servers ask clients to leave, so that an observer
	// sees the phase in effect.
	r.enter(PhaseLameDuck, Counts{}, slog.String("trigger", trigger), slog.Bool("was_ready", wasReady),
		slog.Duration("drain_delay", delay), slog.Duration("deadline_in", deadline.Sub(signalAt)))
	if delay > 0 {
		delayed := make(chan struct{})
		stop := c.clock.AfterFunc(delay, func() { close(delayed) })
		r.await(delayed, hardCtx)
		stop()
	}

	// Drain.
	drainDeadline := deadline.Add(-c.opts.hookTimeout)
	drainCtx, cancelDrain := c.deadlineContext(hardCtx, drainDeadline)
	defer cancelDrain(nil)
	r.enter(PhaseDraining, Counts{})
	close(c.draining)
	stopWork()
	// Drain's error says no more than the counts from Close below.
	drained, _ := r.each(drainCtx, func(s Server) { _ = s.Drain(drainCtx) })
	for r.working > 0 && r.await(nil, drainCtx) {
	}

	report := r.closeServers(deadlineCtx)
	report.Workers = r.working
	// Close makes Serve and Drain return; give them until the deadline.
	if !r.await(drained, deadlineCtx) {
		r.errs = append(r.errs, errors.New("lameduck: a server's Drain did not return by the deadline"))
	}
	for r.serving > 0 && r.await(nil, deadlineCtx) {
	}
	if r.serving > 0 {
		r.errs = append(r.errs, errors.New("lameduck: a server's Serve did not return by the deadline"))
	}
	var cutErr error
	if report.Total() > 0 {
		why := "the drain deadline passed"
		if r.forced {
			why = "a second signal forced the shutdown"
		}
		cutErr = fmt.Errorf("%w: %s: %s cut", ErrCut, why, report)
	}

	r.enter(PhaseStopping, report)
	hookErr := r.runHooks(hardCtx)
	r.enter(PhaseStopped, report, slog.Duration("since_signal", c.clock.Now().Sub(signalAt)))
	r.closeAdmins(deadlineCtx) // admin.go: admin servers close last, as Run returns
	return errors.Join(errors.Join(r.errs...), cutErr, hookErr)
}

var errForced = errors.New("lameduck: a second signal forced the shutdown")

// closeServers calls every server's Close and adds up what they cut, as far
// as known when ctx ends: a Close that returns later is reported as stuck
// and its counts are left out.
func (r *run) closeServers(ctx context.Context) Counts {
	var mu sync.Mutex
	var cut Counts
	if _, ok := r.each(ctx, func(s Server) {
		c := s.Close()
		mu.Lock()
		cut = cut.Add(c)
		mu.Unlock()
	}); !ok {
		r.errs = append(r.errs, errors.New("lameduck: a server's Close did not return by the deadline"))
	}
	mu.Lock()
	defer mu.Unlock()
	return cut
}

// isClosed reports whether ch is closed; a nil ch never is.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// each calls f on every server, concurrently, and waits for every call to
// return or for ctx to end: a server that breaks its contract by blocking
// cannot hold Run past its deadline. It returns a channel closed once every
// call has returned, and whether that happened before ctx ended.
func (r *run) each(ctx context.Context, f func(Server)) (<-chan struct{}, bool) {
	done := make(chan struct{})
	var calls sync.WaitGroup
	for _, s := range r.servers {
		calls.Add(1)
		go func() {
			defer calls.Done()
			f(s)
		}()
	}
	go func() { calls.Wait(); close(done) }()
	return done, r.await(done, ctx)
}

// waitForShutdown waits for a signal, the end of ctx, or a failure, and says
// which.
func (r *run) waitForShutdown(ctx context.Context) string {
	for {
		select {
		case sig := <-r.signals:
			return "signal " + sig.String()
		case <-ctx.Done():
			return "context: " + context.Cause(ctx).Error()
		case e := <-r.events:
			r.exited(e)
			if e.err != nil || !e.worker {
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
	for {
		select {
		case <-done:
			return true
		case <-ctx.Done():
			return isClosed(done) // both may be ready; done wins
		case sig := <-r.signals:
			r.forced = true
			r.c.log.Warn("lameduck: second signal, forcing the shutdown", slog.String("signal", sig.String()))
			r.force(errForced)
		case e := <-r.events:
			r.exited(e)
			if done == nil {
				return true
			}
		}
	}
}

// exited records a Serve or worker return.
func (r *run) exited(e exit) {
	if e.worker {
		r.working--
	} else {
		r.serving--
	}
	switch {
	case e.err != nil:
		r.errs = append(r.errs, fmt.Errorf("lameduck: %s: %w", e.who, e.err))
		r.c.log.Error("lameduck: "+e.who+" failed", slog.Any("error", e.err))
	case !e.worker && r.phase < PhaseLameDuck:
		err := fmt.Errorf("lameduck: %s stopped serving before the shutdown", e.who)
		r.errs = append(r.errs, err)
		r.c.log.Error(err.Error())
	}
}

// failStart handles a server that could not listen: it closes the servers
// that were started, runs the hooks, and returns err with the hooks' errors.
func (r *run) failStart(ctx context.Context, err error, started []Server) error {
	c := r.c
	c.state.Store(stateShuttingDown)
	c.log.Error("lameduck: start failed", slog.Any("error", err))
	// The hook timeout covers closing the servers and the hooks, as at
	// the end of a shutdown: a Close that blocks cannot hang Run.
	hookCtx, force := c.deadlineContext(context.WithoutCancel(ctx), c.clock.Now().Add(c.opts.hookTimeout))
	defer force(nil)
	r.force = force
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for _, s := range started {
			s.Close()
		}
	}()
	if !r.await(closed, hookCtx) {
		err = errors.Join(err, errors.New("lameduck: a server's Close did not return in time"))
	}
	r.enter(PhaseStopping, Counts{})
	err = errors.Join(err, r.runHooks(hookCtx))
	r.enter(PhaseStopped, Counts{})
	r.closeAdmins(hookCtx) // admin.go
	return err
}

// runHooks runs the shutdown hooks in reverse order within ctx, and returns
// their errors joined.
func (r *run) runHooks(ctx context.Context) error {
	var errs []error
	for i := len(r.hooks) - 1; i >= 0; i-- {
		name := fmt.Sprintf("shutdown hook %d", i+1)
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("lameduck: %s not run: %w", name, context.Cause(ctx)))
			continue
		}
		var err error
		done := make(chan struct{})
		go func() { err = call(ctx, r.hooks[i]); close(done) }()
		if !r.await(done, ctx) {
			// The hook ignores its context; leave it behind rather than
			// miss the deadline.
			errs = append(errs, fmt.Errorf("lameduck: %s did not return in time: %w", name, context.Cause(ctx)))
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lameduck: %s: %w", name, err))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		r.c.log.Error("lameduck: shutdown hooks failed", slog.Any("error", err))
	}
	return err
}

// call calls a worker or a hook, turning a panic into an error.
func call(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return f(ctx)
}

// enter moves to phase p: one log line with the previous phase's duration,
// and one Event for each observer.
func (r *run) enter(p Phase, cut Counts, attrs ...slog.Attr) {
	now := r.c.clock.Now()
	elapsed := now.Sub(r.phaseAt)
	if p == PhaseStarting {
		elapsed = 0
	}
	r.phase, r.phaseAt = p, now
	r.c.entered(p, now, cut) // status.go
	level := slog.LevelInfo
	attrs = append(attrs, slog.Duration("previous_phase_took", elapsed))
	if p >= PhaseStopping {
		attrs = append(attrs, slog.String("cut", cut.String()))
		if cut.Total() > 0 {
			level = slog.LevelWarn
		}
	}
	r.c.log.LogAttrs(context.Background(), level, "lameduck: "+p.String(), attrs...)
	for _, f := range r.c.opts.observers {
		f(Event{Phase: p, Elapsed: elapsed, Cut: cut})
	}
}

// notifySignals starts delivering shutdown signals on r.signals and returns
// a function that stops it.
func (r *run) notifySignals() (stop func()) {
	o := &r.c.opts
	r.signals = make(chan os.Signal, 2)
	if len(o.signals) > 0 {
		signal.Notify(r.signals, o.signals...)
	}
	quit := make(chan struct{})
	var forwarding sync.WaitGroup
	if o.signalChSet {
		forwarding.Add(1)
		go func() {
			defer forwarding.Done()
			for {
				select {
				case sig, ok := <-o.signalCh:
					if !ok {
						return
					}
					select {
					case r.signals <- sig:
					case <-quit:
						return
					}
				case <-quit:
					return
				}
			}
		}()
	}
	return func() {
		signal.Stop(r.signals)
		close(quit)
		forwarding.Wait()
	}
}

func serverName(s Server, i int) string {
	if st, ok := s.(fmt.Stringer); ok {
		return st.String()
	}
	return fmt.Sprintf("server %d", i+1)
}

// deadlineContext returns a context that ends at deadline on c's clock, or
// when cancel is called, with cancel's cause.
func (c *Coordinator) deadlineContext(parent context.Context, deadline time.Time) (context.Context, context.CancelCauseFunc) {
	if _, real := c.clock.(realClock); real {
		ctx, cancelCause := context.WithCancelCause(parent)
		ctx, cancel := context.WithDeadline(ctx, deadline)
		return ctx, func(cause error) { cancelCause(cause); cancel() }
	}
	ctx, cancel := context.WithCancelCause(parent)
	stop := c.clock.AfterFunc(deadline.Sub(c.clock.Now()), func() { cancel(context.DeadlineExceeded) })
	return clockContext{ctx, deadline}, func(cause error) { stop(); cancel(cause) }
}

// clockContext is a context whose deadline is on a fake clock.
type clockContext struct {
	context.Context
	deadline time.Time
}

func (c clockContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c clockContext) Err() error {
	if err := c.Context.Err(); err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}
