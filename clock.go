package lameduck

import (
	"context"
	"errors"
	"time"

	"github.com/lameduck/lameduck/internal/testhook"
)

// The Coordinator reads the time, and sets every timer of the shutdown
// sequence and of readiness checks, through a testhook.Clock: the real time
// of package time, or, in the repository's tests, a fake clock.

func init() {
	testhook.WithClock = func(c testhook.Clock) any { return withClock(c) }
}

// withClock sets the clock behind every timer.
func withClock(c testhook.Clock) Option {
	return optionFunc(func(o *options) {
		if c == nil {
			o.errs = append(o.errs, errors.New("the clock is nil"))
		}
		o.clock = c
	})
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
