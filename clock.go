package lameduck

import (
	"context"
	"errors"
	"time"
)

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
