package lameduck_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

// faultyServer is a fakeServer that breaks the Server contract: the method
// named by hangIn blocks until release is closed.
type faultyServer struct {
	*fakeServer
	hangIn  string
	release chan struct{}
}

func newFaultyServer(name string, log *callLog, hangIn string, release chan struct{}) *faultyServer {
	return &faultyServer{fakeServer: newFakeServer(name, log), hangIn: hangIn, release: release}
}

// hang blocks if method is the one that hangs, and logs "<name> hangs in
// <method>" first, for the test to wait on.
func (s *faultyServer) hang(method string) {
	if s.hangIn == method {
		s.log.add(s.name + " hangs in " + method)
		<-s.release
	}
}

func (s *faultyServer) Listen() error {
	err := s.fakeServer.Listen()
	s.hang("Listen")
	return err
}

func (s *faultyServer) Serve() error {
	err := s.fakeServer.Serve()
	s.hang("Serve")
	return err
}

func (s *faultyServer) LameDuck(arrived func()) {
	s.fakeServer.LameDuck(arrived)
	s.hang("LameDuck")
}

func (s *faultyServer) Drain(ctx context.Context) error {
	if s.hangIn == "Drain" {
		s.log.add(s.name + " drain")
		s.hang("Drain")
		return nil
	}
	return s.fakeServer.Drain(ctx)
}

func (s *faultyServer) Close() inflight.Counts {
	n := s.fakeServer.Close()
	s.hang("Close")
	return n
}

func TestRunReturnsBeforeTheDeadlineWhateverTheFaults(t *testing.T) {
	const (
		grace  = 30 * time.Second
		margin = 2 * time.Second
		delay  = 5 * time.Second
	)
	tests := []struct {
		name string
		// set up registers the faults; they block until release is closed.
		setUp func(h *harness, release chan struct{})
		// stuck is the call logged once Run is held up by the fault, and
		// waits with the deadline it will keep: once Run closes the servers,
		// if it is not held up before that.
		stuck string
		// want are parts of Run's error, and wantRE patterns it matches.
		want, wantRE []string
		// early is set when the fault is bounded by the drain deadline,
		// not the final one: Run may return before the final deadline.
		early bool
		// noDelay is set when the fault keeps Run from starting the drain
		// delay's timer.
		noDelay bool
	}{
		{
			name:    "LameDuck never returns",
			setUp:   func(h *harness, rel chan struct{}) { h.ld.Register(newFaultyServer("a", h.log, "LameDuck", rel)) },
			stuck:   "a hangs in LameDuck",
			want:    []string{"LameDuck did not return by the deadline: a"},
			noDelay: true,
		},
		{
			name:  "Drain ignores its context",
			setUp: func(h *harness, rel chan struct{}) { h.ld.Register(newFaultyServer("a", h.log, "Drain", rel)) },
			stuck: "a close", // Drain hangs; Run waits, past Close, for it
			want:  []string{"Drain did not return by the deadline: a"},
		},
		{
			name:  "Close never returns",
			setUp: func(h *harness, rel chan struct{}) { h.ld.Register(newFaultyServer("a", h.log, "Close", rel)) },
			stuck: "a hangs in Close",
			want:  []string{"Close did not return by the deadline: a"},
		},
		{
			name:  "Serve never returns",
			setUp: func(h *harness, rel chan struct{}) { h.ld.Register(newFaultyServer("a", h.log, "Serve", rel)) },
			stuck: "a hangs in Serve",
			want:  []string{"Serve did not return by the deadline: a"},
		},
		{
			name: "request never finishes",
			setUp: func(h *harness, rel chan struct{}) {
				s := newFakeServer("a", h.log)
				s.work.Start(inflight.Request)
				h.ld.Register(s)
			},
			stuck: "a drain",
			want:  []string{"the drain deadline passed: 1 request cut"},
			early: true,
		},
		{
			name: "worker ignores its context",
			setUp: func(h *harness, rel chan struct{}) {
				h.ld.Go("", func(ctx context.Context) error {
					<-ctx.Done()
					h.log.add("worker goes on")
					<-rel
					return nil
				})
			},
			stuck: "worker goes on",
			want:  []string{"1 worker cut"},
			early: true,
		},
		{
			name: "hook ignores its context",
			setUp: func(h *harness, rel chan struct{}) {
				h.ld.OnShutdown("cache", func(context.Context) error { h.log.add("hook 1"); return nil })
				h.ld.OnShutdown("db pool", func(context.Context) error { h.log.add("hook 2 hangs"); <-rel; return nil })
			},
			stuck: "hook 2 hangs",
			want:  []string{`shutdown hook "db pool" did not return in time`, `shutdown hook "cache" not run`},
		},
		{
			name: "hook panics, the next one hangs",
			setUp: func(h *harness, rel chan struct{}) {
				h.ld.OnShutdown("db pool", func(context.Context) error { h.log.add("hook 1 hangs"); <-rel; return nil })
				h.ld.OnShutdown("telemetry", func(context.Context) error { panic("flush: nil pointer") })
			},
			stuck: "hook 1 hangs",
			want:  []string{`shutdown hook "telemetry": panic: flush: nil pointer`, `shutdown hook "db pool" did not return in time`},
		},
		{
			name: "everything at once",
			setUp: func(h *harness, rel chan struct{}) {
				h.ld.Register(newFaultyServer("a", h.log, "Drain", rel))
				h.ld.Register(newFaultyServer("b", h.log, "Close", rel))
				h.ld.Register(newFaultyServer("c", h.log, "Serve", rel))
				h.ld.Go("consumer", func(ctx context.Context) error { <-rel; return nil })
				h.ld.OnShutdown("db pool", func(context.Context) error { <-rel; return nil })
			},
			stuck: "c hangs in Serve", // after Close, as are the waits for Drain and Serve
			want:  []string{`1 worker cut; still running: worker "consumer"`, `shutdown hook "db pool" not run`},
			// Each error names the server that hangs. A call that returns
			// at once can be named beside it: the test moves the clock
			// through the drain to the deadline in one step, and a busy
			// machine may not have run that call's goroutine by then.
			wantRE: []string{`Drain did not return by the deadline: (\w, )*a(, \w)*\n`, `Close did not return by the deadline: (\w, )*b(, \w)*\n`,
				`Serve did not return by the deadline: (\w, )*c(, \w)*\n`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			stoppedAt := make(chan time.Time, 1)
			h := newHarness(t, lameduck.WithGracePeriod(grace), lameduck.WithSafetyMargin(margin), lameduck.WithDrainDelay(delay))
			h.ld.OnPhase(func(e lameduck.Event) {
				if e.Phase == lameduck.PhaseStopped {
					stoppedAt <- h.clock.Now()
				}
			})
			release := make(chan struct{})
			defer close(release)
			tt.setUp(h, release)
			h.ld.MarkReady()
			h.start(t, context.Background())
			deadline := h.clock.Now().Add(grace - margin)
			h.signals <- syscall.SIGTERM
			h.clock.AwaitTimer(t, grace-margin)
			if !tt.noDelay {
				h.clock.AwaitTimer(t, delay)
			}
			// Up to the last millisecond before the deadline, Run waits for
			// the faulty part, unless the drain deadline bounds it.
			h.clock.Advance(grace - margin - time.Millisecond)
			h.log.await(t, tt.stuck)
			if !tt.early {
				select {
				case err := <-h.done:
					t.Fatalf("Run returned before the deadline while stuck: %v", err)
				default:
				}
				h.clock.Advance(time.Millisecond)
			}
			err := h.wait(t)
			at := await.Recv(t, stoppedAt, "PhaseStopped")
			assert.False(t, at.After(deadline), "Run returned %v after the deadline", at.Sub(deadline))
			if !tt.early {
				assert.Equal(t, deadline, at, "Run waits for the faulty part until the deadline")
			}
			require.Error(t, err)
			for _, part := range tt.want {
				assert.Contains(t, err.Error(), part)
			}
			for _, re := range tt.wantRE {
				assert.Regexp(t, re, err.Error())
			}
		})
	}
}

func TestFailedStartReturnsWithinTheHookTimeout(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := newHarness(t, lameduck.WithHookTimeout(time.Second))
	release := make(chan struct{})
	defer close(release)
	h.ld.Register(newFaultyServer("a", h.log, "Close", release))
	b := newFakeServer("b", h.log)
	b.listenErr = errors.New("listen tcp :8080: bind: address already in use")
	h.ld.Register(b)
	hookCtx := make(chan context.Context, 1)
	h.ld.OnShutdown("db pool", func(ctx context.Context) error { hookCtx <- ctx; return nil })
	done := make(chan error, 1)
	go func() { done <- h.ld.Run(context.Background()) }()
	h.log.await(t, "a hangs in Close")
	h.clock.AwaitTimer(t, time.Second)
	h.clock.Advance(time.Second)
	var err error
	select {
	case err = <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after a failed start whose Close hangs")
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lameduck: starting b: listen tcp :8080: bind: address already in use")
	assert.Contains(t, err.Error(), "Close did not return in time: a")
	assert.Contains(t, err.Error(), `shutdown hook "db pool" not run`)
	assert.Empty(t, hookCtx, "the hook timeout covers closing the servers and the hooks together")
}

func TestShutdownStartsWheneverTheSignalArrives(t *testing.T) {
	forced := "a second signal forced the shutdown: 1 request cut"
	tests := []struct {
		name string
		// duringListen happens while Listen is under way, before Run
		// serves; duringDrain once the drain has begun.
		duringListen func(h *harness, cancel context.CancelFunc)
		duringDrain  func(h *harness)
		// want is part of Run's error; empty means nil.
		want string
	}{
		{"signal during Listen", func(h *harness, _ context.CancelFunc) { h.signals <- syscall.SIGTERM }, nil, ""},
		{"context cancelled during Listen", func(_ *harness, cancel context.CancelFunc) { cancel() }, nil, ""},
		{"two signals during Listen", func(h *harness, _ context.CancelFunc) {
			h.signals <- syscall.SIGTERM
			h.signals <- syscall.SIGTERM
		}, nil, forced},
		// The end of the context may be the same signal as the one that
		// follows, arriving twice (signal.NotifyContext): only a second
		// one forces.
		{"context cancelled during Listen, then a signal", func(_ *harness, cancel context.CancelFunc) { cancel() },
			func(h *harness) { h.signals <- syscall.SIGTERM }, ""},
		{"context cancelled during Listen, then two signals", func(_ *harness, cancel context.CancelFunc) { cancel() },
			func(h *harness) { h.signals <- syscall.SIGTERM; h.signals <- syscall.SIGTERM }, forced},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
			release := make(chan struct{})
			a := newFaultyServer("a", h.log, "Listen", release)
			a.work.Start(inflight.Request) // holds the drain until the test ends it
			h.ld.Register(a)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h.done = make(chan error, 1)
			go func() { h.done <- h.ld.Run(ctx) }()
			h.log.await(t, "a hangs in Listen")
			tt.duringListen(h, cancel)
			close(release)
			h.phases.await(t, lameduck.PhaseServing)
			ev := h.phases.await(t, lameduck.PhaseDraining)
			assert.Zero(t, ev.Elapsed, "never ready: no drain delay")
			if tt.duringDrain != nil {
				tt.duringDrain(h)
			}
			if tt.want == "" {
				a.work.Done(inflight.Request)
			}
			err := h.wait(t)
			if tt.want == "" {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, lameduck.ErrCut)
				assert.Contains(t, err.Error(), tt.want)
				a.work.Done(inflight.Request)
			}
			h.ld.MarkReady()
			code, body := probe(t, h.ld.ReadinessHandler(), "GET", "/readyz")
			assert.Equal(t, 503, code, "a process that never served ready stays out of Services")
			assert.Equal(t, "shutting down", body)
		})
	}
}

func TestContextCancelledDuringTheDrainDoesNotCut(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(0))
	s := newFakeServer("a", h.log)
	h.ld.Register(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.start(t, ctx)
	s.work.Start(inflight.Request)
	h.signals <- syscall.SIGTERM
	h.log.await(t, "a drain")
	cancel()
	select {
	case err := <-h.done:
		t.Fatalf("Run returned with a request in flight: %v", err)
	default:
	}
	s.work.Done(inflight.Request)
	require.NoError(t, h.wait(t), "the parent context only starts the shutdown")
}

func TestServeFailures(t *testing.T) {
	tests := []struct {
		name string
		// fail makes server a's Serve return; it runs before Run serves
		// or once it does.
		fail  func(a *fakeServer)
		early bool
		want  string
	}{
		{"fails at start", func(a *fakeServer) { a.fail <- errors.New("tls: no certificates") }, true,
			"lameduck: a: tls: no certificates"},
		{"returns nil at start", func(a *fakeServer) { a.fail <- nil }, true,
			"lameduck: a stopped serving before the shutdown"},
		{"returns nil mid-run", func(a *fakeServer) { a.fail <- nil }, false,
			"lameduck: a stopped serving before the shutdown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, lameduck.WithDrainDelay(time.Second))
			a, b := newFakeServer("a", h.log), newFakeServer("b", h.log)
			h.ld.Register(a)
			h.ld.Register(b)
			h.ld.OnShutdown("", func(context.Context) error { h.log.add("hook"); return nil })
			if tt.early {
				tt.fail(a)
			} else {
				h.ld.MarkReady()
			}
			h.start(t, context.Background())
			if !tt.early {
				tt.fail(a)
				h.phases.await(t, lameduck.PhaseLameDuck)
				h.clock.AwaitTimer(t, time.Second)
				h.clock.Advance(time.Second)
			}
			err := h.wait(t)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotErrorIs(t, err, lameduck.ErrCut)
			calls := h.log.all()
			assert.Contains(t, calls, "b drain", "the other server drains")
			assert.Contains(t, calls, "b close")
			assert.Contains(t, calls, "hook")
		})
	}
}
