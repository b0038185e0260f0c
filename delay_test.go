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
	case <-h.ld.Entered(lameduck.PhaseDraining):
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
		assert.Equal(t, lameduck.DelayMin, ev.Delay.Ended)
		assert.Zero(t, ev.Delay.Arrivals)
		require.NoError(t, h.wait(t))
	})
	t.Run("an arrival during the minimum restarts the quiet period", func(t *testing.T) {
		h, s := startAdaptive(t)
		h.clock.AwaitTimer(t, adaptiveMin)
		h.clock.Advance(800 * time.Millisecond)
		s.arrive()
		h.clock.AwaitTimer(t, adaptiveQuiet) // 800ms + 500ms, past the minimum
		h.clock.Advance(adaptiveQuiet - time.Millisecond)
		stillDelaying(t, h, "the quiet period has not passed")
		h.clock.Advance(time.Millisecond)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, 1300*time.Millisecond, ev.Elapsed)
		assert.Equal(t, lameduck.DelayQuiet, ev.Delay.Ended)
		assert.Equal(t, 1, ev.Delay.Arrivals)
		assert.Equal(t, 800*time.Millisecond, ev.Delay.LastArrival, "the lag, measured from the signal")
		assert.Equal(t, "web", ev.Delay.LastArrivalServer)
		require.NoError(t, h.wait(t))
	})
	t.Run("a connection that arrives just before the quiet period ends", func(t *testing.T) {
		h, s := startAdaptive(t)
		h.clock.AwaitTimer(t, adaptiveMin)
		h.clock.Advance(800 * time.Millisecond)
		s.arrive()
		h.clock.AwaitTimer(t, adaptiveQuiet) // the quiet period now ends at 1.3s
		h.clock.Advance(adaptiveQuiet - time.Millisecond)
		s.arrive()
		h.clock.Advance(time.Millisecond) // when the first quiet period would have ended
		stillDelaying(t, h, "a connection arrived 1ms before the quiet period ended")
		h.clock.Advance(adaptiveQuiet - time.Millisecond)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, 800*time.Millisecond+2*adaptiveQuiet-time.Millisecond, ev.Elapsed)
		assert.Equal(t, 2, ev.Delay.Arrivals)
		assert.Equal(t, 800*time.Millisecond+adaptiveQuiet-time.Millisecond, ev.Delay.LastArrival)
		require.NoError(t, h.wait(t))
	})
	t.Run("a connection that arrived holds nothing once its quiet period is over", func(t *testing.T) {
		h, s := startAdaptive(t)
		s.arrive() // and stays open, a long request in flight
		h.clock.AwaitTimer(t, adaptiveMin)
		h.clock.Advance(adaptiveMin)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, adaptiveMin, ev.Elapsed, "an open connection is no evidence of routing")
		assert.Equal(t, lameduck.DelayMin, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
	})
	t.Run("the maximum ends it, and a late arrival is warned about", func(t *testing.T) {
		var logs logMessages
		h, s := startAdaptive(t, lameduck.WithLogger(logs.logger()))
		h.clock.AwaitTimer(t, adaptiveMin)
		for range 20 { // one arrival every 500ms - 1ms: never quiet for long enough
			h.clock.Advance(adaptiveQuiet - time.Millisecond)
			s.arrive()
		}
		h.clock.Pass(t, adaptiveMax-20*(adaptiveQuiet-time.Millisecond))
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, adaptiveMax, ev.Elapsed)
		assert.Equal(t, lameduck.DelayMax, ev.Delay.Ended)
		assert.Equal(t, 20*(adaptiveQuiet-time.Millisecond), ev.Delay.LastArrival)
		require.NoError(t, h.wait(t))
		assert.Contains(t, strings.Join(logs.all(), "\n"), "a connection arrived near the end of the drain delay")
	})
	t.Run("a zero minimum is the default minimum", func(t *testing.T) {
		h := newHarness(t, lameduck.WithAdaptiveDrainDelay(0, adaptiveQuiet, adaptiveMax))
		h.ld.Register(newFakeServer("web", h.log))
		h.ld.MarkReady()
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, lameduck.DefaultMinDrainDelay)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DefaultMinDrainDelay, ev.Elapsed, "silence alone ends no delay before the default minimum")
		assert.Equal(t, lameduck.DelayMin, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
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
	a.arrive()
	h.clock.Advance(time.Second)
	b.arrive()
	h.clock.Advance(3 * time.Second)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 5*time.Second, ev.Elapsed, "a fixed delay ignores arrivals")
	assert.Equal(t, lameduck.DelayFixed, ev.Delay.Ended)
	assert.Equal(t, 2, ev.Delay.Arrivals)
	assert.Equal(t, 2*time.Second, ev.Delay.LastArrival)
	assert.Equal(t, "admin", ev.Delay.LastArrivalServer)
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

// Status reports the arrivals as they happen, from the first moment of the
// lame-duck phase, and what ended the delay once it is over: a scrape
// during a delay of a few seconds sees the lag being measured.
func TestStatusReportsTheDelayAsItMeasures(t *testing.T) {
	h, s := startAdaptive(t)
	assert.Equal(t, lameduck.DelayReport{}, h.ld.Status().Delay, "nothing measured yet")
	h.clock.AwaitTimer(t, adaptiveMin)
	h.clock.Advance(200 * time.Millisecond)
	s.arrive()
	d := h.ld.Status().Delay
	assert.Equal(t, 1, d.Arrivals, "the arrival shows at once, before the delay is over")
	assert.Equal(t, 200*time.Millisecond, d.LastArrival)
	assert.Equal(t, "web", d.LastArrivalServer)
	assert.Empty(t, d.Ended, "the delay is not over")
	h.clock.Advance(adaptiveMin - 200*time.Millisecond)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, ev.Delay, h.ld.Status().Delay, "once over, Status says what the Event says")
	assert.Equal(t, lameduck.DelayMin, h.ld.Status().Delay.Ended)
	require.NoError(t, h.wait(t))
}

// The delay runs from the moment the lame-duck phase is entered: an
// observer of that phase, which may move on before Run does, sees the
// delay already running, and time that passes meanwhile counts in it.
func TestTheDelayRunsFromTheMomentOfTheLameDuckPhase(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.OnPhase(func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseLameDuck {
			h.clock.Advance(time.Second) // before Run goes on to the delay
		}
	})
	h.ld.Register(newFakeServer("web", h.log))
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, 4*time.Second)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 5*time.Second, ev.Delay.Elapsed)
	require.NoError(t, h.wait(t))
}
