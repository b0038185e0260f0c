package lameduck

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lameduck/lameduck/internal/testhook"
)

// departurePace is how far apart long-lived work leaves when there is so
// little of it that the departure window would spread it thinner: the
// process then exits as soon as the last of it is gone rather than at the
// window's end. A hundred reconnections a second are nothing to the pods
// that take them; the window bounds the rate when there are more.
//
// It is also how long into the drain the first turn comes: by then the
// servers have stopped accepting, so that a client told to leave cannot
// reconnect here.
const departurePace = 10 * time.Millisecond

// Leaving returns a channel that is closed when the long-lived work served
// under ctx — a websocket, an event stream, a streaming RPC — should end,
// so that its client reconnects through the load balancer to a pod that
// stays: its turn among the departures that [Coordinator.Run] spreads over
// the departure window once the drain delay is over (see
// [WithDepartureWindow]). ctx is the request's or the stream's context.
//
// A websocket handler selects on it and closes its connection with status
// 1012 (service restart), through its websocket library:
//
//	select {
//	case <-lameduck.Leaving(r.Context()):
//		conn.Close(websocket.StatusServiceRestart, "restarting")
//		return
//	case msg := <-messages:
//		// ...
//	}
//
// The server adapters give turns to what they know to be long-lived:
// package httpserver to requests with an Upgrade header (websockets) or that
// accept text/event-stream, whose streams it also ends by itself at their
// turn; package grpcserver to the RPCs in which the server streams
// (server-streaming and bidirectional), whose contexts it ends at their
// turn. For any other ctx Leaving returns nil, a channel that is never
// closed: such work finishes in the drain or is cut at the deadline (see
// [Coordinator.Entered] for the phases).
func Leaving(ctx context.Context) <-chan struct{} {
	if d, ok := ctx.Value(departureKey{}).(*Departure); ok {
		return d.ch
	}
	return nil
}

// departureKey is the context key of a *Departure.
type departureKey struct{}

// A Departer is a [Server] with long-lived work, such as websockets, event
// streams or streaming RPCs, that leaves spread out over the departure
// window rather than all at once (see [WithDepartureWindow]). Run links the
// Departures of every Departer it runs together before it calls Listen.
type Departer interface {
	Server
	// Departures returns the server's departures. It returns the same
	// value every time.
	Departures() *Departures
}

// Departures are the long-lived work of a [Departer]: each piece of it
// joins with [Departures.Join] and is told, at its turn, to leave. Every
// server's Departures share the turns of the Coordinator that runs it. The
// zero value is ready to use; Departures must not be copied after first
// use. Work joined before Run has linked it, or when no Coordinator runs
// the server, is never told to leave.
type Departures struct {
	s atomic.Pointer[schedule]
}

// Join adds one piece of long-lived work to the departures, and returns its
// [Departure] and a context derived from ctx that carries it, for
// [Leaving]. At the work's turn, its Departure's channel is closed, and
// leave, unless nil, is called, from a goroutine of the Coordinator's: it
// must not block. Call [Departure.Done] once the work has ended.
func (d *Departures) Join(ctx context.Context, leave func()) (context.Context, *Departure) {
	s := d.s.Load()
	if s == nil {
		s = newSchedule(nil) // a schedule that never starts
		if !d.s.CompareAndSwap(nil, s) {
			s = d.s.Load()
		}
	}
	dep := &Departure{s: s, ch: make(chan struct{}), leave: leave}
	s.join(dep)
	return context.WithValue(ctx, departureKey{}, dep), dep
}

// link makes d's work take its turns from s. Run calls it before Listen;
// work joined before then keeps a schedule that never starts.
func (d *Departures) link(s *schedule) { d.s.CompareAndSwap(nil, s) }

// A Departure is one piece of long-lived work's place among the
// departures (see [Departures.Join]).
type Departure struct {
	s     *schedule
	ch    chan struct{} // closed at the turn
	leave func()

	// Guarded by s.mu.
	at    time.Time // the turn, once given
	told  bool
	ended bool
}

// Leaving returns a channel that is closed at the work's turn to leave.
func (d *Departure) Leaving() <-chan struct{} { return d.ch }

// Done records that the work has ended: by itself, if its turn had not
// come, which the Coordinator reports as having left by itself. Calls
// after the first do nothing.
func (d *Departure) Done() { d.s.done(d) }

// A DepartureReport says how the long-lived work of a shutdown left (see
// [WithDepartureWindow]).
type DepartureReport struct {
	// Told counts the work told to leave at its turn; Left the work that
	// ended by itself during the shutdown, before its turn. Work still
	// there at the deadline is counted as cut in [Event].Cut.
	Told, Left int
	// Window is how long the turns took, from the end of the drain delay
	// to the last turn; zero until the first turn.
	Window time.Duration
	// PeakPerSecond is the most work told to leave within any one second.
	PeakPerSecond int
}

// attrs are the log attributes of the departures, if there were any.
func (r DepartureReport) attrs() []slog.Attr {
	if r.Told+r.Left == 0 {
		return nil
	}
	return []slog.Attr{slog.Group("departures", slog.Int("told", r.Told), slog.Int("left", r.Left),
		slog.Duration("window", r.Window), slog.Int("peak_per_second", r.PeakPerSecond))}
}

// A schedule gives the long-lived work of a Coordinator's servers their
// turns to leave: once the drain begins, in random order, evenly spread
// over the window, each at a random moment of its own slot, so that the
// clients' reconnections come at a steady rate.
type schedule struct {
	clock testhook.Clock // nil for a schedule that never starts

	mu sync.Mutex
	// Guarded by mu.
	waiting  map[*Departure]struct{} // joined, neither told nor ended
	shutdown bool                    // the shutdown has begun: ends count as left
	started  bool                    // the drain has begun: turns are given
	stopped  bool                    // Run is over: no turn is given any more
	gap      time.Duration           // between two turns
	last     time.Time               // the latest turn given
	close    time.Time               // when the turns given at the start end
	start    time.Time
	queue    []*Departure // turns given and not yet come, by time
	stop     func() bool  // the timer of queue[0]
	told     []time.Time  // when each was told, in order
	report   DepartureReport
}

func newSchedule(clock testhook.Clock) *schedule {
	return &schedule{clock: clock, waiting: make(map[*Departure]struct{})}
}

func (s *schedule) join(d *Departure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return // never told: Close cuts it
	}
	s.waiting[d] = struct{}{}
	if s.started {
		// Late: after the turns already given, at the same pace.
		at := s.clock.Now()
		if s.last.After(at) {
			at = s.last
		}
		s.queueLocked(d, at.Add(s.gap))
		s.armLocked()
	}
}

func (s *schedule) done(d *Departure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.ended {
		return
	}
	d.ended = true
	if _, ok := s.waiting[d]; !ok {
		return
	}
	delete(s.waiting, d)
	if s.shutdown && !d.told {
		s.report.Left++
	}
}

// beginShutdown makes work that ends from now on count as having left by
// itself.
func (s *schedule) beginShutdown() {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
}

// begin gives every piece of work waiting its turn, spread over window from
// now, and tells each at its turn.
func (s *schedule) begin(window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	s.start = s.clock.Now()
	s.last = s.start
	// The turns take the window after the first.
	n := len(s.waiting)
	if span := window - departurePace; n > 0 && span > 0 {
		s.gap = min(span/time.Duration(n), departurePace)
	}
	order := make([]*Departure, 0, n)
	for d := range s.waiting {
		order = append(order, d)
	}
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	first := s.start.Add(departurePace)
	s.last = first
	s.close = first.Add(time.Duration(n) * s.gap)
	for i, d := range order {
		slot := first.Add(time.Duration(i) * s.gap)
		s.queueLocked(d, slot.Add(time.Duration(rand.Int64N(int64(s.gap)+1))))
	}
	s.armLocked()
}

// queueLocked gives d its turn at at, which is no earlier than the turns
// already given.
func (s *schedule) queueLocked(d *Departure, at time.Time) {
	d.at = at
	s.queue = append(s.queue, d)
	if at.After(s.last) {
		s.last = at
	}
}

// armLocked tells the work whose turn has come and sets the timer for the
// next turn.
func (s *schedule) armLocked() {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	now := s.clock.Now()
	var leave []func()
	for len(s.queue) > 0 {
		d := s.queue[0]
		if d.ended || d.told {
			s.queue[0] = nil
			s.queue = s.queue[1:]
			continue
		}
		at := d.at
		if n := len(s.told); n > 0 {
			// Turns that a busy machine made late are caught up with at
			// one and a half times the pace, not all at once, so that a
			// stall of the process does not become a burst of
			// reconnections; faster where that would run past the end of
			// the turns, which the budget keeps before the deadline.
			prev := s.told[n-1]
			catchUp := s.gap * 2 / 3
			if left := s.close.Sub(prev); left < catchUp*time.Duration(len(s.queue)) {
				catchUp = max(0, left/time.Duration(len(s.queue)))
			}
			at = later(at, prev.Add(catchUp))
		}
		if at.After(now) {
			s.stop = s.clock.AfterFunc(at.Sub(now), s.tick)
			break
		}
		s.queue[0] = nil
		s.queue = s.queue[1:]
		d.told = true
		delete(s.waiting, d)
		close(d.ch)
		s.told = append(s.told, now)
		s.report.Told++
		s.report.Window = now.Sub(s.start)
		if d.leave != nil {
			leave = append(leave, d.leave)
		}
	}
	if len(leave) > 0 {
		// Outside the lock: leave may end the work, which calls Done.
		go func() {
			for _, f := range leave {
				f()
			}
		}()
	}
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *schedule) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.armLocked()
	}
}

// end stops giving turns, and returns what the departures did.
func (s *schedule) end() DepartureReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	return s.reportLocked()
}

// measured returns what the departures have done so far.
func (s *schedule) measured() DepartureReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reportLocked()
}

func (s *schedule) reportLocked() DepartureReport {
	r := s.report
	r.PeakPerSecond = peakPerSecond(s.told)
	return r
}

// peakPerSecond returns the most times within any one second; times are in
// order.
func peakPerSecond(times []time.Time) int {
	peak, from := 0, 0
	for i, t := range times {
		for t.Sub(times[from]) >= time.Second {
			from++
		}
		peak = max(peak, i-from+1)
	}
	return peak
}
