package lameduck_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
)

// The adaptive delay of these tests: at least 1s, at most 10s, and over
// once nothing arrived for 500ms.
const (
	adaptiveMin   = time.Second
	adaptiveQuiet = 500 * time.Millisecond
	adaptiveMax   = 10 * time.Second
)

// startAdaptive starts a Coordinator with the adaptive delay and one ready
// server, and sends it SIGTERM.
func startAdaptive(t *testing.T, opts ...lameduck.Option) (*harness, *fakeServer) {
	t.Helper()
	h := newHarness(t, append([]lameduck.Option{
		lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax)}, opts...)...)
	s := newFakeServer("web", h.log)
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	return h, s
}

// stillDelaying fails the test if the drain has begun.
func stillDelaying(t *testing.T, h *harness, why string) {
	t.Helper()
	select {
	case <-h.ld.Draining():
		t.Fatalf("the drain began, but %s", why)
	default:
	}
}

func TestAdaptiveDelay(t *testing.T) {
	t.Run("without arrivals it lasts the minimum", func(t *testing.T) {
		h, _ := startAdaptive(t)
		h.clock.AwaitTimer(t, adaptiveMin)
		h.clock.Advance(adaptiveMin - time.Millisecond)
		stillDelaying(t, h, "the minimum has not passed")
		h.clock.Advance(time.Millisecond)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, adaptiveMin, ev.Elapsed)
		assert.Zero(t, ev.Arrivals)
		require.NoError(t, h.wait(t))
	})
	t.Run("an arrival during the minimum restarts the quiet period", func(t *testing.T) {
		h, s := startAdaptive(t)
		h.clock.AwaitTimer(t, adaptiveMin)
		h.clock.Advance(800 * time.Millisecond)
		s.arrivals.Arrived()
		s.arrivals.Left()
		h.clock.AwaitTimer(t, adaptiveQuiet) // 800ms + 500ms, past the minimum
		h.clock.Advance(adaptiveQuiet - time.Millisecond)
		stillDelaying(t, h, "the quiet period has not passed")
		h.clock.Advance(time.Millisecond)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, 1300*time.Millisecond, ev.Elapsed)
		assert.Equal(t, 1, ev.Arrivals)
		assert.Equal(t, 800*time.Millisecond, ev.LastArrival, "the lag, measured from the signal")
		assert.Equal(t, "web", ev.LastArrivalServer)
		require.NoError(t, h.wait(t))
	})
	t.Run("a connection that arrives just before the quiet period ends", func(t *testing.T) {
		h, s := startAdaptive(t)
		h.clock.AwaitTimer(t, adaptiveMin)
		h.clock.Advance(800 * time.Millisecond)
		s.arrivals.Arrived()
		s.arrivals.Left()
		h.clock.AwaitTimer(t, adaptiveQuiet) // the quiet period now ends at 1.3s
		h.clock.Advance(adaptiveQuiet - time.Millisecond)
		s.arrivals.Arrived()
		s.arrivals.Left()
		h.clock.Advance(time.Millisecond) // when the first quiet period would have ended
		stillDelaying(t, h, "a connection arrived 1ms before the quiet period ended")
		h.clock.Advance(adaptiveQuiet - time.Millisecond)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, 800*time.Millisecond+2*adaptiveQuiet-time.Millisecond, ev.Elapsed)
		assert.Equal(t, 2, ev.Arrivals)
		assert.Equal(t, 800*time.Millisecond+adaptiveQuiet-time.Millisecond, ev.LastArrival)
		require.NoError(t, h.wait(t))
	})
	t.Run("a connection still open holds the delay until it is gone", func(t *testing.T) {
		h, s := startAdaptive(t)
		s.arrivals.Arrived()
		h.clock.AwaitTimer(t, adaptiveMax)
		h.clock.Advance(2 * time.Second) // quiet for long enough, but the connection stays
		stillDelaying(t, h, "a connection that arrived is still open")
		s.arrivals.Left()
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, 2*time.Second, ev.Elapsed, "over as soon as it is gone")
		require.NoError(t, h.wait(t))
	})
	t.Run("the maximum ends it, and a late arrival is warned about", func(t *testing.T) {
		var logs logMessages
		h, s := startAdaptive(t, lameduck.WithLogger(logs.logger()))
		s.arrivals.Arrived() // stays open
		h.clock.AwaitTimer(t, adaptiveMax)
		h.clock.Advance(9 * time.Second)
		s.arrivals.Arrived()
		h.clock.Advance(adaptiveMax - 9*time.Second)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, adaptiveMax, ev.Elapsed)
		assert.Equal(t, 9*time.Second, ev.LastArrival)
		s.arrivals.Left()
		s.arrivals.Left()
		require.NoError(t, h.wait(t))
		assert.Contains(t, strings.Join(logs.all(), "\n"), "a connection arrived near the end of the drain delay")
	})
	t.Run("a process that never became ready has no delay", func(t *testing.T) {
		h := newHarness(t, lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax))
		h.ld.Register(newFakeServer("web", h.log))
		h.start(t, context.Background()) // no MarkReady: a signal during start-up
		h.signals <- syscall.SIGTERM
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Zero(t, ev.Elapsed)
		require.NoError(t, h.wait(t))
	})
}

func TestFixedDelayMeasuresTheLag(t *testing.T) {
	var logs logMessages
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second), lameduck.WithLogger(logs.logger()))
	a, b := newFakeServer("web", h.log), newFakeServer("admin", h.log)
	h.ld.Register(a)
	h.ld.Register(b)
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.clock.AwaitTimer(t, 5*time.Second)
	h.clock.Advance(time.Second)
	a.arrivals.Arrived()
	h.clock.Advance(time.Second)
	b.arrivals.Arrived()
	a.arrivals.Left()
	b.arrivals.Left()
	h.clock.Advance(3 * time.Second)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 5*time.Second, ev.Elapsed, "a fixed delay ignores arrivals")
	assert.Equal(t, 2, ev.Arrivals)
	assert.Equal(t, 2*time.Second, ev.LastArrival)
	assert.Equal(t, "admin", ev.LastArrivalServer)
	require.NoError(t, h.wait(t))
	assert.NotContains(t, strings.Join(logs.all(), "\n"), "near the end", "2s into 5s is not near the end")
}

func TestAdaptiveDelayMisuse(t *testing.T) {
	const s = time.Second
	for _, tt := range []struct {
		name           string
		min, quiet, mx time.Duration
		want           []string
	}{
		{"minimum above maximum", 5 * s, s, 2 * s, []string{"the maximum 2s is less than the minimum 5s"}},
		{"negative minimum", -s, s, 2 * s, []string{"the minimum is -1s"}},
		{"no quiet period", s, 0, 2 * s, []string{"the quiet period is 0s; it must be positive", "WithDrainDelay"}},
		{"maximum that does not fit", s, s, 30 * s, []string{"adaptive drain delay's maximum 30s", "the maximum of WithAdaptiveDrainDelay"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := lameduck.New(lameduck.WithAdaptiveDrainDelay(tt.min, tt.quiet, tt.mx))
			require.Error(t, err)
			for _, part := range tt.want {
				assert.Contains(t, err.Error(), part)
			}
		})
	}
}
