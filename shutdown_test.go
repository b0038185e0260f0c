package lameduck_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

func TestNewRejectsBadConfiguration(t *testing.T) {
	const huge = time.Duration(math.MaxInt64)
	tests := []struct {
		name string
		opts []lameduck.Option
		want []string // parts of the message
	}{
		{"negative delay", []lameduck.Option{lameduck.WithDrainDelay(-time.Second)}, []string{"drain delay is -1s", "WithDrainDelay"}},
		{"negative hook timeout", []lameduck.Option{lameduck.WithHookTimeout(-time.Second)}, []string{"hook timeout is -1s", "must be positive"}},
		{"zero hook timeout", []lameduck.Option{lameduck.WithHookTimeout(0)}, []string{"hook timeout is 0s", "close the servers"}},
		{"negative margin", []lameduck.Option{lameduck.WithSafetyMargin(-time.Second)}, []string{"safety margin is -1s"}},
		{"zero grace period", []lameduck.Option{lameduck.WithGracePeriod(0)}, []string{"grace period is 0s", "terminationGracePeriodSeconds"}},
		{"nil logger", []lameduck.Option{lameduck.WithLogger(nil)}, []string{"WithLogger", "nil", "slog.DiscardHandler"}},
		{"nil signal", []lameduck.Option{lameduck.WithSignals(syscall.SIGTERM, nil)}, []string{"WithSignals", "nil"}},
		{"nil signal channel", []lameduck.Option{lameduck.WithSignalChannel(nil)}, []string{"WithSignalChannel", "nil"}},
		{"nil option", []lameduck.Option{nil}, []string{"option is nil"}},
		{"negative grace period", []lameduck.Option{lameduck.WithGracePeriod(-time.Second)},
			[]string{"grace period is -1s", "WithGracePeriod"}},
		{"drain delay that overflows", []lameduck.Option{lameduck.WithDrainDelay(huge)},
			[]string{"leaves no time to drain within the grace period of 30s", "a drain delay under 25s (WithDrainDelay)"}},
		{"hook timeout that overflows", []lameduck.Option{lameduck.WithHookTimeout(huge)},
			[]string{"leaves no time to drain", "a hook timeout under 23s (WithHookTimeout)"}},
		{"safety margin that overflows", []lameduck.Option{lameduck.WithSafetyMargin(huge)},
			[]string{"leaves no time to drain", "a safety margin under 22s (WithSafetyMargin)"}},
		{"everything at the maximum", []lameduck.Option{lameduck.WithGracePeriod(huge), lameduck.WithDrainDelay(huge),
			lameduck.WithHookTimeout(huge), lameduck.WithSafetyMargin(huge)},
			[]string{"leaves no time to drain"}},
		{"safety margin alone fills the grace period", []lameduck.Option{lameduck.WithDrainDelay(0), lameduck.WithHookTimeout(time.Nanosecond),
			lameduck.WithSafetyMargin(lameduck.DefaultGracePeriod)}, []string{"WithGracePeriod(31 * time.Second)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ld, err := lameduck.New(tt.opts...)
			require.Error(t, err)
			assert.Nil(t, ld)
			assert.Contains(t, err.Error(), "lameduck: ")
			for _, part := range tt.want {
				assert.Contains(t, err.Error(), part)
			}
		})
	}
}

func TestRunGoesThroughThePhasesInOrder(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	a, b := newFakeServer("a", h.log), newFakeServer("b", h.log)
	h.ld.Register(a)
	h.ld.Register(b)
	h.ld.OnShutdown("", func(context.Context) error { h.log.add("hook 1"); return nil })
	h.ld.OnShutdown("", func(context.Context) error { h.log.add("hook 2"); return nil })
	h.ld.MarkReady()
	h.start(t, context.Background())
	assert.Equal(t, []string{"a listen", "b listen"}, h.log.all())

	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	assert.True(t, isClosed(h.ld.Entered(lameduck.PhaseLameDuck)))
	h.clock.AwaitTimer(t, 5*time.Second)
	select {
	case <-h.ld.Entered(lameduck.PhaseDraining):
		t.Fatal("draining before the delay passed")
	default:
	}
	h.clock.Advance(5 * time.Second)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 5*time.Second, ev.Elapsed, "the lame-duck phase lasts the drain delay")
	await.Recv(t, h.ld.Entered(lameduck.PhaseDraining), "Draining to close")
	require.NoError(t, h.wait(t))

	calls := h.log.all()
	assert.ElementsMatch(t, []string{"a lame duck", "b lame duck"}, calls[2:4])
	assert.ElementsMatch(t, []string{"a drain", "b drain"}, calls[4:6])
	assert.ElementsMatch(t, []string{"a close", "b close"}, calls[6:8])
	assert.Equal(t, []string{"hook 2", "hook 1"}, calls[8:])
}

func TestObserversSeeEveryPhaseInOrderOfRegistration(t *testing.T) {
	h := newHarness(t)
	var calls []string // Run calls observers from its own goroutine, one at a time
	for _, name := range []string{"first", "second"} {
		h.ld.OnPhase(func(e lameduck.Event) { calls = append(calls, name+" "+e.Phase.String()) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, h.ld.Run(ctx))
	var want []string
	for p := lameduck.PhaseStarting; p <= lameduck.PhaseStopped; p++ {
		want = append(want, "first "+p.String(), "second "+p.String())
	}
	assert.Equal(t, want, calls)
}

func TestRunSkipsTheDelayWhenNeverReady(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.Register(newFakeServer("a", h.log))
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Zero(t, ev.Elapsed, "no delay without readiness: nothing routes to the process")
	require.NoError(t, h.wait(t))
}

func TestRunStopsWhenTheContextEnds(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(time.Second))
	h.ld.Register(newFakeServer("a", h.log))
	h.ld.MarkReady()
	ctx, cancel := context.WithCancel(context.Background())
	h.start(t, ctx)
	cancel()
	h.phases.await(t, lameduck.PhaseLameDuck)
	h.clock.AwaitTimer(t, time.Second)
	h.clock.Advance(time.Second)
	require.NoError(t, h.wait(t), "a cancelled context is an expected shutdown")
}

func TestRunCutsWhatIsLeftAtTheDrainDeadline(t *testing.T) {
	h := newHarness(t, lameduck.WithGracePeriod(30*time.Second), lameduck.WithDrainDelay(5*time.Second),
		lameduck.WithHookTimeout(3*time.Second), lameduck.WithSafetyMargin(2*time.Second))
	s := newFakeServer("a", h.log)
	s.work.Start(inflight.Request) // never finishes
	s.work.Start(inflight.Stream)
	h.ld.Register(s)
	var hookDeadline time.Time
	h.ld.OnShutdown("", func(ctx context.Context) error {
		hookDeadline, _ = ctx.Deadline()
		return nil
	})
	h.ld.MarkReady()
	h.start(t, context.Background())
	start := h.clock.Now()
	h.signals <- syscall.SIGTERM
	h.clock.AwaitTimer(t, 5*time.Second)
	h.clock.Advance(5 * time.Second)
	h.phases.await(t, lameduck.PhaseDraining)
	h.clock.AwaitTimer(t, 20*time.Second) // grace - margin - hooks - delay
	h.clock.Advance(20*time.Second - time.Millisecond)
	select {
	case err := <-h.done:
		t.Fatalf("Run returned before the drain deadline: %v", err)
	default:
	}
	h.clock.Advance(time.Millisecond)
	ev := h.phases.await(t, lameduck.PhaseStopping)
	assert.Equal(t, inflight.Counts{Requests: 1, Streams: 1}, ev.Cut)
	err := h.wait(t)
	require.ErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, err.Error(), "the drain deadline passed: 1 request, 1 stream cut")
	assert.Equal(t, start.Add(28*time.Second), hookDeadline, "hooks end at grace period minus margin")
	s.work.Done(inflight.Request)
	s.work.Done(inflight.Stream)
}

// A process woken after its deadline, as on an overloaded machine whose
// timers fire late, still closes what is left and reports it.
func TestRunWokenLateStillClosesAndReportsTheCut(t *testing.T) {
	h := newHarness(t, lameduck.WithGracePeriod(30*time.Second), lameduck.WithDrainDelay(5*time.Second),
		lameduck.WithHookTimeout(3*time.Second), lameduck.WithSafetyMargin(2*time.Second))
	s := newFakeServer("a", h.log)
	s.work.Start(inflight.Request) // never finishes
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, 5*time.Second)
	h.phases.await(t, lameduck.PhaseDraining)
	h.clock.AwaitTimer(t, 20*time.Second)
	h.clock.Advance(24 * time.Second) // 29 s after the signal: past the deadline
	ev := h.phases.await(t, lameduck.PhaseStopping)
	assert.Equal(t, inflight.Counts{Requests: 1}, ev.Cut)
	err := h.wait(t)
	require.ErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, err.Error(), "1 request cut")
	assert.NotContains(t, err.Error(), "did not return")
	assert.Contains(t, h.log.all(), "a close", "Close ran")
	s.work.Done(inflight.Request)
}

func TestRunEndsTheDrainWhenTheLastRequestFinishes(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(0))
	s := newFakeServer("a", h.log)
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t, context.Background())
	s.work.Start(inflight.Request)
	h.signals <- syscall.SIGTERM
	h.log.await(t, "a drain")
	select {
	case err := <-h.done:
		t.Fatalf("Run returned with a request in flight: %v", err)
	default:
	}
	s.work.Done(inflight.Request)
	require.NoError(t, h.wait(t))
}

func TestSecondSignalForcesTheShutdown(t *testing.T) {
	for _, at := range []lameduck.Phase{lameduck.PhaseLameDuck, lameduck.PhaseDraining, lameduck.PhaseStopping} {
		t.Run(at.String(), func(t *testing.T) {
			h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
			s := newFakeServer("a", h.log)
			if at != lameduck.PhaseStopping {
				s.work.Start(inflight.Request)
				defer s.work.Done(inflight.Request)
			}
			h.ld.Register(s)
			hookDone := make(chan struct{})
			h.ld.OnShutdown("hook 1", func(ctx context.Context) error {
				defer close(hookDone)
				h.log.add("hook 1")
				return nil
			})
			hookRunning := make(chan struct{})
			h.ld.OnShutdown("hook 2", func(ctx context.Context) error {
				close(hookRunning)
				<-ctx.Done() // only the second signal ends it
				return ctx.Err()
			})
			h.ld.MarkReady()
			h.start(t, context.Background())
			h.signals <- syscall.SIGTERM
			switch at {
			case lameduck.PhaseLameDuck:
				h.clock.AwaitTimer(t, 5*time.Second)
			case lameduck.PhaseDraining:
				h.clock.AwaitTimer(t, 5*time.Second)
				h.clock.Advance(5 * time.Second)
				h.log.await(t, "a drain")
			case lameduck.PhaseStopping:
				h.clock.AwaitTimer(t, 5*time.Second)
				h.clock.Advance(5 * time.Second)
				await.Recv(t, hookRunning, "hook 2 to run")
			}
			h.signals <- syscall.SIGINT
			err := h.wait(t)
			require.Error(t, err)
			if at == lameduck.PhaseStopping {
				assert.NotErrorIs(t, err, lameduck.ErrCut, "nothing was in flight")
				assert.Contains(t, err.Error(), `shutdown hook "hook 2"`)
			} else {
				require.ErrorIs(t, err, lameduck.ErrCut)
				assert.Contains(t, err.Error(), "a second signal forced the shutdown: 1 request cut")
			}
			assert.Contains(t, err.Error(), `shutdown hook "hook 1" not run`, "hooks after the second signal are skipped")
			select {
			case <-hookDone:
				t.Fatal("hook 1 ran after the second signal")
			default:
			}
		})
	}
}

func TestListenFailureStopsEverythingBeforeReady(t *testing.T) {
	h := newHarness(t)
	a, b, c := newFakeServer("a", h.log), newFakeServer("b", h.log), newFakeServer("c", h.log)
	b.listenErr = errors.New("listen tcp :8080: bind: address already in use")
	h.ld.Register(a)
	h.ld.Register(b)
	h.ld.Register(c)
	h.ld.OnShutdown("", func(context.Context) error { h.log.add("hook"); return nil })
	h.ld.MarkReady()
	err := h.ld.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lameduck: starting b: listen tcp :8080: bind: address already in use")
	assert.Equal(t, []string{"a listen", "b listen", "a close", "b close", "hook"}, h.log.all())
	assert.True(t, isClosed(h.ld.Entered(lameduck.PhaseLameDuck)), "readiness must not answer 200 after a failed start")
}

func TestServerFailureShutsTheOthersDown(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(time.Second))
	a, b := newFakeServer("a", h.log), newFakeServer("b", h.log)
	h.ld.Register(a)
	h.ld.Register(b)
	h.ld.MarkReady()
	h.start(t, context.Background())
	a.fail <- errors.New("accept: too many open files")
	ev := h.phases.await(t, lameduck.PhaseLameDuck)
	_ = ev
	h.clock.AwaitTimer(t, time.Second)
	h.clock.Advance(time.Second)
	err := h.wait(t)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lameduck: a: accept: too many open files")
	assert.NotErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, h.log.all(), "b drain", "the other servers drain gracefully")
}

func TestWorkers(t *testing.T) {
	t.Run("context ends when the drain begins", func(t *testing.T) {
		h := newHarness(t, lameduck.WithDrainDelay(time.Second))
		stopped := make(chan struct{})
		h.ld.Go("", func(ctx context.Context) error {
			<-ctx.Done()
			select {
			case <-h.ld.Entered(lameduck.PhaseDraining):
			default:
				t.Error("worker's context ended before the drain")
			}
			close(stopped)
			return nil
		})
		h.ld.MarkReady()
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		h.clock.AwaitTimer(t, time.Second)
		select {
		case <-stopped:
			t.Fatal("worker stopped during the drain delay")
		default:
		}
		h.clock.Advance(time.Second)
		require.NoError(t, h.wait(t))
		await.Recv(t, stopped, "the worker to stop")
	})
	t.Run("error shuts down", func(t *testing.T) {
		h := newHarness(t)
		h.ld.Go("", func(ctx context.Context) error { return errors.New("queue gone") })
		site := lineAbove()
		h.ld.Go("", func(ctx context.Context) error { <-ctx.Done(); return nil })
		h.start(t, context.Background())
		err := h.wait(t)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "lameduck: worker "+site+": queue gone", "named after where it was registered")
	})
	t.Run("nil return early is fine", func(t *testing.T) {
		h := newHarness(t)
		h.ld.Go("", func(ctx context.Context) error { return nil })
		h.ld.MarkReady()
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		h.clock.AwaitTimer(t, lameduck.DefaultDrainDelay)
		h.clock.Advance(lameduck.DefaultDrainDelay)
		require.NoError(t, h.wait(t))
	})
	t.Run("panic is an error", func(t *testing.T) {
		h := newHarness(t)
		h.ld.Go("orders consumer", func(ctx context.Context) error { panic("boom") })
		h.start(t, context.Background())
		err := h.wait(t)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `worker "orders consumer": panic: boom`)
	})
	t.Run("ignoring the context is cut at the deadline", func(t *testing.T) {
		h := newHarness(t, lameduck.WithDrainDelay(0))
		release := make(chan struct{})
		h.ld.Go("", func(ctx context.Context) error { <-release; return nil })
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		h.phases.await(t, lameduck.PhaseDraining)
		h.clock.AwaitTimer(t, lameduck.DefaultGracePeriod-lameduck.DefaultSafetyMargin)
		h.clock.Advance(lameduck.DefaultGracePeriod)
		err := h.wait(t)
		require.ErrorIs(t, err, lameduck.ErrCut)
		assert.Contains(t, err.Error(), "1 worker cut")
		close(release)
	})
}

func TestShutdownHooks(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(0))
	var order []int
	h.ld.OnShutdown("", func(context.Context) error { order = append(order, 1); return errors.New("close db: broken pipe") })
	site := lineAbove()
	h.ld.OnShutdown("telemetry", func(context.Context) error { order = append(order, 2); panic("flush failed") })
	h.ld.OnShutdown("", func(context.Context) error { order = append(order, 3); return nil })
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	err := h.wait(t)
	assert.Equal(t, []int{3, 2, 1}, order)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lameduck: shutdown hook "+site+": close db: broken pipe")
	assert.Contains(t, err.Error(), `lameduck: shutdown hook "telemetry": panic: flush failed`)
	assert.NotErrorIs(t, err, lameduck.ErrCut)
}

func TestShutdownHookThatHangsIsLeftAtTheDeadline(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(0))
	release := make(chan struct{})
	defer close(release)
	h.ld.OnShutdown("first", func(context.Context) error { h.log.add("first"); return nil })
	h.ld.OnShutdown("hangs", func(ctx context.Context) error { h.log.add("hangs"); <-release; return nil })
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.log.await(t, "hangs")
	h.clock.Advance(lameduck.DefaultGracePeriod - lameduck.DefaultSafetyMargin)
	err := h.wait(t)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `shutdown hook "hangs" did not return in time: context deadline exceeded`)
	assert.Contains(t, err.Error(), `shutdown hook "first" not run`)
}

func TestRunTwiceAndLateRegistration(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, h.ld.Run(ctx))
	err := h.ld.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Run called twice")
	for name, register := range map[string]func(){
		"Register":   func() { h.ld.Register(newFakeServer("late", h.log)) },
		"Go":         func() { h.ld.Go("", func(context.Context) error { return nil }) },
		"OnShutdown": func() { h.ld.OnShutdown("", func(context.Context) error { return nil }) },
		"OnPhase":    func() { h.ld.OnPhase(func(lameduck.Event) {}) },
		"AddCheck":   func() { h.ld.AddCheck(lameduck.Check{Name: "late", Func: func(context.Context) error { return nil }}) },
	} {
		assert.PanicsWithValue(t, fmt.Sprintf("lameduck: %s called after Run; register everything before calling Run", name), register)
	}
}

func TestRegisteringNilPanics(t *testing.T) {
	ld, err := lameduck.New()
	require.NoError(t, err)
	assert.PanicsWithValue(t, "lameduck: Register: the server is nil", func() { ld.Register(nil) })
	assert.PanicsWithValue(t, "lameduck: Go: the worker is nil", func() { ld.Go("", nil) })
	assert.PanicsWithValue(t, "lameduck: OnShutdown: the hook is nil", func() { ld.OnShutdown("", nil) })
	assert.PanicsWithValue(t, "lameduck: OnPhase: the observer is nil", func() { ld.OnPhase(nil) })
}

// logMessages is a logger that keeps the message of every line.
type logMessages struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logMessages) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key != slog.MessageKey {
				return slog.Attr{} // keep the message alone
			}
			return a
		},
	}))
}

func (l *logMessages) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, strings.TrimSuffix(strings.TrimPrefix(string(p), "msg="), "\n"))
	return len(p), nil
}

func (l *logMessages) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

func TestLogFollowsTheOrderOfEvents(t *testing.T) {
	t.Run("ready before Run", func(t *testing.T) {
		var logs logMessages
		h := newHarness(t, lameduck.WithDrainDelay(0), lameduck.WithLogger(logs.logger()))
		h.ld.Register(newFakeServer("a", h.log))
		h.ld.MarkReady()
		assert.Empty(t, logs.all(), "nothing is ready before Run serves")
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		require.NoError(t, h.wait(t))
		assert.Equal(t, []string{`"lameduck: starting"`, `"lameduck: serving"`, `"lameduck: ready"`, `"lameduck: lame duck"`,
			`"lameduck: draining"`, `"lameduck: stopping"`, `"lameduck: stopped"`}, logs.all())
	})
	t.Run("ready while serving", func(t *testing.T) {
		var logs logMessages
		h := newHarness(t, lameduck.WithDrainDelay(0), lameduck.WithLogger(logs.logger()))
		h.start(t, context.Background())
		h.ld.MarkReady()
		h.signals <- syscall.SIGTERM
		require.NoError(t, h.wait(t))
		assert.Equal(t, []string{`"lameduck: starting"`, `"lameduck: serving"`, `"lameduck: ready"`, `"lameduck: lame duck"`},
			logs.all()[:4])
	})
	t.Run("a start that fails is never ready", func(t *testing.T) {
		var logs logMessages
		h := newHarness(t, lameduck.WithLogger(logs.logger()))
		s := newFakeServer("a", h.log)
		s.listenErr = errors.New("listen tcp :8080: bind: address already in use")
		h.ld.Register(s)
		h.ld.MarkReady()
		require.Error(t, h.ld.Run(context.Background()))
		assert.Equal(t, []string{`"lameduck: starting"`, `"lameduck: start failed"`, `"lameduck: stopping"`, `"lameduck: stopped"`}, logs.all())
	})
}

func TestLameDuckIsClosedAtTheFirstMomentOfTheShutdown(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	s := newFakeServer("a", h.log)
	h.ld.Register(s)
	// The server's LameDuck, the first thing Run asks of it in the
	// shutdown, already sees the channel closed.
	s.onLameDuck = func() {
		select {
		case <-h.ld.Entered(lameduck.PhaseLameDuck):
		default:
			t.Error("LameDuck not yet closed when the servers are asked to leave")
		}
	}
	h.ld.MarkReady()
	h.start(t, context.Background())
	select {
	case <-h.ld.Entered(lameduck.PhaseLameDuck):
		t.Fatal("LameDuck closed before the shutdown")
	default:
	}
	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	await.Recv(t, h.ld.Entered(lameduck.PhaseLameDuck), "Entered(PhaseLameDuck) to close")
	select {
	case <-h.ld.Entered(lameduck.PhaseDraining):
		t.Fatal("Draining closed during the delay")
	default:
	}
	h.clock.AwaitTimer(t, 5*time.Second)
	h.clock.Advance(5 * time.Second)
	require.NoError(t, h.wait(t))

	failed := newHarness(t)
	bad := newFakeServer("b", failed.log)
	bad.listenErr = errors.New("listen tcp :8080: bind: address already in use")
	failed.ld.Register(bad)
	require.Error(t, failed.ld.Run(context.Background()))
	assert.True(t, isClosed(failed.ld.Entered(lameduck.PhaseLameDuck)), "a failed start closes Entered(PhaseLameDuck) too")
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestEnteredClosesEachPhaseAndThoseBefore(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(time.Second))
	h.ld.Register(newFakeServer("web", h.log))
	h.ld.MarkReady()
	assert.False(t, isClosed(h.ld.Entered(lameduck.PhaseStarting)), "Run has not started")
	h.start(t, context.Background())
	assert.True(t, isClosed(h.ld.Entered(lameduck.PhaseStarting)))
	assert.True(t, isClosed(h.ld.Entered(lameduck.PhaseServing)))
	assert.False(t, isClosed(h.ld.Entered(lameduck.PhaseLameDuck)))
	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, time.Second)
	require.NoError(t, h.wait(t))
	for p := lameduck.PhaseStarting; p <= lameduck.PhaseStopped; p++ {
		assert.True(t, isClosed(h.ld.Entered(p)), "%v", p)
	}
	assert.PanicsWithValue(t, "lameduck: Entered: Phase(6) is not a phase; use PhaseStarting to PhaseStopped",
		func() { h.ld.Entered(lameduck.PhaseStopped + 1) })
}

// Every hook and worker says, in one line at Info, that it ended and how
// long it took, so that its name shows on success too.
func TestHooksAndWorkersLogTheirEnd(t *testing.T) {
	var log syncLog
	h := newHarness(t, lameduck.WithDrainDelay(time.Second), lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	h.ld.Register(newFakeServer("web", h.log))
	h.ld.Go("consumer", func(ctx context.Context) error { <-ctx.Done(); return nil })
	h.ld.OnShutdown("db", func(context.Context) error { return nil })
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, time.Second)
	require.NoError(t, h.wait(t))
	for _, want := range []string{
		`level=INFO msg="lameduck: worker \"consumer\" returned" took=1s`,
		`level=INFO msg="lameduck: shutdown hook \"db\" done" took=0s`,
	} {
		assert.Equal(t, 1, strings.Count(log.String(), want), "%s in:\n%s", want, log.String())
	}
}
