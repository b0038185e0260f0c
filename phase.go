package lameduck

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lameduck/lameduck/inflight"
)

// A Phase is a step of the sequence that [Coordinator.Run] goes through.
type Phase int

// The phases, in the order Run enters them.
const (
	// PhaseStarting: Run binds every server's listeners.
	PhaseStarting Phase = iota
	// PhaseServing: every server serves; readiness follows MarkReady and
	// the checks. Run waits for a signal, the end of its context, or a
	// failure; then, while the process is the last endpoint of one of its
	// Services, for another to be ready (see [WithAdaptiveDrainDelay]).
	PhaseServing
	// PhaseLameDuck: readiness answers 503 for good; servers keep serving
	// but ask clients to move elsewhere, for the drain delay. It is entered
	// once every server's LameDuck has returned.
	PhaseLameDuck
	// PhaseDraining: servers stop accepting and in-flight work finishes;
	// workers' contexts are done. At the drain deadline whatever remains
	// is cut.
	PhaseDraining
	// PhaseStopping: shutdown hooks run, in reverse order of registration.
	PhaseStopping
	// PhaseStopped: Run is about to return.
	PhaseStopped
)

// numPhases is the number of phases.
const numPhases = int(PhaseStopped) + 1

var phaseNames = [numPhases]string{"starting", "serving", "lame duck", "draining", "stopping", "stopped"}

// String names the phase as the log does, such as "lame duck".
func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// An Event reports that [Coordinator.Run] entered a phase. Observers added
// with [Coordinator.OnPhase] receive one per phase, in order.
type Event struct {
	// Phase is the phase just entered.
	Phase Phase
	// Elapsed is how long the previous phase lasted; zero for
	// PhaseStarting.
	Elapsed time.Duration
	// Cut counts the work cut at the deadline or by a second signal. It is
	// set from PhaseStopping on.
	Cut inflight.Counts
	// Delay is what the drain delay measured: what ended it, and how long
	// the load balancer went on routing to the process. It is set from
	// PhaseDraining on, whose Elapsed is the delay taken.
	Delay DelayReport
	// Departures says how the long-lived work left (see
	// [WithDepartureWindow]). It is set from PhaseStopping on.
	Departures DepartureReport
}

// enter moves to phase p: one log line with the previous phase's duration,
// and one Event for each observer.
func (r *run) enter(p Phase, cut inflight.Counts, attrs ...slog.Attr) {
	now := r.c.clock.Now()
	elapsed := now.Sub(r.phaseAt)
	if p == PhaseStarting {
		elapsed = 0
	}
	r.phase, r.phaseAt = p, now
	ev := Event{Phase: p, Elapsed: elapsed, Cut: cut, Delay: r.delay, Departures: r.departures}
	r.c.entered(ev, now) // status.go
	level := slog.LevelInfo
	attrs = append(attrs, slog.Duration("previous_phase_took", elapsed))
	if p >= PhaseStopping {
		attrs = append(attrs, slog.String("cut", cut.String()))
		if cut.Total() > 0 {
			level = slog.LevelWarn
		}
	}
	r.c.log.LogAttrs(context.Background(), level, "lameduck: "+p.String(), attrs...)
	for _, f := range r.observers {
		f(ev)
	}
}
