// Package await bounds the waits of tests and benchmarks: a wait that is
// never satisfied fails the test within seconds, naming what it waited for
// and showing where every goroutine is, instead of hanging the suite until
// go test's own timeout.
package await

import (
	"bytes"
	"runtime/pprof"
	"sync"
	"testing"
	"time"
)

// Timeout bounds every wait: far longer than any event takes under -race
// on a 2-core machine that other test runs load (setting up 2,000
// loopback connections has taken over 10 s there), far shorter than go
// test's ten minutes.
const Timeout = 30 * time.Second

// Recv returns the value received from ch, or the zero value once ch is
// closed. It fails tb if neither happens within Timeout; what names what
// the value means, as in "Run's result". Like tb.Fatal, it must be called
// from the goroutine running the test.
func Recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	return recv(tb, ch, what, Timeout)
}

func recv[T any](tb testing.TB, ch <-chan T, what string, timeout time.Duration) T {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		var stacks bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&stacks, 2) //nolint:errcheck // a bytes.Buffer does not fail
		tb.Fatalf("waited %v for %s; the goroutines:\n%s", timeout, what, stacks.String())
		var zero T
		return zero
	}
}

// Wait waits for wg, and fails tb if it is not done within Timeout; what
// names what wg counts, as in "the callers". Like tb.Fatal, it must be
// called from the goroutine running the test.
func Wait(tb testing.TB, wg *sync.WaitGroup, what string) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	Recv(tb, done, what)
}
