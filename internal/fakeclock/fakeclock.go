// Package fakeclock is a clock for lameduck's tests: its time moves only when
// the test says so, and a test can wait until the code under test has set
// the timer it is about to make fire.
package fakeclock

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/testhook"
)

// waitTimeout bounds AwaitTimer, so that a bug fails a test instead of
// hanging it.
const waitTimeout = 10 * time.Second

// Clock is a fake clock. Create it with New; Option gives it to a
// Coordinator.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer      // pending, in the order they were set
	added  chan struct{} // closed and replaced whenever a timer is set
}

type timer struct {
	d       time.Duration
	at      time.Time
	f       func()
	stopped bool
}

// New returns a Clock set to an arbitrary fixed time.
func New() *Clock {
	return &Clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), added: make(chan struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc calls f in its own goroutine once the fake time has moved d
// forward, or at once if d is not positive, as time.AfterFunc does.
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{d: d, at: c.now.Add(d), f: f}
	if d <= 0 {
		t.stopped = true
		go f()
	} else {
		c.timers = append(c.timers, t)
	}
	close(c.added)
	c.added = make(chan struct{})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves the time forward by d and fires the timers that are due, in
// the order of their times.
func (c *Clock) Advance(d time.Duration) {
	c.advance(d, func(f func()) { go f() })
}

// advance moves the time forward by d and fires the timers due, in the
// order of their times, with fire.
func (c *Clock) advance(d time.Duration, fire func(func())) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*timer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		fire(t.f)
	}
}

// Step moves the time forward by d, as Advance does, and waits for the
// functions of the timers it fired to return.
func (c *Clock) Step(d time.Duration) {
	var wg sync.WaitGroup
	c.advance(d, func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	})
	wg.Wait()
}

// AdvanceToNext moves the time forward to the earliest pending timer, as
// Step does, and returns how far it moved. It fails the test if no timer
// is pending.
func (c *Clock) AdvanceToNext(t testing.TB) time.Duration {
	t.Helper()
	c.mu.Lock()
	var next *timer
	for _, tm := range c.timers {
		if !tm.stopped && (next == nil || tm.at.Before(next.at)) {
			next = tm
		}
	}
	c.mu.Unlock()
	if next == nil {
		t.Fatal("fakeclock: no timer is pending")
	}
	d := max(0, next.at.Sub(c.Now()))
	c.Step(d)
	return d
}

// AwaitTimer waits until a timer of duration d is pending, such as a
// Coordinator's drain delay once the shutdown has begun.
func (c *Clock) AwaitTimer(t testing.TB, d time.Duration) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		c.mu.Lock()
		pending := false
		for _, tm := range c.timers {
			pending = pending || (!tm.stopped && tm.d == d)
		}
		added := c.added
		c.mu.Unlock()
		if pending {
			return
		}
		select {
		case <-added:
		case <-timeout:
			t.Fatalf("no timer of %v was set", d)
		}
	}
}

// Pass waits until a timer of duration d is pending, then moves the time
// forward by d.
func (c *Clock) Pass(t testing.TB, d time.Duration) {
	t.Helper()
	c.AwaitTimer(t, d)
	c.Advance(d)
}

// Option returns the lameduck.Option that makes a Coordinator use c for
// every timer.
func (c *Clock) Option() lameduck.Option {
	return testhook.WithClock(c).(lameduck.Option)
}
