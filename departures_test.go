package lameduck_test

import (
	"context"
	"slices"
	"sync"
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

// stream starts a piece of long-lived work that ends at its turn, as an
// event stream does, unless the test ends it before with end.
func (s *departingServer) stream() (*lameduck.Departure, context.Context) {
	s.work.Start(inflight.Stream)
	var dep *lameduck.Departure
	var once sync.Once
	ctx, dep := s.deps.Join(context.Background(), func() { once.Do(func() { s.end(dep) }) })
	return dep, ctx
}

// end ends the work of dep.
func (s *departingServer) end(dep *lameduck.Departure) {
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

// passTurns moves the clock from turn to turn, as time passes, until every
// departure in deps has been told to leave, and returns when each was,
// in order.
func passTurns(t *testing.T, h *harness, deps []*lameduck.Departure) []time.Time {
	t.Helper()
	// Status waits for the schedule, which has then told those whose turn
	// has come and set its timer for the next turn.
	h.ld.Status()
	told := make(map[*lameduck.Departure]bool)
	var at []time.Time
	for {
		for _, d := range deps {
			select {
			case <-d.Leaving():
				if !told[d] {
					told[d] = true
					at = append(at, h.clock.Now())
				}
			default:
			}
		}
		if len(at) == len(deps) {
			return at
		}
		// The schedule's timer is the next; AdvanceToNext returns once it
		// has told those whose turn it is.
		if d := h.clock.AdvanceToNext(t); d > time.Second {
			t.Fatalf("%d of %d departures told to leave; the next timer was %v away", len(at), len(deps), d)
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
	// The first turn comes 10 ms into the drain, once the servers have
	// stopped accepting.
	start := h.clock.Now().Add(10 * time.Millisecond)

	// One turn in each of n equal slots of the window: the reconnections
	// come at a steady rate, never two slots' worth at once.
	gap := (window - 10*time.Millisecond) / n
	for i, at := range passTurns(t, h, deps) {
		slot := start.Add(time.Duration(i) * gap)
		assert.False(t, at.Before(slot), "turn %d at %v, before its slot at %v", i, at.Sub(start), slot.Sub(start))
		assert.False(t, at.After(slot.Add(gap)), "turn %d at %v, after its slot at %v", i, at.Sub(start), slot.Sub(start))
	}

	stopping := h.phases.await(t, lameduck.PhaseStopping)
	assert.Zero(t, stopping.Cut.Total(), "every stream left at its turn")
	assert.Equal(t, n, stopping.Departures.Told)
	assert.Zero(t, stopping.Departures.Left)
	assert.LessOrEqual(t, stopping.Departures.Window, window)
	assert.Greater(t, stopping.Departures.Window, window-2*gap)
	// One turn per gap, 201 in a second, and up to two more where a
	// second's edges catch a turn late in its slot and one early.
	perSecond := int(time.Second / gap)
	assert.GreaterOrEqual(t, stopping.Departures.PeakPerSecond, perSecond)
	assert.LessOrEqual(t, stopping.Departures.PeakPerSecond, perSecond+2)
	require.NoError(t, h.wait(t))
}

func TestTurnsThatAStallMadeLateAreCaughtUpWithNotAllAtOnce(t *testing.T) {
	const n, window = 400, 2 * time.Second // 5 ms apart
	h, _, deps := startDeparting(t, n, lameduck.WithDepartureWindow(window))
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	start := h.clock.Now()
	gap := (window - 10*time.Millisecond) / n
	// The process stalls for a tenth of the window: the timer of the first
	// turn fires 200 ms late, when forty turns are due.
	h.clock.Step(10*time.Millisecond + window/10)
	at := passTurns(t, h, deps)
	// They are told one and a half times as fast as the pace, not at
	// once, until the turns have caught up.
	for i := 1; i < 10; i++ {
		assert.Equal(t, gap*2/3, at[i].Sub(at[i-1]), "turn %d", i)
	}
	for i := 1; i < n; i++ {
		assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), gap*2/3, "turn %d", i)
	}
	assert.LessOrEqual(t, at[n-1].Sub(start), window, "the last turn still within the window")
	require.NoError(t, h.wait(t))
}

func TestTurnsThatALongStallMadeLateStillEndWithinTheWindow(t *testing.T) {
	const n, window = 200, time.Second // 5 ms apart
	h, _, deps := startDeparting(t, n, lameduck.WithDepartureWindow(window))
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	start := h.clock.Now()
	// Stalled for half the window: made up at one and a half times the
	// pace, the turns would run a quarter of the window past its end, and
	// nearer the drain deadline than the budget allows for.
	h.clock.Step(10*time.Millisecond + window/2)
	at := passTurns(t, h, deps)
	// What is left is spread evenly over what is left of the window.
	share := (window/2 - 10*time.Millisecond) / n
	for i := 1; i < n; i++ {
		assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), share, "turn %d", i)
	}
	assert.LessOrEqual(t, at[n-1].Sub(start), window)
	require.NoError(t, h.wait(t))
}

func TestFewDeparturesLeaveAPaceApartRatherThanWaitOutTheWindow(t *testing.T) {
	const n = 5
	h, _, deps := startDeparting(t, n, lameduck.WithDepartureWindow(10*time.Second))
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	start := h.clock.Now()
	at := passTurns(t, h, deps)
	last := at[n-1].Sub(start)
	// Spread at 10 ms a turn, not 2 s, after the first 10 ms: the process
	// exits 60 ms into the drain rather than 10 s.
	assert.LessOrEqual(t, last, (n+1)*10*time.Millisecond)
	assert.GreaterOrEqual(t, last, n*10*time.Millisecond, "still one turn per slot")
	require.NoError(t, h.wait(t))
}

func TestAZeroDepartureWindowTellsEveryoneAsTheDrainBegins(t *testing.T) {
	h, _, deps := startDeparting(t, 20, lameduck.WithDepartureWindow(0))
	h.clock.Pass(t, departureDelay)
	h.clock.Pass(t, 10*time.Millisecond) // once the servers have stopped accepting
	awaitTold(t, deps)
	stopping := h.phases.await(t, lameduck.PhaseStopping)
	assert.Equal(t, 20, stopping.Departures.Told)
	assert.Equal(t, 10*time.Millisecond, stopping.Departures.Window)
	assert.Equal(t, 20, stopping.Departures.PeakPerSecond)
	require.NoError(t, h.wait(t))
}

func TestWorkThatEndsByItselfDuringTheShutdownCountsAsLeft(t *testing.T) {
	h, s, deps := startDeparting(t, 3, lameduck.WithDepartureWindow(time.Second))
	s.end(deps[0]) // during the delay
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	start := h.clock.Now()
	s.end(deps[1]) // before its turn
	assert.Equal(t, 2, h.ld.Status().Departures.Left)
	at := passTurns(t, h, deps[2:])
	stopping := h.phases.await(t, lameduck.PhaseStopping)
	assert.Equal(t, lameduck.DepartureReport{Told: 1, Left: 2, Window: at[0].Sub(start), PeakPerSecond: 1}, stopping.Departures)
	require.NoError(t, h.wait(t))
}

func TestWorkThatJoinsDuringTheShutdownGetsATurnAfterTheOthers(t *testing.T) {
	h, s, deps := startDeparting(t, 4, lameduck.WithDepartureWindow(time.Second))
	during, _ := s.stream() // a websocket opened during the delay
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	deps = append(deps, during)
	late, _ := s.stream() // a request that turns into a stream in the drain
	at := turns(deps)
	assert.True(t, late.Turn().After(at[len(at)-1]), "a late joiner's turn comes after those already given")
	assert.LessOrEqual(t, late.Turn().Sub(at[len(at)-1]), 10*time.Millisecond, "at the same pace")
	passTurns(t, h, append(deps, late))
	assert.Equal(t, 6, h.phases.await(t, lameduck.PhaseStopping).Departures.Told)
	require.NoError(t, h.wait(t))
}

func TestWorkThatIgnoresItsTurnIsCutAtTheDeadline(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(departureDelay), lameduck.WithGracePeriod(10*time.Second))
	s := &departingServer{fakeServer: newFakeServer("ws", h.log)}
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t, context.Background())
	s.work.Start(inflight.Conn)
	_, dep := s.deps.Join(context.Background(), nil) // a handler that never looks
	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	h.clock.Pass(t, departureDelay)
	h.phases.await(t, lameduck.PhaseDraining)
	passTurns(t, h, []*lameduck.Departure{dep})
	h.clock.Advance(10 * time.Second) // the deadline
	stopping := h.phases.await(t, lameduck.PhaseStopping)
	assert.Equal(t, inflight.Counts{Conns: 1}, stopping.Cut)
	assert.Equal(t, 1, stopping.Departures.Told)
	require.ErrorIs(t, h.wait(t), lameduck.ErrCut)
}

func TestLeavingFindsTheDepartureOfItsContext(t *testing.T) {
	var deps lameduck.Departures
	ctx, dep := deps.Join(context.Background(), nil)
	defer dep.Done()
	assert.Equal(t, dep.Leaving(), lameduck.Leaving(ctx))
	assert.Equal(t, dep.Leaving(), lameduck.Leaving(context.WithoutCancel(ctx)), "through derived contexts")
	assert.Nil(t, lameduck.Leaving(context.Background()), "work that is not long-lived has no turn")
}

func TestDepartureWindowMustFitTheGracePeriod(t *testing.T) {
	_, err := lameduck.New(lameduck.WithDepartureWindow(-time.Second))
	require.ErrorContains(t, err, "departure window is -1s; it must be zero or more (WithDepartureWindow)")

	_, err = lameduck.New(lameduck.WithDepartureWindow(25 * time.Second))
	require.EqualError(t, err, "lameduck: drain delay 5s + departure window 25s + hook timeout 3s + safety margin 2s = 35s "+
		"leaves no time to drain within the grace period of 30s; any one of these fits: "+
		"a grace period of 36s: set terminationGracePeriodSeconds to 36 (or more) in the pod spec and WithGracePeriod(36 * time.Second) to match; "+
		"more leaves in-flight work more time to finish; or a departure window under 20s (WithDepartureWindow)")

	// The default shrinks to fit a short grace period: every setting that
	// fitted before the departures still fits.
	for _, grace := range []time.Duration{2 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute} {
		_, err := lameduck.New(lameduck.WithGracePeriod(grace), lameduck.WithDrainDelay(grace/2))
		assert.NoError(t, err, "grace period %v", grace)
	}
}
