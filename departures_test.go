package lameduck_test

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// departingServer is a fakeServer with long-lived work, which leaves at its
// turn, as a websocket handler does.
type departingServer struct {
	*fakeServer
	deps lameduck.Departures
}

func (s *departingServer) Departures() *lameduck.Departures { return &s.deps }

// stream starts a piece of long-lived work that ends at its turn; the
// returned function ends it before.
func (s *departingServer) stream() (*lameduck.Departure, context.Context) {
	s.work.Start(inflight.Stream)
	var dep *lameduck.Departure
	ctx, dep := s.deps.Join(context.Background(), func() { s.end(dep) })
	return dep, ctx
}

// end ends the work of dep, once.
func (s *departingServer) end(dep *lameduck.Departure) {
	select {
	case <-s.stopped:
	default:
	}
	dep.Done()
	s.work.Done(inflight.Stream)
}

const departureDelay = time.Second

// startDeparting runs a Coordinator with a server holding n pieces of
// long-lived work, and signals it.
func startDeparting(t *testing.T, n int, opts ...lameduck.Option) (*harness, *departingServer, []*lameduck.Departure) {
	t.Helper()
	h := newHarness(t, append([]lameduck.Option{lameduck.WithDrainDelay(departureDelay)}, opts...)...)
	s := &departingServer{fakeServer: newFakeServer("ws", h.log)}
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t, context.Background())
	deps := make([]*lameduck.Departure, n)
	for i := range deps {
		deps[i], _ = s.stream()
	}
	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	return h, s, deps
}

// turns returns the turns of deps, in order.
func turns(deps []*lameduck.Departure) []time.Time {
	at := make([]time.Time, len(deps))
	for i, d := range deps {
		at[i] = d.Turn()
	}
	slices.SortFunc(at, time.Time.Compare)
	return at
}

// awaitTold waits until every departure in deps has been told to leave.
func awaitTold(t *testing.T, deps []*lameduck.Departure) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for i, d := range deps {
		select {
		case <-d.Leaving():
		case <-timeout:
			t.Fatalf("departure %d of %d never told to leave", i, len(deps))
		}
	}
}

func TestDeparturesAreSpreadEvenlyOverTheWindowOnceTheDelayIsOver(t *testing.T) {
	const n, window = 400, 2 * time.Second // 5 ms apart: the window, not the pace, sets the rate
	h, _, deps := startDeparting(t, n, lameduck.WithDepartureWindow(window))
	for _, d := range deps {
		select {
		case <-d.Leaving():
			t.Fatal("told to leave during the drain delay, while the load balancer may still route its reconnection here")
		default:
		}
	}
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	start := h.clock.Now()

	// One turn in each of n equal slots of the window: the reconnections
	// come at a steady rate, never two slots' worth at once.
	gap := window / n
	for i, at := range turns(deps) {
		slot := start.Add(time.Duration(i) * gap)
		assert.False(t, at.Before(slot), "turn %d at %v, before its slot at %v", i, at.Sub(start), slot.Sub(start))
		assert.False(t, at.After(slot.Add(gap)), "turn %d at %v, after its slot at %v", i, at.Sub(start), slot.Sub(start))
	}

	// Halfway through the window, about half have been told.
	h.clock.Advance(window / 2)
	told := 0
	for _, at := range turns(deps) {
		if !at.After(h.clock.Now()) {
			told++
		}
	}
	assert.InDelta(t, n/2, told, 2)

	h.clock.Advance(window / 2)
	awaitTold(t, deps)
	stopping := h.phases.await(t, lameduck.PhaseStopping)
	assert.Zero(t, stopping.Cut.Total(), "every stream left at its turn")
	assert.Equal(t, n, stopping.Departures.Told)
	assert.Zero(t, stopping.Departures.Left)
	assert.LessOrEqual(t, stopping.Departures.Window, window)
	assert.Greater(t, stopping.Departures.Window, window-2*gap)
	// n over 2 s: 200 a second, one more where a second's edges take two
	// slots' turns.
	assert.InDelta(t, n/2, stopping.Departures.PeakPerSecond, 1)
	require.NoError(t, h.wait(t))
}
