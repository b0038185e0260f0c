package lameduck

import (
	"log/slog"
	"sync"
	"time"
)

// The drain delay is step 3 of the sequence: the lame-duck phase, when
// readiness is off and every client is asked to reconnect elsewhere while
// kube-proxy and load balancers stop routing to the process. This file
// measures what the load balancer does meanwhile, and ends an adaptive
// delay once it has caught up.
//
// Once every client already connected has been told to leave (HTTP/1
// "Connection: close", HTTP/2 and gRPC GOAWAY) and has reconnected
// elsewhere, a new connection arrives only if the load balancer still
// routes to this process. So the last arrival after the signal measures the
// load balancer's lag, and a quiet period with no arrival, once every
// connection that arrived has been told to leave and is gone, is evidence
// that routing has caught up.

// WithAdaptiveDrainDelay makes the drain delay adaptive, instead of the
// fixed delay of [WithDrainDelay]: the lame-duck phase lasts at least min
// and at most max, and ends in between as soon as nothing suggests that
// routing still points here: no server that reports arrivals (see
// [ArrivalReporter]; the adapters in httpserver and grpcserver do) has
// accepted a connection for the quiet period, and every connection
// accepted since the signal has been told to leave and is gone.
//
// Ending early is safe when traffic is steady: every client of a load
// balancer that still routes here would open connections during the quiet
// period. It is not when traffic is sparse: with no request for the quiet
// period there is no evidence either way, so min must cover the load
// balancer's lag on its own then. A quiet period a few times longer than
// the gap between two connections of the quietest client is a good start.
// The budget check of [New] counts max. min must not exceed max, and quiet
// must be positive.
func WithAdaptiveDrainDelay(min, quiet, max time.Duration) Option {
	return optionFunc(func(o *options) {
		o.drainDelay, o.delayMin, o.quietPeriod = max, min, quiet
		o.adaptive = true
	})
}

// An ArrivalReporter is a [Server] that counts, in [Arrivals], the
// connections it accepts during the lame-duck phase, so that the
// Coordinator can measure the load balancer's lag and end an adaptive
// drain delay. The servers of packages httpserver and grpcserver are.
type ArrivalReporter interface {
	Server
	// Arrivals returns the server's Arrivals; it returns the same value
	// every time.
	Arrivals() *Arrivals
}

// Arrivals counts the connections a server accepts during the lame-duck
// phase, from its LameDuck call on. A server calls [Arrivals.Arrived] for
// each such connection, after asking it to leave or arranging for its first
// response to, and [Arrivals.Left] once that connection is closed. They lock
// a mutex, and are called only during the shutdown. The zero value is ready
// to use; an Arrivals must not be copied after first use.
type Arrivals struct {
	mu     sync.Mutex
	count  int       // connections arrived
	open   int       // of those, not yet gone
	lastAt time.Time // when the last arrived
	// Set by the Coordinator while it watches: the clock that stamps
	// arrivals, and a channel poked on every change.
	clock Clock
	wake  chan struct{}
}

// Arrived records a connection accepted during the lame-duck phase.
func (a *Arrivals) Arrived() {
	a.mu.Lock()
	a.count++
	a.open++
	if a.clock != nil {
		a.lastAt = a.clock.Now()
	}
	wake := a.wake
	a.mu.Unlock()
	poke(wake)
}

// Left records that a connection counted by [Arrivals.Arrived] is closed.
// It panics if there is none.
func (a *Arrivals) Left() {
	a.mu.Lock()
	if a.open == 0 {
		a.mu.Unlock()
		panic("lameduck: Arrivals.Left called without Arrived")
	}
	a.open--
	wake := a.wake
	a.mu.Unlock()
	poke(wake)
}

// watch makes clock stamp arrivals, and every change poke wake.
func (a *Arrivals) watch(clock Clock, wake chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clock, a.wake = clock, wake
}

func (a *Arrivals) read() (count, open int, lastAt time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count, a.open, a.lastAt
}

// poke wakes whoever waits on ch, without blocking; a nil ch is no one.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// How a drain delay ended, as the log says it.
const (
	delayFixed   = "fixed"
	delayQuiet   = "quiet"   // adaptive, ended by the quiet period
	delayMaximum = "maximum" // adaptive, ended at the maximum
	delayCut     = "cut"     // a second signal or the deadline
)

// lameDuckDelay runs one drain delay: it measures arrivals and closes done
// when the delay is over.
type lameDuckDelay struct {
	clock       Clock
	signalAt    time.Time
	start       time.Time // of the delay
	min, max    time.Duration
	quiet       time.Duration // zero for a fixed delay
	names       []string
	arrivals    []*Arrivals // nil for servers that do not report
	wake        chan struct{}
	done        chan struct{} // closed when the delay is over
	quit        chan struct{} // closed by stop
	running     sync.WaitGroup
	lastAt      time.Time // of the last arrival
	delayReport           // written by the goroutine, read after stop
}

// delayReport is what a drain delay measured.
type delayReport struct {
	took       time.Duration // the delay taken
	ended      string
	count      int           // arrivals
	last       time.Duration // of the last arrival, after the signal
	lastServer string
	seenCount  []int // per server
}

// attrs are the log attributes of what the delay measured.
func (r delayReport) attrs() []slog.Attr {
	attrs := []slog.Attr{slog.Duration("drain_delay_took", r.took), slog.String("drain_delay_ended", r.ended),
		slog.Int("arrivals", r.count)}
	if r.count > 0 {
		attrs = append(attrs, slog.Duration("last_arrival", r.last), slog.String("last_arrival_server", r.lastServer))
	}
	return attrs
}

// warn logs a warning when a connection arrived in the last fifth of a
// delay that did not end by itself: the load balancer may well have gone on
// routing to the process after it.
func (r delayReport) warn(log *slog.Logger, delay time.Duration) {
	if r.count == 0 || (r.ended != delayFixed && r.ended != delayMaximum) || r.last < r.took-r.took/5 {
		return
	}
	log.Warn("lameduck: a connection arrived near the end of the drain delay; the load balancer may still route here: raise the delay",
		slog.Duration("last_arrival", r.last), slog.String("last_arrival_server", r.lastServer), slog.Duration("drain_delay", delay))
}

// delayAttr describes the drain delay of o, at most d, for the log.
func delayAttr(o *options, d time.Duration) slog.Attr {
	if !o.adaptive || d == 0 {
		return slog.Duration("drain_delay", d)
	}
	return slog.Group("drain_delay", slog.Duration("min", min(o.delayMin, d)), slog.Duration("quiet", o.quietPeriod),
		slog.Duration("max", d))
}

// watchArrivals starts watching the arrivals of servers after the signal at
// signalAt, for a drain delay of at most d (none if d is zero): call it
// before the servers' LameDuck, and begin once they have returned.
func watchArrivals(c *Coordinator, servers []Server, signalAt time.Time, d time.Duration) *lameDuckDelay {
	o := &c.opts
	l := &lameDuckDelay{
		clock: c.clock, signalAt: signalAt, min: min(o.delayMin, d), max: d,
		wake: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan struct{}),
		names: make([]string, len(servers)), arrivals: make([]*Arrivals, len(servers)),
	}
	if o.adaptive && d > 0 {
		l.quiet = o.quietPeriod
	}
	l.seenCount = make([]int, len(servers))
	for i, s := range servers {
		l.names[i] = serverName(s, i)
		if ar, ok := s.(ArrivalReporter); ok {
			if a := ar.Arrivals(); a != nil {
				l.arrivals[i] = a
				a.watch(c.clock, l.wake)
			}
		}
	}
	return l
}

// begin starts the delay now.
func (l *lameDuckDelay) begin() {
	l.start = l.clock.Now()
	l.running.Add(1)
	go l.run()
}

// stop ends the delay if it is still running, and returns what it measured.
func (l *lameDuckDelay) stop() delayReport {
	close(l.quit)
	l.running.Wait()
	return l.delayReport
}

func (l *lameDuckDelay) run() {
	defer l.running.Done()
	var (
		stopTimer = func() bool { return false }
		timerAt   = time.Duration(-1) // after start; -1: none
	)
	defer func() { stopTimer() }()
	for {
		open := l.update()
		in := l.clock.Now().Sub(l.start) // into the delay
		if l.ended == "" {
			switch {
			case in >= l.max && l.quiet == 0:
				l.ended = delayFixed
			case in >= l.max:
				l.ended = delayMaximum
			case l.quiet > 0 && in >= l.min && open == 0 && in-l.quietFrom() >= l.quiet:
				l.ended = delayQuiet
			}
			if l.ended != "" {
				l.took = in
				close(l.done)
				// Go on counting arrivals until stop: the log reports
				// them all.
			}
		}
		if l.ended == "" {
			next := l.max
			if l.quiet > 0 && open == 0 {
				next = min(l.max, max(l.min, l.quietFrom()+l.quiet))
			}
			if next != timerAt {
				stopTimer()
				timerAt = next
				stopTimer = l.clock.AfterFunc(next-in, func() { poke(l.wake) })
			}
		}
		select {
		case <-l.wake:
		case <-l.quit:
			if l.ended == "" {
				l.ended, l.took = delayCut, l.clock.Now().Sub(l.start)
			}
			l.update()
			return
		}
	}
}

// quietFrom is when the current quiet period began, into the delay: at the
// last arrival, or at the start.
func (l *lameDuckDelay) quietFrom() time.Duration {
	if l.count == 0 {
		return 0
	}
	return max(0, l.lastAt.Sub(l.start))
}

// update reads every server's arrivals, and returns how many connections
// that arrived are still open.
func (l *lameDuckDelay) update() (open int) {
	for i, a := range l.arrivals {
		if a == nil {
			continue
		}
		count, o, lastAt := a.read()
		open += o
		if count > l.seenCount[i] {
			l.count += count - l.seenCount[i]
			l.seenCount[i] = count
			if lastAt.After(l.lastAt) || l.lastServer == "" {
				l.lastAt, l.last, l.lastServer = lastAt, lastAt.Sub(l.signalAt), l.names[i]
			}
		}
	}
	return open
}
