package lameduck_test

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

// phaseAtClose is a fake server that also records the phase Run is in when
// it is closed.
type phaseAtClose struct {
	*fakeServer
	ld    *lameduck.Coordinator
	phase chan lameduck.Phase
}

func (s *phaseAtClose) Close() inflight.Counts {
	s.phase <- s.ld.Status().Phase
	return s.fakeServer.Close()
}

func TestAdminServerAnswersUntilRunReturns(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	app := newFakeServer("app", h.log)
	admin := &phaseAtClose{fakeServer: newFakeServer("admin", h.log), ld: h.ld, phase: make(chan lameduck.Phase, 1)}
	h.ld.Register(app)
	h.ld.RegisterAdmin(admin)
	h.ld.OnShutdown("", func(context.Context) error { h.log.add("hook"); return nil })
	h.ld.MarkReady()
	h.start(t, context.Background())
	assert.Equal(t, []string{"app listen", "admin listen"}, h.log.all(), "an admin server is bound before the process turns ready")

	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, 5*time.Second)
	h.phases.await(t, lameduck.PhaseStopped)
	require.NoError(t, h.wait(t))

	assert.Equal(t, []string{"app listen", "admin listen", "app lame duck", "app drain", "app close", "hook", "admin drain", "admin close"},
		h.log.all(), "an admin server is never a lame duck, and is drained and closed only after the hooks")
	assert.Equal(t, lameduck.PhaseStopped, await.Recv(t, admin.phase, "the admin server to close"), "an admin server closes as Run returns")
	select {
	case <-admin.stopped:
	default:
		t.Fatal("the admin server's Serve is still running after Run returned")
	}
}

func TestAdminServerFailures(t *testing.T) {
	t.Run("serve fails", func(t *testing.T) {
		h := newHarness(t, lameduck.WithDrainDelay(time.Second))
		app, admin := newFakeServer("app", h.log), newFakeServer("metrics", h.log)
		h.ld.Register(app)
		h.ld.RegisterAdmin(admin)
		h.ld.MarkReady()
		h.start(t, context.Background())
		admin.fail <- errors.New("accept: too many open files")
		h.clock.Pass(t, time.Second)
		err := h.wait(t)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "lameduck: admin metrics: accept: too many open files")
		assert.Equal(t, 1, countOf(err.Error(), "too many open files"), "the failure is reported once")
		assert.Contains(t, h.log.all(), "app drain", "the other servers drain gracefully")
	})
	t.Run("listen fails", func(t *testing.T) {
		h := newHarness(t)
		app, admin := newFakeServer("app", h.log), newFakeServer("metrics", h.log)
		admin.listenErr = errors.New("listen tcp :9102: bind: address already in use")
		h.ld.Register(app)
		h.ld.RegisterAdmin(admin)
		h.ld.OnShutdown("", func(context.Context) error { h.log.add("hook"); return nil })
		h.ld.MarkReady()
		err := h.ld.Run(context.Background())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "lameduck: starting admin metrics: listen tcp :9102: bind: address already in use")
		assert.Equal(t, []string{"app listen", "metrics listen", "app close", "hook", "metrics close"}, h.log.all())
	})
}

func countOf(s, sub string) int {
	n := 0
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			n++
		}
	}
	return n
}

func TestRegisterAdminRejectsMisuse(t *testing.T) {
	h := newHarness(t)
	s := newFakeServer("a", h.log)
	assert.PanicsWithValue(t, "lameduck: RegisterAdmin: the server is nil", func() { h.ld.RegisterAdmin(nil) })
	h.ld.RegisterAdmin(s)
	assert.PanicsWithValue(t, "lameduck: RegisterAdmin: the server is already registered; register each server once, with Register or RegisterAdmin",
		func() { h.ld.RegisterAdmin(s) })
	app := newFakeServer("app", h.log)
	h.ld.Register(app)
	assert.PanicsWithValue(t, "lameduck: RegisterAdmin: the server is already registered; register each server once, with Register or RegisterAdmin",
		func() { h.ld.RegisterAdmin(app) }, "a server is drained or admin, not both")
	assert.PanicsWithValue(t, "lameduck: Register: the server is already registered; register each server once, with Register or RegisterAdmin",
		func() { h.ld.Register(s) }, "in either order")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, h.ld.Run(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2 { // a panic leaves the Coordinator usable
			assert.PanicsWithValue(t, "lameduck: RegisterAdmin called after Run; register everything before calling Run",
				func() { h.ld.RegisterAdmin(newFakeServer("b", h.log)) })
		}
		assert.Equal(t, lameduck.PhaseStopped, h.ld.Status().Phase)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("the Coordinator is locked after a panic")
	}
}

// With WithFinalScrape, the admin server stays up after the shutdown until
// a Status with the final values has been exported, and at most until the drain
// deadline.
func TestFinalScrape(t *testing.T) {
	start := func(t *testing.T, opts ...lameduck.Option) (*harness, *fakeServer) {
		h := newHarness(t, append([]lameduck.Option{lameduck.WithDrainDelay(time.Second), lameduck.WithFinalScrape()}, opts...)...)
		admin := newFakeServer("admin", h.log)
		h.ld.Register(newFakeServer("app", h.log))
		h.ld.RegisterAdmin(admin)
		h.ld.MarkReady()
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, time.Second)
		h.phases.await(t, lameduck.PhaseStopped)
		return h, admin
	}
	t.Run("a read of the final status lets Run return", func(t *testing.T) {
		h, admin := start(t)
		select {
		case err := <-h.done:
			t.Fatalf("Run returned (%v) before the final status was read", err)
		case <-admin.stopped:
			t.Fatal("the admin server closed before the final status was read")
		case <-time.After(50 * time.Millisecond): // Run would have returned by now without the option
		}
		st := h.ld.Status()
		assert.Equal(t, lameduck.PhaseStopped, st.Phase)
		assert.Equal(t, lameduck.DelayFixed, st.Delay.Ended, "the final values")
		select {
		case err := <-h.done:
			t.Fatalf("Run returned (%v) once the final status was read, before it was exported", err)
		case <-time.After(50 * time.Millisecond):
		}
		h.ld.MarkExported(st)
		require.NoError(t, h.wait(t))
		assert.Equal(t, "admin close", h.log.all()[len(h.log.all())-1])
	})
	t.Run("the deadline ends the wait", func(t *testing.T) {
		var log syncLog
		h, _ := start(t, lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
		// The drain deadline: the 30 s grace period minus the 2 s margin
		// and the 3 s hook timeout, from the signal, 1 s ago.
		h.clock.Advance(24 * time.Second)
		require.NoError(t, h.wait(t))
		assert.Contains(t, log.String(), "no scrape read the final status before the deadline")
	})
	t.Run("without an admin server there is nothing to wait for", func(t *testing.T) {
		var log syncLog
		h := newHarness(t, lameduck.WithDrainDelay(time.Second), lameduck.WithFinalScrape(),
			lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
		h.ld.Register(newFakeServer("app", h.log))
		h.ld.MarkReady()
		h.start(t, context.Background())
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, time.Second)
		require.NoError(t, h.wait(t))
		assert.Contains(t, log.String(), "WithFinalScrape: no admin server to scrape the final status from")
	})
}
