package lameduck

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/lameduck/lameduck/inflight"
)

// drain gives the long-lived work its turns to leave (departures.go),
// enters PhaseDraining, ends the workers' context, and waits for every
// server's Drain and every worker to return, or for the drain deadline.
func (r *run) drain() {
	c := r.c
	var cancel func(error)
	r.drainCtx, cancel = c.deadlineContext(r.hardCtx, r.drainDeadline)
	r.cleanup = append(r.cleanup, func() { cancel(nil) })
	// The turns are given before the drain is entered, so that an
	// observer of the phase finds them.
	c.departures.begin(departureWindow(c.opts.window, r.signalAt.Add(c.opts.delay.max), c.clock.Now(), r.drainDeadline)) // delay.go
	r.enter(PhaseDraining, inflight.Counts{}, r.delay.attrs()...)
	r.delay.warn(c.log, r.maxDelay)
	r.stopWork()
	// Drain's error says no more than the counts from Close below.
	r.drains = r.each(r.drainCtx, func(_ int, s Server) { _ = s.Drain(r.drainCtx) })
	for r.working > 0 && r.await(nil, r.drainCtx) {
	}
}

// cut closes every server, which ends what is left of the drain, waits
// for every Drain and Serve to return, and returns an error wrapping
// ErrCut that says what was cut, if anything was.
func (r *run) cut() error {
	c := r.c
	var cancel func(error)
	r.closeCtx, cancel = c.deadlineContext(r.parent, r.closeDeadline(r.deadline))
	r.cleanup = append(r.cleanup, func() { cancel(nil) })
	report := r.closeServers(r.closeCtx)
	report.Workers = r.working
	r.cutCounts, r.stillRunning = report, r.runningWorkers()
	// Close makes Serve and Drain return; give them until the deadline.
	if !r.await(r.drains.done, r.closeCtx) {
		r.errs = append(r.errs, r.drains.hung("Drain"))
	}
	for r.serving > 0 && r.await(nil, r.closeCtx) {
	}
	r.takeExits() // those that came with the deadline
	if r.serving > 0 {
		var names []string
		for i, serving := range r.serves {
			if serving {
				names = append(names, serverName(r.servers[i], i))
			}
		}
		r.errs = append(r.errs, fmt.Errorf("lameduck: Serve did not return by the deadline: %s", strings.Join(names, ", ")))
	}
	if report.Total() == 0 {
		return nil
	}
	why := "the drain deadline passed"
	if r.forced {
		why = "a second signal forced the shutdown"
	}
	return fmt.Errorf("%w: %s: %s cut%s", ErrCut, why, report, listed("; still running: ", r.stillRunning))
}

// closeServers calls every server's Close and adds up what they cut, as far
// as known when ctx ends: a Close that returns later is reported as stuck
// and its counts are left out.
func (r *run) closeServers(ctx context.Context) inflight.Counts {
	var mu sync.Mutex
	var cut inflight.Counts
	if calls := r.each(ctx, func(_ int, s Server) {
		c := s.Close()
		mu.Lock()
		cut = cut.Add(c)
		mu.Unlock()
	}); !calls.returned {
		r.errs = append(r.errs, calls.hung("Close"))
	}
	mu.Lock()
	defer mu.Unlock()
	return cut
}
