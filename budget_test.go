package lameduck_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// TestBudgetsThatFitThePodsPeopleRun runs a shutdown with a request that
// never finishes, and checks when the drain is cut and when the hooks'
// time ends: the reserves actually in force.
func TestBudgetsThatFitThePodsPeopleRun(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name         string
		grace, delay time.Duration
		more         []lameduck.Option
		// From the signal: the drain is cut at drainDeadline, hooks end
		// at deadline.
		drainDeadline, deadline time.Duration
	}{
		{"Kubernetes' default, 30s/5s", 30 * s, 5 * s, nil, 25 * s, 28 * s},
		{"10s/5s", 10 * s, 5 * s, nil, 8 * s, 9 * s},
		{"5s/1s", 5 * s, 1 * s, nil, 4 * s, 4500 * time.Millisecond},
		{"5s/3s", 5 * s, 3 * s, nil, 4 * s, 4500 * time.Millisecond},
		{"60s/10s keeps the full reserves", 60 * s, 10 * s, nil, 55 * s, 58 * s},
		{"an explicit hook timeout is honoured exactly", 5 * s, 1 * s, []lameduck.Option{lameduck.WithHookTimeout(2 * s)},
			2500 * time.Millisecond, 4500 * time.Millisecond},
		{"an explicit zero safety margin is honoured", 10 * s, 5 * s, []lameduck.Option{lameduck.WithSafetyMargin(0)}, 9 * s, 10 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]lameduck.Option{lameduck.WithGracePeriod(tt.grace), lameduck.WithDrainDelay(tt.delay)}, tt.more...)
			h := newHarness(t, opts...)
			srv := newFakeServer("a", h.log)
			srv.work.Start(inflight.Request) // never finishes
			defer srv.work.Done(inflight.Request)
			h.ld.Register(srv)
			var hookDeadline time.Time
			h.ld.OnShutdown("", func(ctx context.Context) error { hookDeadline, _ = ctx.Deadline(); return nil })
			h.ld.MarkReady()
			h.start(t, context.Background())
			signalAt := h.clock.Now()
			h.signals <- syscall.SIGTERM
			h.clock.AwaitTimer(t, tt.delay)
			h.clock.Advance(tt.delay)
			h.phases.await(t, lameduck.PhaseDraining)
			h.clock.AwaitTimer(t, tt.drainDeadline-tt.delay)
			h.clock.Advance(tt.drainDeadline - tt.delay - time.Millisecond)
			select {
			case err := <-h.done:
				t.Fatalf("Run returned before the drain deadline: %v", err)
			default:
			}
			h.clock.Advance(time.Millisecond)
			ev := h.phases.await(t, lameduck.PhaseStopping)
			assert.Equal(t, signalAt.Add(tt.drainDeadline), h.clock.Now(), "the drain is cut at the drain deadline")
			assert.Equal(t, inflight.Counts{Requests: 1}, ev.Cut)
			require.ErrorIs(t, h.wait(t), lameduck.ErrCut)
			assert.Equal(t, signalAt.Add(tt.deadline), hookDeadline, "hooks end at the grace period minus the safety margin")
		})
	}
}

func TestBudgetsThatCannotWorkAreRejectedWithEveryWayOut(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name string
		opts []lameduck.Option
		want []string // parts of the message
	}{
		{"the delay fills the grace period, 10s/10s",
			[]lameduck.Option{lameduck.WithGracePeriod(10 * s), lameduck.WithDrainDelay(10 * s)},
			[]string{
				"drain delay 10s + hook timeout 1s + safety margin 1s = 12s leaves no time to drain within the grace period of 10s",
				"any one of these fits: a grace period of 13s: set terminationGracePeriodSeconds to 13 (or more) in the pod spec and WithGracePeriod(13 * time.Second) to match",
				"or a drain delay under 8s (WithDrainDelay)",
			}},
		{"8s of delay in 10s",
			[]lameduck.Option{lameduck.WithGracePeriod(10 * s), lameduck.WithDrainDelay(8 * s)},
			[]string{
				"= 10s leaves no time to drain",
				"a grace period of 11s", "WithGracePeriod(11 * time.Second)",
				"a drain delay under 8s (WithDrainDelay)",
				"a hook timeout under 1s (WithHookTimeout)",
				"a safety margin under 1s (WithSafetyMargin)",
			}},
		{"explicit reserves that do not fit",
			[]lameduck.Option{lameduck.WithGracePeriod(5 * s), lameduck.WithDrainDelay(1 * s),
				lameduck.WithHookTimeout(3 * s), lameduck.WithSafetyMargin(2 * s)},
			[]string{
				"drain delay 1s + hook timeout 3s + safety margin 2s = 6s leaves no time to drain within the grace period of 5s",
				// Explicit reserves stay as set: 1 + 3 + 2 < 7.
				"a grace period of 7s", "WithGracePeriod(7 * time.Second)",
				"a hook timeout under 2s (WithHookTimeout)",
				"a safety margin under 1s (WithSafetyMargin)",
			}},
		{"an explicit hook timeout longer than the grace period",
			[]lameduck.Option{lameduck.WithGracePeriod(5 * s), lameduck.WithDrainDelay(1 * s), lameduck.WithHookTimeout(10 * s)},
			[]string{"hook timeout 10s", "a grace period of 13s", "a hook timeout under 3.5s (WithHookTimeout)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ld, err := lameduck.New(tt.opts...)
			require.Error(t, err)
			assert.Nil(t, ld)
			msg := err.Error()
			assert.Contains(t, msg, "lameduck: ")
			for _, part := range tt.want {
				assert.Contains(t, msg, part)
			}
		})
	}
}
