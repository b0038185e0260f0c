package lameduck_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on an event in these tests, so that a bug
// fails a test instead of hanging the suite.
const waitTimeout = 10 * time.Second

// fakeServer is a lameduck.Server that records the calls it gets and whose
// in-flight work the test controls.
type fakeServer struct {
	name       string
	listenErr  error
	onLameDuck func() // called by LameDuck, if set
	log        *callLog

	work    inflight.Tracker
	arrived atomic.Pointer[func()] // given to LameDuck
	stopped chan struct{}          // closed by Close: Serve returns
	fail    chan error             // a value makes Serve fail
	once    sync.Once
}

func newFakeServer(name string, log *callLog) *fakeServer {
	return &fakeServer{name: name, log: log, stopped: make(chan struct{}), fail: make(chan error, 1)}
}

func (s *fakeServer) String() string { return s.name }

// arrive reports a connection arrived during the lame-duck phase, as a
// real server does; before LameDuck it does nothing.
func (s *fakeServer) arrive() {
	if f := s.arrived.Load(); f != nil {
		(*f)()
	}
}

func (s *fakeServer) InFlight() inflight.Counts { return s.work.InFlight() }

func (s *fakeServer) Listen() error {
	s.log.add(s.name + " listen")
	return s.listenErr
}

func (s *fakeServer) Serve() error {
	select {
	case <-s.stopped:
		return nil
	case err := <-s.fail:
		return err
	}
}

func (s *fakeServer) LameDuck(arrived func()) {
	s.arrived.Store(&arrived)
	if s.onLameDuck != nil {
		s.onLameDuck()
	}
	s.log.add(s.name + " lame duck")
}

func (s *fakeServer) Drain(ctx context.Context) error {
	s.log.add(s.name + " drain")
	for {
		select {
		case <-s.work.Idle():
			if s.work.InFlight().Total() == 0 {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *fakeServer) Close() inflight.Counts {
	s.log.add(s.name + " close")
	s.once.Do(func() { close(s.stopped) })
	return s.work.InFlight()
}

// callLog records calls in order, and lets a test wait for one.
type callLog struct {
	mu    sync.Mutex
	calls []string
	added chan string
}

func newCallLog() *callLog { return &callLog{added: make(chan string, 1000)} }

func (l *callLog) add(call string) {
	l.mu.Lock()
	l.calls = append(l.calls, call)
	l.mu.Unlock()
	l.added <- call
}

func (l *callLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

// await waits for call to be logged.
func (l *callLog) await(t *testing.T, call string) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case got := <-l.added:
			if got == call {
				return
			}
		case <-timeout:
			t.Fatalf("%q never happened; calls: %q", call, l.all())
		}
	}
}

// phases collects the events of a Coordinator's observer.
type phases struct {
	ch chan lameduck.Event
}

func newPhases() *phases { return &phases{ch: make(chan lameduck.Event, 100)} }

func (p *phases) observe(e lameduck.Event) { p.ch <- e }

// await waits for the Coordinator to enter phase and returns its event.
func (p *phases) await(t *testing.T, phase lameduck.Phase) lameduck.Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case e := <-p.ch:
			if e.Phase == phase {
				return e
			}
		case <-timeout:
			t.Fatalf("phase %v never entered", phase)
		}
	}
}

var discard = slog.New(slog.DiscardHandler)

// harness is a Coordinator on a fake clock with fake signals, the usual
// set-up of these tests.
type harness struct {
	ld      *lameduck.Coordinator
	clock   *fakeclock.Clock
	signals chan os.Signal
	phases  *phases
	log     *callLog
	done    chan error // Run's result
}

func newHarness(t *testing.T, opts ...lameduck.Option) *harness {
	t.Helper()
	h := &harness{clock: fakeclock.New(), signals: make(chan os.Signal, 2), phases: newPhases(), log: newCallLog()}
	base := []lameduck.Option{
		lameduck.WithSignals(), lameduck.WithSignalChannel(h.signals), h.clock.Option(),
		lameduck.WithLogger(discard),
	}
	ld, err := lameduck.New(append(base, opts...)...)
	require.NoError(t, err)
	ld.OnPhase(h.phases.observe)
	h.ld = ld
	return h
}

// start runs the Coordinator in a goroutine and waits until it serves.
func (h *harness) start(t *testing.T, ctx context.Context) {
	t.Helper()
	h.done = make(chan error, 1)
	go func() { h.done <- h.ld.Run(ctx) }()
	h.phases.await(t, lameduck.PhaseServing)
}

// wait returns what Run returned.
func (h *harness) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
		return errors.New("unreachable")
	}
}

// lineAbove returns the file and line of the line above its caller, as
// Go and OnShutdown name work registered there.
func lineAbove() string {
	_, file, line, _ := runtime.Caller(1)
	return fmt.Sprintf("%s:%d", filepath.Base(file), line-1)
}
