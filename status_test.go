package lameduck_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

func TestStatusFollowsTheRun(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	app := newFakeServer("app", h.log)
	h.ld.Register(app)
	h.ld.RegisterAdmin(newFakeServer("admin", h.log))

	st := h.ld.Status()
	assert.Equal(t, lameduck.PhaseStarting, st.Phase)
	assert.False(t, st.Ready)
	assert.Empty(t, st.Elapsed)
	assert.Equal(t, []lameduck.ServerStatus{{Name: "app"}}, st.Servers,
		"admin servers are not listed")

	h.ld.MarkReady()
	h.start(t, context.Background())
	app.work.Start(inflight.Request)
	app.work.Start(inflight.Stream)
	h.clock.Advance(3 * time.Second)
	st = h.ld.Status()
	assert.Equal(t, lameduck.PhaseServing, st.Phase)
	assert.True(t, st.Ready)
	assert.Equal(t, 3*time.Second, st.Elapsed[lameduck.PhaseServing], "the current phase counts up to now")
	assert.Equal(t, []lameduck.ServerStatus{{Name: "app", InFlight: inflight.Counts{Requests: 1, Streams: 1}}}, st.Servers)

	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	assert.Equal(t, lameduck.PhaseLameDuck, h.ld.Status().Phase)
	assert.False(t, h.ld.Status().Ready, "not ready from the first moment of the shutdown")
	h.clock.Pass(t, 5*time.Second)
	h.log.await(t, "app drain")
	st = h.ld.Status()
	assert.Equal(t, lameduck.PhaseDraining, st.Phase)
	assert.Equal(t, 5*time.Second, st.Elapsed[lameduck.PhaseLameDuck])
	assert.Equal(t, inflight.Counts{Requests: 1, Streams: 1}, st.Servers[0].InFlight)

	app.work.Done(inflight.Stream)
	assert.Equal(t, inflight.Counts{Requests: 1}, h.ld.Status().Servers[0].InFlight, "counts are read when asked")
	app.work.Done(inflight.Request)
	require.NoError(t, h.wait(t))
	st = h.ld.Status()
	assert.Equal(t, lameduck.PhaseStopped, st.Phase)
	assert.Equal(t, inflight.Counts{}, st.Cut)
	assert.Equal(t, 3*time.Second, st.Elapsed[lameduck.PhaseServing])
	assert.Equal(t, []lameduck.Phase{lameduck.PhaseStarting, lameduck.PhaseServing, lameduck.PhaseLameDuck,
		lameduck.PhaseDraining, lameduck.PhaseStopping, lameduck.PhaseStopped}, keys(st.Elapsed))
}

func keys(m map[lameduck.Phase]time.Duration) []lameduck.Phase {
	var ps []lameduck.Phase
	for p := lameduck.PhaseStarting; p <= lameduck.PhaseStopped; p++ {
		if _, ok := m[p]; ok {
			ps = append(ps, p)
		}
	}
	return ps
}

func TestStatusReportsWhatWasCut(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(0))
	app := newFakeServer("app", h.log)
	h.ld.Register(app)
	h.ld.MarkReady()
	h.start(t, context.Background())
	app.work.Start(inflight.Request) // never finishes
	defer app.work.Done(inflight.Request)
	h.signals <- syscall.SIGTERM
	h.log.await(t, "app drain")
	assert.Zero(t, h.ld.Status().Cut, "nothing is cut before the deadline")
	h.signals <- syscall.SIGINT
	require.ErrorIs(t, h.wait(t), lameduck.ErrCut)
	assert.Equal(t, inflight.Counts{Requests: 1}, h.ld.Status().Cut)
}

func TestStatusCountsCheckCalls(t *testing.T) {
	h := newHarness(t)
	var fail atomic.Bool
	started := make(chan struct{})
	release := make(chan struct{})
	h.ld.AddCheck(lameduck.Check{Name: "db", Func: func(ctx context.Context) error {
		started <- struct{}{}
		<-release
		if fail.Load() {
			return errors.New("connection refused")
		}
		return nil
	}})
	h.ld.MarkReady()
	assert.Equal(t, []lameduck.CheckStatus{{Name: "db"}}, h.ld.Status().Checks, "nothing is known before the first call")

	call := func() error {
		done := make(chan error, 1)
		go func() { done <- h.ld.CheckReadiness(context.Background()) }()
		await.Recv(t, started, "the check to be called")
		h.clock.Advance(200 * time.Millisecond)
		release <- struct{}{}
		return await.Recv(t, done, "CheckReadiness to return")
	}
	require.NoError(t, call())
	fail.Store(true)
	require.Error(t, call())
	st := h.ld.Status().Checks[0]
	assert.Equal(t, "db", st.Name)
	assert.False(t, st.Passing)
	assert.Equal(t, uint64(2), st.Calls)
	assert.Equal(t, uint64(1), st.Failures)
	assert.Equal(t, 400*time.Millisecond, st.Elapsed)
	assert.Equal(t, h.clock.Now(), st.Last)
}

func TestCheckReadinessDecidesAsTheProbe(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(0))
	dbDown := errors.New("connection refused")
	var fail atomic.Bool
	h.ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error {
		if fail.Load() {
			return dbDown
		}
		return nil
	}})
	h.ld.Register(newFakeServer("app", h.log))
	ctx := context.Background()

	assert.EqualError(t, h.ld.CheckReadiness(ctx), "lameduck: not ready: starting")
	h.ld.MarkReady()
	require.NoError(t, h.ld.CheckReadiness(ctx))
	fail.Store(true)
	err := h.ld.CheckReadiness(ctx)
	require.ErrorIs(t, err, dbDown, "the check's own error is wrapped")
	assert.EqualError(t, err, `lameduck: readiness check "db" failed: connection refused`)
	code, body := probe(t, h.ld.ReadinessHandler(), http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "db", body)

	fail.Store(false)
	require.NoError(t, h.ld.CheckReadiness(ctx), "a check that recovers makes the process ready again")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	blocked := make(chan struct{})
	h2 := newHarness(t)
	h2.ld.AddCheck(lameduck.Check{Name: "slow", Func: func(ctx context.Context) error { <-blocked; return nil }})
	h2.ld.MarkReady()
	require.ErrorIs(t, h2.ld.CheckReadiness(canceled), context.Canceled, "a caller that gives up is not told a check failed")
	close(blocked)

	h.start(t, ctx)
	h.signals <- syscall.SIGTERM
	require.NoError(t, h.wait(t))
	assert.EqualError(t, h.ld.CheckReadiness(ctx), "lameduck: not ready: shutting down")
}

// waitingContext sends on waiting the first time its Done is called: when
// its holder starts waiting on it.
type waitingContext struct {
	context.Context
	once    sync.Once
	waiting chan<- struct{}
}

func (c *waitingContext) Done() <-chan struct{} {
	c.once.Do(func() { c.waiting <- struct{}{} })
	return c.Context.Done()
}

func TestCheckReadinessSharesCallsWithProbes(t *testing.T) {
	const callers = 40
	h := newHarness(t)
	// The first call is held until every caller has arrived, so that they
	// find it running. A caller has arrived once it waits for a result:
	// it asks its context for Done only after it has joined the running
	// call or started one.
	arrived := make(chan struct{}, callers)
	var calls, running, maxRunning atomic.Int32
	h.ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
		}
		if calls.Add(1) == 1 {
			for range callers {
				<-arrived
			}
		}
		return nil
	}})
	h.ld.MarkReady()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := &waitingContext{Context: context.Background(), waiting: arrived}
			if i%2 == 0 {
				errs <- h.ld.CheckReadiness(ctx)
				return
			}
			w := httptest.NewRecorder()
			h.ld.ReadinessHandler().ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil))
			if w.Code != http.StatusOK {
				errs <- errors.New(w.Body.String())
			}
		}()
	}
	await.Wait(t, &wg, "the callers")
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.Equal(t, int32(1), maxRunning.Load(), "a check runs at most once at a time, whoever asks")
	assert.Less(t, calls.Load(), int32(callers/2), "probes and CheckReadiness share calls")
}
