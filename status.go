package lameduck

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/lameduck/lameduck/inflight"
)

// A Status is a snapshot of a [Coordinator], taken by [Coordinator.Status]
// for exporting metrics: the phase, the work in flight, what was cut, and
// what the readiness checks said. Reading it at scrape time, rather than
// counting events, makes the in-flight counts exact.
type Status struct {
	// Phase is the phase Run is in: PhaseStarting until Run binds the
	// listeners and before Run is called.
	Phase Phase
	// Ready reports whether [Coordinator.MarkReady] has been called and the
	// shutdown has not begun; the checks are not run for it (see
	// [Coordinator.CheckReadiness]).
	Ready bool
	// Elapsed is how long Run has spent in each phase it has entered, the
	// current one up to now. Phases that a shutdown skips, such as the
	// drain after a failed start, are absent. It is empty before Run.
	Elapsed map[Phase]time.Duration
	// Cut counts the work cut at the deadline or by a second signal. It is
	// set from PhaseStopping on; it is zero after a clean drain.
	Cut inflight.Counts
	// Delay is what the drain delay has measured: from the start of the
	// lame-duck phase, the connections that arrived and when the
	// EndpointSlices stopped routing here, as they happen; from the end
	// of the delay, its length and what ended it (see [Event]).
	Delay DelayReport
	// Departures says how the long-lived work has left so far (see
	// [WithDepartureWindow]): its turns are given from the drain on.
	Departures DepartureReport
	// Servers lists, in registration order, the servers registered with
	// [Coordinator.Register] and the work they have in flight. Admin
	// servers ([Coordinator.RegisterAdmin]) are not listed: nothing drains
	// them.
	Servers []ServerStatus
	// Checks lists the readiness checks, in the order they were added.
	Checks []CheckStatus
}

// A ServerStatus is one server's part of a [Status].
type ServerStatus struct {
	// Name names the server as logs and errors do: its String method, or
	// "server N" for the Nth server registered.
	Name string
	// InFlight is the work the server has in flight now.
	InFlight inflight.Counts
}

// A CheckStatus is what a readiness check ([Coordinator.AddCheck]) has
// reported so far, counting every call that finished, whichever probe or
// [Coordinator.CheckReadiness] asked for it.
type CheckStatus struct {
	// Name is the check's name.
	Name string
	// Passing reports whether the last call passed; it is false before the
	// first call has finished.
	Passing bool
	// Calls counts the calls that finished, and Failures those of them that
	// failed, a timeout included.
	Calls, Failures uint64
	// Time is the time the finished calls took, added up; a call that
	// timed out counts for its timeout.
	Elapsed time.Duration
	// Last is when the last call finished; zero before the first.
	Last time.Time
}

// progress is what Run has done so far, for Phase and Status.
type progress struct {
	phase atomic.Int32 // the current Phase

	mu sync.Mutex
	// Guarded by mu: the phases entered, in order, and when.
	entered []phaseEntry
	last    Event // of the phase entered last
	// delay is the drain delay, once the lame-duck phase has begun.
	delay *lameDuckDelay
	// finalRead is closed by the first MarkExported of a Status of
	// PhaseStopped.
	finalRead chan struct{}
	finalOnce sync.Once
}

type phaseEntry struct {
	phase Phase
	at    time.Time
}

// entered records that Run entered a phase at now, as ev reports it.
func (c *Coordinator) entered(ev Event, now time.Time) {
	c.progress.mu.Lock()
	c.progress.entered = append(c.progress.entered, phaseEntry{ev.Phase, now})
	c.progress.last = ev
	c.progress.mu.Unlock()
	c.progress.phase.Store(int32(ev.Phase))
	c.enteredUpTo(ev.Phase)
}

// MarkExported records that st, a [Status], has been exported, as a
// metrics scrape of package prommetrics does once it has sent the values:
// with [WithFinalScrape], Run keeps the admin servers up until a Status of
// PhaseStopped, the final values, has been exported. Status itself changes
// nothing, so that reading it to decide anything else is safe.
func (c *Coordinator) MarkExported(st Status) {
	if st.Phase == PhaseStopped {
		c.progress.finalOnce.Do(func() { close(c.progress.finalRead) })
	}
}

// Status returns a snapshot of the Coordinator, for exporting metrics (see
// package github.com/lameduck/lameduck/prommetrics). It is safe to call at
// any time, from any goroutine, and runs no readiness check.
func (c *Coordinator) Status() Status {
	st := Status{
		Phase:   Phase(c.progress.phase.Load()),
		Ready:   c.state.Load() == stateReady,
		Elapsed: make(map[Phase]time.Duration),
	}
	now := c.clock.Now()
	c.progress.mu.Lock()
	for i, e := range c.progress.entered {
		end := now
		if i+1 < len(c.progress.entered) {
			end = c.progress.entered[i+1].at
		}
		st.Elapsed[e.phase] += end.Sub(e.at)
	}
	last := c.progress.last
	st.Cut = last.Cut
	delay := c.progress.delay
	c.progress.mu.Unlock()
	st.Delay = delay.measured()
	st.Departures = c.departures.measured()

	c.mu.Lock()
	servers, checks := c.servers, c.checks
	c.mu.Unlock()
	for i, s := range servers {
		st.Servers = append(st.Servers, ServerStatus{Name: serverName(s, i), InFlight: s.InFlight()})
	}
	st.Checks = make([]CheckStatus, len(checks))
	for i, k := range checks {
		k.mu.Lock()
		st.Checks[i] = k.stats
		k.mu.Unlock()
		st.Checks[i].Name = k.Name
	}
	return st
}
