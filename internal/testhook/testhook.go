// Package testhook gives the repository's tests what package lameduck does
// not export: the clock behind its timers, so that a test can drive the
// shutdown sequence with a fake one (package fakeclock).
package testhook

import "time"

// A Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, unless stop
	// is called first; stop reports whether it prevented the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// WithClock returns a lameduck.Option that makes the Coordinator use c for
// every timer: the drain delay, the deadlines, hook and check timeouts. It
// is set by package lameduck, which this package cannot import.
var WithClock func(c Clock) any
