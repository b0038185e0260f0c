package lameduck

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/testhook"
)

// The drain delay is step 3 of the sequence: the lame-duck phase, when
// readiness is off and every client is asked to reconnect elsewhere while
// kube-proxy and load balancers stop routing to the process. This file
// holds its settings and runs it: a fixed delay, or an adaptive one that
// ends on evidence that routing has caught up, from the cluster
// (endpoints.go) and from the connections that arrive (arrivals.go).

// WithAdaptiveDrainDelay makes the drain delay adaptive, instead of the
// fixed delay of [WithDrainDelay]: the lame-duck phase lasts at most max,
// and ends sooner on evidence that routing has caught up.
//
// In Kubernetes the evidence is the cluster's: the Coordinator watches the
// EndpointSlices of its namespace with the pod's service account, and the
// delay ends [EndpointsAllowance] (for kube-proxy to apply the change)
// after every slice that lists the pod's address has stopped routing to
// it. The pod's address is POD_IP, set from the downward API (fieldRef:
// status.podIP), or its interfaces'. The service account needs get, list
// and watch on endpointslices (apiGroup discovery.k8s.io) in the
// namespace, as the manifests of examples/kubernetes grant. The watch
// begins at the signal, so slices that had stopped routing before it
// count from the signal. While a slice routes to the pod, the delay goes
// on, up to max.
//
// The last endpoint of a Service stays ready. kube-proxy routes a Service
// that has no ready endpoint to its terminating endpoints that still pass
// their readiness probe (KEP-1669, Kubernetes 1.26 and later), so a pod
// that turned readiness off at the signal while it was the only endpoint,
// as with one replica, `kubectl delete pod` or a drained node, would leave
// its Service refusing every new connection until the replacement is
// ready. So, with the slices' evidence, while no other endpoint of a
// Service that lists the pod is ready, readiness stays on (200, and gRPC
// health SERVING) and the servers go on as before the signal, keep-alive
// clients included: there is nowhere else for them to go. The moment
// another endpoint is ready, readiness turns off and the lame duck
// proceeds, the delay counting from then; [DelayReport] and the log say how
// long the pod stayed ready and why it stopped. The hold and the delay
// together last at most max plus the time the budget leaves for the drain
// beyond [DrainKept] (the drain keeps that, or all its time if it has
// less; the hooks and the safety margin keep theirs), a reach that the
// Coordinator logs when it starts serving (last_endpoint_reach). A
// replacement must therefore pass its readiness probe within about that
// time of the deletion, less kube-proxy's 1 s, for no connection to fail;
// if it takes longer, raise terminationGracePeriodSeconds (and
// [WithGracePeriod]). When no other endpoint is starting, as when the
// Deployment is scaled to zero or deleted, the hold waits
// [ReplacementWait] after the signal for a replacement to appear in the
// slices, then ends: that is what a deletion with no replacement costs.
// Without the slices' evidence there is no hold.
//
// Without that evidence (outside Kubernetes, or when the watch is
// forbidden or fails, which is logged once), the delay lasts at least min,
// and ends after it once no connection has arrived for the quiet period.
// Zero means [DefaultMinDrainDelay]; pass a small positive min only where
// the load balancer is known to stop routing sooner.
//
// Either way the delay ends no sooner than a quiet period after the last
// connection that arrived during it (see [Server]): a new connection
// means that something still routes here. Keep-alive clients are told to
// leave, so that only new clients arrive; probes do not count, and a
// request in flight holds nothing. The budget check of [New] counts max.
// quiet must be positive, and min, if set, at most max.
func WithAdaptiveDrainDelay(min, quiet, max time.Duration) Option {
	return optionFunc(func(o *options) {
		o.delay = delayConfig{max: max, min: min, quiet: quiet, adaptive: true}
	})
}

// WithDrainDelay sets how long the process keeps serving after the shutdown
// signal, with readiness off, while load balancers and kube-proxy stop
// sending it new connections. During the delay every response asks its
// client to reconnect elsewhere. Zero skips the delay, which is only safe
// when no load balancer routes to the process. The default is
// [DefaultDrainDelay]. A process that never became ready skips the delay:
// nothing routes to it. [WithAdaptiveDrainDelay] ends the delay once
// routing has caught up instead; the last of the two options wins.
func WithDrainDelay(d time.Duration) Option {
	return optionFunc(func(o *options) { o.delay = delayConfig{max: d} })
}

// delayConfig is the drain delay, as the options set it.
type delayConfig struct {
	max      time.Duration // the fixed delay, or the adaptive maximum
	min      time.Duration // adaptive: the shortest without evidence from the cluster; zero for the default
	quiet    time.Duration // adaptive: how long no connection must arrive
	adaptive bool
}

// validate checks the delay's settings.
func (c delayConfig) validate() error {
	const with = "WithAdaptiveDrainDelay(min, quiet, max)"
	switch {
	case !c.adaptive && c.max < 0:
		return fmt.Errorf("lameduck: drain delay is %v; it must be zero or more (WithDrainDelay)", c.max)
	case !c.adaptive:
		return nil
	case c.min < 0:
		return fmt.Errorf("lameduck: adaptive drain delay: the minimum is %v; it must be zero (for %v) or more (%s)", c.min, DefaultMinDrainDelay, with)
	case c.max < c.min:
		return fmt.Errorf("lameduck: adaptive drain delay: the maximum %v is less than the minimum %v; swap them, or raise the maximum (%s)",
			c.max, c.min, with)
	case c.quiet <= 0:
		return fmt.Errorf("lameduck: adaptive drain delay: the quiet period is %v; it must be positive: it is how long no connection "+
			"may arrive before the delay ends early (%s); for a fixed delay use WithDrainDelay", c.quiet, with)
	}
	return nil
}

// name and option name the delay in the budget's errors.
func (c delayConfig) name() string {
	if c.adaptive {
		return "adaptive drain delay's maximum"
	}
	return "drain delay"
}

func (c delayConfig) option() string {
	if c.adaptive {
		return "the maximum of WithAdaptiveDrainDelay"
	}
	return "WithDrainDelay"
}

// minimum is the shortest adaptive delay when the cluster gives no
// evidence, within a delay of at most d.
func (c delayConfig) minimum(d time.Duration) time.Duration {
	if c.min == 0 {
		return min(DefaultMinDrainDelay, d)
	}
	return min(c.min, d)
}

// attr describes the drain delay, at most d, for the log.
func (c delayConfig) attr(d time.Duration) slog.Attr {
	if !c.adaptive || d == 0 {
		return slog.Duration("drain_delay", d)
	}
	return slog.Group("drain_delay", slog.Duration("min", c.minimum(d)), slog.Duration("quiet", c.quiet),
		slog.Duration("max", d))
}

// A DelayReport is what a drain delay measured: how long it took, what
// ended it, and how long the load balancer went on routing to the process
// after the signal.
type DelayReport struct {
	// Elapsed is the delay taken.
	Elapsed time.Duration
	// Ended says what ended the delay; it is empty until the delay is
	// over.
	Ended DelayEnd
	// Arrivals counts the connections that the servers accepted during
	// the lame-duck phase and reported (see [Server]); LastArrival
	// is how long after the signal the last of them arrived, on the server
	// that LastArrivalServer names.
	Arrivals          int
	LastArrival       time.Duration
	LastArrivalServer string
	// Unrouted is how long after the signal the EndpointSlices stopped
	// routing to the process; zero if that was not seen.
	Unrouted time.Duration
	// LastEndpointElapsed is how long after the signal the process stayed
	// ready, before the delay, because it was the last endpoint of a
	// Service: no other endpoint was ready (see [WithAdaptiveDrainDelay]).
	// It is zero if the process was not, or without the EndpointSlices.
	// While the process stays ready, [Coordinator.Status] reports it as
	// it grows.
	LastEndpointElapsed time.Duration
}

// A DelayEnd says what ended a drain delay, as [DelayReport] and the log
// say it.
type DelayEnd string

// What can end a drain delay.
const (
	// DelayFixed: a fixed delay ([WithDrainDelay]) is over.
	DelayFixed DelayEnd = "fixed"
	// DelayEndpoints: the EndpointSlices stopped routing to the process
	// (an adaptive delay, [WithAdaptiveDrainDelay], in Kubernetes).
	DelayEndpoints DelayEnd = "endpoints"
	// DelayQuiet: no connection arrived for the quiet period of an
	// adaptive delay.
	DelayQuiet DelayEnd = "quiet"
	// DelayMin: the minimum of an adaptive delay is over, with no evidence
	// from the cluster and nothing arrived for the quiet period.
	DelayMin DelayEnd = "min"
	// DelayMax: the maximum of an adaptive delay was reached.
	DelayMax DelayEnd = "max"
	// DelayCut: a second signal or the deadline cut the delay short.
	DelayCut DelayEnd = "cut"
)

// attrs are the log attributes of what the delay measured.
func (r DelayReport) attrs() []slog.Attr {
	attrs := []slog.Attr{slog.Duration("drain_delay_took", r.Elapsed), slog.String("drain_delay_ended", string(r.Ended)),
		slog.Int("arrivals", r.Arrivals)}
	if r.Arrivals > 0 {
		attrs = append(attrs, slog.Duration("last_arrival", r.LastArrival), slog.String("last_arrival_server", r.LastArrivalServer))
	}
	if r.Unrouted > 0 {
		attrs = append(attrs, slog.Duration("endpoints_unrouted", r.Unrouted))
	}
	if r.LastEndpointElapsed > 0 {
		attrs = append(attrs, slog.Duration("last_endpoint_held", r.LastEndpointElapsed))
	}
	return attrs
}

// warn logs a warning when a connection arrived in the last fifth of a
// delay that did not end by itself: the load balancer may well have gone on
// routing to the process after it.
func (r DelayReport) warn(log *slog.Logger, delay time.Duration) {
	if r.Arrivals == 0 || (r.Ended != DelayFixed && r.Ended != DelayMax) || r.LastArrival < r.Elapsed-r.Elapsed/5 {
		return
	}
	log.Warn("lameduck: a connection arrived near the end of the drain delay; the load balancer may still route here: raise the delay",
		slog.Duration("last_arrival", r.LastArrival), slog.String("last_arrival_server", r.LastArrivalServer), slog.Duration("drain_delay", delay))
}

// lameDuckDelay runs one drain delay: it gathers the evidence and closes
// done when the delay is over.
type lameDuckDelay struct {
	clock     testhook.Clock
	signalAt  time.Time
	start     time.Time // of the delay
	min, max  time.Duration
	quiet     time.Duration // zero for a fixed delay
	names     []string
	arrivals  []*arrivals     // one per server: what its LameDuck calls
	endpoints *endpointsWatch // nil without evidence from the cluster
	stopWatch context.CancelFunc
	watching  sync.WaitGroup
	wake      chan struct{}
	done      chan struct{} // closed when the delay is over
	quit      chan struct{} // closed by stop
	running   sync.WaitGroup
	// The hold, before the delay, while the process is the last endpoint
	// of a Service (see hold).
	log      *slog.Logger
	reach    time.Duration // how long after the signal the hold and the delay may last together
	released chan struct{} // closed when the hold is over by itself
	unhold   chan struct{} // closed by release
	holding  sync.WaitGroup
	// mu guards the evidence read so far: what the goroutines decide on,
	// and what Status reports meanwhile.
	mu     sync.Mutex
	lastAt time.Time // of the last arrival
	seen   []int     // arrivals seen, per server
	held   bool      // the process has been seen as the last endpoint of a Service
	unheld bool      // the hold is over
	report DelayReport
}

// newDelay returns a drain delay of at most d (none if d is zero) after
// the signal at signalAt. Make it visible to Status, then call watch before
// the servers' LameDuck, and begin once they have returned.
func newDelay(c *Coordinator, servers []Server, signalAt time.Time, d time.Duration) *lameDuckDelay {
	cfg := c.opts.delay
	l := &lameDuckDelay{
		clock: c.clock, signalAt: signalAt, min: cfg.minimum(d), max: d,
		wake: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan struct{}),
		names: make([]string, len(servers)), arrivals: make([]*arrivals, len(servers)), seen: make([]int, len(servers)),
		stopWatch: func() {},
		log:       c.log, reach: c.opts.lastEndpointReach(), released: make(chan struct{}), unhold: make(chan struct{}),
	}
	close(l.released) // unless the hold below begins
	for i, s := range servers {
		l.names[i] = serverName(s, i)
		l.arrivals[i] = &arrivals{clock: c.clock, wake: l.wake}
	}
	if cfg.adaptive && d > 0 {
		l.quiet = cfg.quiet
	}
	return l
}

// watch starts gathering evidence from endpoints, the watch that
// prepareEndpoints prepared (nil outside Kubernetes), for an adaptive
// delay, and the hold while the process is the last endpoint of a Service.
// The goroutines it starts may hold at once: Status must already see l.
func (l *lameDuckDelay) watch(endpoints *endpointsWatch) {
	if l.quiet == 0 || endpoints == nil {
		return // a fixed delay or none, or no evidence from the cluster and nothing to say
	}
	l.endpoints = endpoints
	if !endpoints.start(l.wake) {
		return // refused, and said so, while the process served
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.stopWatch = cancel
	l.watching.Add(1)
	go func() {
		defer l.watching.Done()
		endpoints.run(ctx)
	}()
	l.released = make(chan struct{})
	l.holding.Add(1)
	go l.hold()
}

// The hold. Before the delay begins, while the EndpointSlices say that the
// process is the last endpoint of one of its Services, that is, no other
// endpoint of the Service is ready, readiness stays on and the servers go
// on as before the signal: kube-proxy routes a Service with no ready
// endpoint to its terminating endpoints that are still serving, as their
// readiness probe says (KEP-1669), so that turning readiness off would
// leave the Service with no endpoint at all and every new connection
// refused until a replacement is ready. The servers' LameDuck waits too:
// a keep-alive client told to leave now would reconnect through the
// Service to this same process, its reconnections would count as
// arrivals, and the gRPC health service would turn NOT_SERVING. The hold
// ends the moment another endpoint is ready, and the delay counts from
// then.

// departureWindow returns the departure window of a drain that begins at
// now: window, as the budget shares it for a drain that begins at latest,
// the end of the longest delay, and shrunk in proportion when a hold as the
// last endpoint made the drain begin later, closer to its deadline, so
// that the turns and the work after them still fit before it.
func departureWindow(window time.Duration, latest, now, deadline time.Time) time.Duration {
	budgeted, left := deadline.Sub(latest), deadline.Sub(now)
	if !now.After(latest) || budgeted <= 0 {
		return window
	}
	if left <= 0 {
		return 0
	}
	return time.Duration(float64(window) * float64(left) / float64(budgeted))
}

// hold runs the hold until it is over, closing released, or until release.
func (l *lameDuckDelay) hold() {
	defer l.holding.Done()
	var (
		stopTimer = func() bool { return false }
		timerAt   = time.Duration(-1) // after the signal; -1: none
	)
	defer func() { stopTimer() }()
	for {
		// The evidence first, then the time: a hold that the slices end
		// lasted until it was read, however long ago this loop woke.
		last, alone := l.endpoints.lastEndpoint()
		at, why := l.holdEnd(last)
		in := l.clock.Now().Sub(l.signalAt)
		l.mu.Lock()
		if (last == lastAlone || last == lastReplacing) && !l.held {
			l.held = true
			l.log.Info("lameduck: staying ready after the signal: the last endpoint of its Services; readiness turns off once another endpoint is ready",
				slog.Any("services", alone), slog.Bool("replacement_starting", last == lastReplacing), slog.Duration("until_at_most", at))
		}
		l.mu.Unlock()
		if in >= at {
			l.endHold(in, why, alone)
			close(l.released)
			return
		}
		if at != timerAt {
			stopTimer()
			timerAt = at
			// From the time now, not in's: the clock may have moved
			// since, and the timer must still fire at at.
			stopTimer = l.clock.AfterFunc(at-l.clock.Now().Sub(l.signalAt), func() { poke(l.wake) })
		}
		select {
		case <-l.wake:
		case <-l.unhold:
			l.endHold(l.clock.Now().Sub(l.signalAt), "cut", alone)
			return
		}
	}
}

// holdEnd returns when, after the signal, the hold ends as the slices say
// last, and why.
func (l *lameDuckDelay) holdEnd(last lastness) (time.Duration, string) {
	switch last {
	case lastUnknown:
		return min(ReplacementWait, l.reach), "the EndpointSlices were not read in time"
	case lastAlone:
		return min(ReplacementWait, l.reach), "no replacement appeared"
	case lastReplacing:
		return l.reach, "the grace period allows no more: raise terminationGracePeriodSeconds, or make the replacement start sooner"
	}
	if state, _ := l.endpoints.read(); state == routingNone {
		return 0, "no evidence from the EndpointSlices"
	}
	return 0, "another endpoint is ready"
}

// endHold records the end of the hold, in after the signal, and logs it if
// the process was held as the last endpoint.
func (l *lameDuckDelay) endHold(in time.Duration, why string, alone []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unheld = true
	if !l.held {
		return
	}
	l.report.LastEndpointElapsed = max(in, time.Nanosecond)
	l.log.Info("lameduck: readiness off after staying ready as the last endpoint", slog.String("why", why),
		slog.Duration("last_endpoint_held", l.report.LastEndpointElapsed), slog.Any("services", alone))
}

// release ends the hold if it still runs, and returns the longest delay
// left: at most its maximum, and after a hold, what the reach leaves of it.
func (l *lameDuckDelay) release() time.Duration {
	close(l.unhold)
	l.holding.Wait()
	if inflight.IsClosed(l.released) && l.endpoints != nil && l.max > 0 {
		// Only this goroutine writes min and max; the delay's goroutine
		// has not begun.
		l.max = max(0, min(l.max, l.reach-l.clock.Now().Sub(l.signalAt)))
		l.min = min(l.min, l.max)
	}
	return l.max
}

// begin starts the delay, as from start, the moment the lame-duck phase
// was entered: an observer of that phase sees the delay already running.
func (l *lameDuckDelay) begin(start time.Time) {
	l.start = start
	l.running.Add(1)
	go l.run()
}

// stop ends the delay if it is still running, and returns what it measured.
func (l *lameDuckDelay) stop() DelayReport {
	close(l.quit)
	l.running.Wait()
	l.stopWatch()
	l.watching.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.report
}

// measured returns what the delay has measured so far; a nil l, none.
func (l *lameDuckDelay) measured() DelayReport {
	if l == nil {
		return DelayReport{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.quit: // stopped: the report is final
	default:
		l.updateLocked() // an arrival counts from the moment it is reported
	}
	r := l.report
	if l.held && !l.unheld {
		r.LastEndpointElapsed = max(l.clock.Now().Sub(l.signalAt), time.Nanosecond)
	}
	return r
}

func (l *lameDuckDelay) run() {
	defer l.running.Done()
	var (
		stopTimer = func() bool { return false }
		timerAt   = time.Duration(-1) // after start; -1: none
	)
	defer func() { stopTimer() }()
	for {
		// The time first, then the evidence: everything that happened up
		// to that time is then in the evidence, so that an arrival between
		// the two cannot go unseen while the quiet period is measured.
		in := l.clock.Now().Sub(l.start) // into the delay
		l.mu.Lock()
		l.updateLocked()
		running := l.report.Ended == ""
		var at time.Duration
		if running {
			var why DelayEnd
			at, why = l.end()
			if in >= at {
				l.report.Ended, l.report.Elapsed = why, in
			}
		}
		l.mu.Unlock()
		switch {
		case !running:
			// Go on counting arrivals until stop: the log reports them all.
		case in >= at:
			close(l.done)
		case at != timerAt:
			stopTimer()
			timerAt = at
			// From the time now, not in's: the clock may have moved
			// since, and the timer must still fire at at.
			stopTimer = l.clock.AfterFunc(at-l.clock.Now().Sub(l.start), func() { poke(l.wake) })
		}
		select {
		case <-l.wake:
		case <-l.quit:
			l.mu.Lock()
			if l.report.Ended == "" {
				l.report.Ended, l.report.Elapsed = DelayCut, l.clock.Now().Sub(l.start)
			}
			l.updateLocked()
			l.mu.Unlock()
			return
		}
	}
}

// end returns when, into the delay, the evidence gathered so far ends it,
// and why. l.mu is held.
func (l *lameDuckDelay) end() (time.Duration, DelayEnd) {
	if l.quiet == 0 {
		return l.max, DelayFixed
	}
	quietAt := l.quietFrom() + l.quiet
	state := routingNone
	var since time.Time
	if l.endpoints != nil {
		state, since = l.endpoints.read()
	}
	var at time.Duration
	var why DelayEnd
	switch state {
	case routingUnknown, routingHere:
		return l.max, DelayMax // wait for the cluster to say
	case routingGone:
		at, why = since.Sub(l.start)+EndpointsAllowance, DelayEndpoints
	default:
		at, why = l.min, DelayMin
	}
	if quietAt > at {
		at, why = quietAt, DelayQuiet
	}
	if at >= l.max {
		return l.max, DelayMax
	}
	return at, why
}

// quietFrom is when the current quiet period began, into the delay: at the
// last arrival, or at the start. l.mu is held.
func (l *lameDuckDelay) quietFrom() time.Duration {
	if l.report.Arrivals == 0 {
		return 0
	}
	return max(0, l.lastAt.Sub(l.start))
}

// updateLocked reads every server's arrivals and the cluster's evidence
// into the report: the delay's goroutine before it decides, and
// [lameDuckDelay.measured] for Status, so that an arrival counts from the
// moment it is reported.
func (l *lameDuckDelay) updateLocked() {
	for i, a := range l.arrivals {
		count, lastAt := a.read()
		if count > l.seen[i] {
			l.report.Arrivals += count - l.seen[i]
			l.seen[i] = count
			if lastAt.After(l.lastAt) || l.report.LastArrivalServer == "" {
				l.lastAt = lastAt
				l.report.LastArrival, l.report.LastArrivalServer = lastAt.Sub(l.signalAt), l.names[i]
			}
		}
	}
	if l.endpoints != nil && l.report.Unrouted == 0 {
		if state, since := l.endpoints.read(); state == routingGone {
			l.report.Unrouted = max(since.Sub(l.signalAt), time.Nanosecond)
		}
	}
}
