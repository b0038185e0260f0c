package prommetrics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
	"github.com/lameduck/lameduck/internal/testnet"
	"github.com/lameduck/lameduck/prommetrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on an event, so that a bug fails a test
// instead of hanging the suite.
const waitTimeout = 10 * time.Second

// process is a Coordinator on a fake clock with an application server,
// whose handler holds each request until the test releases it (see held),
// and an admin server that serves the Collector's metrics.
type process struct {
	ld      *lameduck.Coordinator
	clock   *fakeclock.Clock
	signals chan os.Signal
	events  chan lameduck.Event
	app     *httpserver.Server
	admin   *httpserver.Server
	client  *http.Client       // one keep-alive connection, as Prometheus keeps
	started chan chan struct{} // each handler's release channel
	db      atomic.Bool        // the "db" check fails
	done    chan error
}

func newProcess(t *testing.T, delay time.Duration, observe func(lameduck.Event), opts ...lameduck.Option) *process {
	t.Helper()
	p := &process{
		clock: fakeclock.New(), signals: make(chan os.Signal, 2), events: make(chan lameduck.Event, 100),
		client:  &http.Client{Timeout: waitTimeout, Transport: &http.Transport{}},
		started: make(chan chan struct{}, 10), done: make(chan error, 1),
	}
	t.Cleanup(p.client.CloseIdleConnections)
	ld, err := lameduck.New(append([]lameduck.Option{
		lameduck.WithSignals(), lameduck.WithSignalChannel(p.signals), p.clock.Option(),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)), lameduck.WithDrainDelay(delay),
	}, opts...)...)
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) {
		if observe != nil {
			observe(e)
		}
		p.events <- e
	})
	p.ld = ld
	ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error {
		if p.db.Load() {
			return errors.New("connection refused")
		}
		return nil
	}})
	p.app = httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release := make(chan struct{})
		p.started <- release
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	})})
	ld.Register(p.app)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prommetrics.NewCollector(ld))
	p.admin = httpserver.Admin(ld, "127.0.0.1:0", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return p
}

func (p *process) run(t *testing.T) {
	t.Helper()
	go func() { p.done <- p.ld.Run(context.Background()) }()
	p.await(t, lameduck.PhaseServing)
}

// await waits until Run enters phase, and returns the phase's event.
func (p *process) await(t *testing.T, phase lameduck.Phase) lameduck.Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case e := <-p.events:
			if e.Phase == phase {
				return e
			}
		case <-timeout:
			t.Fatalf("phase %v never entered", phase)
			return lameduck.Event{}
		}
	}
}

func (p *process) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
		return nil
	}
}

// held is a request that the application's handler holds.
type held struct {
	release chan<- struct{} // closing it lets the handler answer
	errs    <-chan error    // the client's error, once it has the answer
}

// wait returns the client's error.
func (h held) wait(t *testing.T) error {
	t.Helper()
	return await.Recv(t, h.errs, "the answer to a held request")
}

// get sends one request to the application, in the background, and
// returns once the handler holds it.
func (p *process) get(t *testing.T) held {
	t.Helper()
	url := "http://" + p.app.Addr().String()
	errs := make(chan error, 1)
	go func() {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		errs <- err
	}()
	select {
	case release := <-p.started:
		return held{release, errs}
	case <-time.After(waitTimeout):
		t.Fatal("the request never reached the handler")
		return held{}
	}
}

// scrape is one scrape of the admin server, as Prometheus makes it.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

func (p *process) scrape(t *testing.T) scrape {
	t.Helper()
	resp, err := p.client.Get("http://" + p.admin.Addr().String() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	return scrape{string(body), families}
}

// value returns the value of the series of name whose labels include
// labels, and whether there is one.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	mf, ok := s.families[name]
	if !ok {
		return 0, false
	}
series:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Summary != nil:
			return float64(m.Summary.GetSampleCount()), true
		}
	}
	return 0, false
}

// phase returns the phase a scrape shows: the one whose lameduck_phase is 1.
func (s scrape) phase(t *testing.T) string {
	t.Helper()
	var current []string
	for _, m := range s.families["lameduck_phase"].GetMetric() {
		if m.GetGauge().GetValue() == 1 {
			current = append(current, m.GetLabel()[0].GetValue())
		}
	}
	require.Len(t, current, 1, "exactly one phase is current:\n%s", s.text)
	return current[0]
}

func (s scrape) inFlight(t *testing.T, server, kind string) float64 {
	t.Helper()
	v, ok := s.value("lameduck_in_flight", "server", server, "kind", kind)
	require.True(t, ok, "no lameduck_in_flight for %s %s:\n%s", server, kind, s.text)
	return v
}

func TestScrapesAnswerInEveryPhaseTheDrainIncluded(t *testing.T) {
	const delay = 5 * time.Second
	var p *process
	stopped := make(chan scrape, 1)
	p = newProcess(t, delay, func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseStopped {
			// The last moment before Run returns: the admin server still
			// answers.
			stopped <- p.scrape(t)
		}
	})
	hookRunning, hookDone := make(chan struct{}), make(chan struct{})
	p.ld.OnShutdown("", func(context.Context) error {
		close(hookRunning)
		<-hookDone
		return nil
	})
	p.run(t)
	app := p.app.String()

	s := p.scrape(t)
	assert.Equal(t, "serving", s.phase(t))
	ready, _ := s.value("lameduck_ready")
	assert.Equal(t, 0.0, ready, "not ready before MarkReady")
	p.ld.MarkReady()
	p.db.Store(true)
	require.Error(t, p.ld.CheckReadiness(context.Background()))
	p.db.Store(false)
	require.NoError(t, p.ld.CheckReadiness(context.Background()))

	first, second := p.get(t), p.get(t)
	p.clock.Advance(2 * time.Second)
	s = p.scrape(t)
	assert.Equal(t, "serving", s.phase(t))
	ready, _ = s.value("lameduck_ready")
	assert.Equal(t, 1.0, ready)
	assert.Equal(t, 2.0, s.inFlight(t, app, "request"))
	assert.Equal(t, 0.0, s.inFlight(t, app, "stream"))
	serving, _ := s.value("lameduck_phase_duration_seconds", "phase", "serving")
	assert.Equal(t, 2.0, serving, "the current phase counts up to now")
	passing, _ := s.value("lameduck_readiness_check_passing", "check", "db")
	assert.Equal(t, 1.0, passing)
	calls, _ := s.value("lameduck_readiness_check_duration_seconds", "check", "db")
	assert.Equal(t, 2.0, calls)
	failures, _ := s.value("lameduck_readiness_check_failures_total", "check", "db")
	assert.Equal(t, 1.0, failures)
	problems, err := promlint.New(strings.NewReader(s.text)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems, "the metrics follow Prometheus' naming conventions")

	p.signals <- syscall.SIGTERM
	p.await(t, lameduck.PhaseLameDuck)
	s = p.scrape(t)
	assert.Equal(t, "lame_duck", s.phase(t))
	ready, _ = s.value("lameduck_ready")
	assert.Equal(t, 0.0, ready, "not ready from the first moment of the shutdown")
	assert.Equal(t, 2.0, s.inFlight(t, app, "request"))

	p.clock.Pass(t, delay)
	p.await(t, lameduck.PhaseDraining)
	s = p.scrape(t)
	assert.Equal(t, "draining", s.phase(t), "the drain can be scraped")
	assert.Equal(t, 2.0, s.inFlight(t, app, "request"))
	lameDuck, _ := s.value("lameduck_phase_duration_seconds", "phase", "lame_duck")
	assert.Equal(t, delay.Seconds(), lameDuck)

	close(first.release)
	require.NoError(t, first.wait(t))
	s = p.scrape(t)
	assert.Equal(t, "draining", s.phase(t))
	assert.Equal(t, 1.0, s.inFlight(t, app, "request"), "in-flight counts fall as requests finish")

	close(second.release)
	require.NoError(t, second.wait(t))
	await.Recv(t, hookRunning, "the hook to run")
	s = p.scrape(t)
	assert.Equal(t, "stopping", s.phase(t))
	assert.Equal(t, 0.0, s.inFlight(t, app, "request"))
	cut, _ := s.value("lameduck_cut_total", "kind", "request")
	assert.Equal(t, 0.0, cut, "a clean drain cuts nothing")

	close(hookDone)
	s = await.Recv(t, stopped, "the scrape in PhaseStopped")
	assert.Equal(t, "stopped", s.phase(t))
	require.NoError(t, p.wait(t))
}

func TestWhatIsCutIsCounted(t *testing.T) {
	// A window of 0 tells every stream to leave at once, 10 ms into the
	// drain.
	p := newProcess(t, 0, nil, lameduck.WithDepartureWindow(0))
	ws := testnet.NewStreams()
	p.ld.Register(ws)
	p.ld.MarkReady()
	p.run(t)
	held := p.get(t)
	stays, _ := ws.Open(true)
	p.signals <- syscall.SIGTERM
	p.await(t, lameduck.PhaseDraining)
	p.clock.Pass(t, 10*time.Millisecond)
	await.Recv(t, stays.Leaving(), "the stream's turn to leave")
	p.signals <- syscall.SIGINT // cuts at once
	require.ErrorIs(t, p.wait(t), lameduck.ErrCut)
	held.wait(t) // the client's error, whatever it is, does not matter here

	err := testutil.CollectAndCompare(prommetrics.NewCollector(p.ld), strings.NewReader(`
# HELP lameduck_cut_total Work cut at the shutdown deadline or by a second signal, by kind.
# TYPE lameduck_cut_total counter
lameduck_cut_total{kind="connection"} 0
lameduck_cut_total{kind="request"} 1
lameduck_cut_total{kind="stream"} 1
lameduck_cut_total{kind="worker"} 0
# HELP lameduck_departures_left_total Long-lived work that ended by itself during the shutdown, before its turn to leave; set from the start of the shutdown.
# TYPE lameduck_departures_left_total counter
lameduck_departures_left_total 0
# HELP lameduck_departures_peak_per_second The most long-lived work told to leave within any one second: the rate at which the clients came back to the other pods; set once a piece of it has been told to leave.
# TYPE lameduck_departures_peak_per_second gauge
lameduck_departures_peak_per_second 1
# HELP lameduck_departures_told_total Long-lived work (websockets, event streams, streaming RPCs) told to leave at its turn, once the drain delay was over; set from the start of the shutdown.
# TYPE lameduck_departures_told_total counter
lameduck_departures_told_total 1
# HELP lameduck_departures_window_seconds How long the turns of the long-lived work took, from the end of the drain delay to the last turn so far; set once a piece of it has been told to leave, 0 if all was told at once.
# TYPE lameduck_departures_window_seconds gauge
lameduck_departures_window_seconds 0.01
# HELP lameduck_phase The phase of the shutdown sequence the process is in: 1 for the current phase, 0 for the others.
# TYPE lameduck_phase gauge
lameduck_phase{phase="draining"} 0
lameduck_phase{phase="lame_duck"} 0
lameduck_phase{phase="serving"} 0
lameduck_phase{phase="starting"} 0
lameduck_phase{phase="stopped"} 1
lameduck_phase{phase="stopping"} 0
`), "lameduck_cut_total", "lameduck_phase", "lameduck_departures_told_total", "lameduck_departures_left_total",
		"lameduck_departures_window_seconds", "lameduck_departures_peak_per_second")
	assert.NoError(t, err)
}

func TestCollectorLintsCleanBeforeRun(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	problems, err := testutil.CollectAndLint(prommetrics.NewCollector(ld))
	require.NoError(t, err)
	assert.Empty(t, problems)
	assert.Equal(t, 6+1+4, testutil.CollectAndCount(prommetrics.NewCollector(ld)),
		"before Run: the phases, readiness and the cut counters")
	assert.PanicsWithValue(t, "prommetrics: NewCollector: the coordinator is nil; create one with lameduck.New",
		func() { prommetrics.NewCollector(nil) })
}

// BenchmarkGather measures a scrape's gathering of lameduck's metrics
// (a running Coordinator with two servers and two checks) against that of
// the Go runtime's collector, which every Go service exports: the ratio of
// the two is what the collector adds to a scrape.
func BenchmarkGather(b *testing.B) {
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(b, err)
	for _, name := range []string{"db", "cache"} {
		ld.AddCheck(lameduck.Check{Name: name, Func: func(context.Context) error { return nil }})
	}
	ld.Register(httpserver.New(&http.Server{Addr: "127.0.0.1:0"}))
	ld.Register(httpserver.New(&http.Server{Addr: "127.0.0.1:0"}))
	ld.MarkReady()
	require.NoError(b, ld.CheckReadiness(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan struct{})
	ld.Go("", func(context.Context) error { close(serving); return nil })
	done := make(chan error, 1)
	go func() { done <- ld.Run(ctx) }()
	await.Recv(b, serving, "Run to serve")
	defer func() { cancel(); await.Recv(b, done, "Run to return") }()

	for _, bc := range []struct {
		name      string
		collector prometheus.Collector
	}{
		{"lameduck", prommetrics.NewCollector(ld)},
		{"go", collectors.NewGoCollector()},
	} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(bc.collector)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestTheLagIsExported(t *testing.T) {
	const delay = 5 * time.Second
	p := newProcess(t, delay, nil)
	scraped := make(chan struct{})
	p.ld.OnShutdown("", func(context.Context) error { <-scraped; return nil }) // holds Run, and the admin server
	p.run(t)
	p.ld.MarkReady()
	_, ok := p.scrape(t).value("lameduck_lame_duck_arrivals_total")
	assert.False(t, ok, "no arrival series before the lame-duck phase")

	p.signals <- syscall.SIGTERM
	p.await(t, lameduck.PhaseLameDuck)
	p.clock.AwaitTimer(t, delay)
	p.clock.Advance(time.Second)
	arrived := p.get(t) // a new connection: the load balancer still routes here
	close(arrived.release)
	require.NoError(t, arrived.wait(t))
	require.Eventually(t, func() bool {
		arrivals, _ := p.scrape(t).value("lameduck_lame_duck_arrivals_total")
		return arrivals == 1
	}, waitTimeout, time.Millisecond, "the arrival is exported during the lame-duck phase, as it happens")
	_, ok = p.scrape(t).value("lameduck_drain_delay_ended", "reason", "fixed")
	assert.False(t, ok, "the delay is not over")
	p.clock.Advance(delay - time.Second)
	p.await(t, lameduck.PhaseDraining)

	s := p.scrape(t)
	arrivals, _ := s.value("lameduck_lame_duck_arrivals_total")
	assert.Equal(t, 1.0, arrivals)
	last, ok := s.value("lameduck_last_arrival_seconds", "server", p.app.String())
	assert.True(t, ok)
	assert.Equal(t, 1.0, last, "one second after the signal")
	ended, ok := s.value("lameduck_drain_delay_ended", "reason", "fixed")
	assert.True(t, ok)
	assert.Equal(t, 1.0, ended)
	problems, err := promlint.New(strings.NewReader(s.text)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems)
	close(scraped)
	require.NoError(t, p.wait(t))
}

func TestDeparturesAreExported(t *testing.T) {
	const delay, window = 5 * time.Second, 2 * time.Second
	p := newProcess(t, delay, nil, lameduck.WithDepartureWindow(window))
	ws := testnet.NewStreams()
	p.ld.Register(ws)
	scraped := make(chan struct{})
	p.ld.OnShutdown("", func(context.Context) error { <-scraped; return nil }) // holds Run, and the admin server
	p.ld.MarkReady()
	p.run(t)
	var deps []*lameduck.Departure
	var ends []func()
	for range 4 {
		dep, end := ws.Open(false)
		deps, ends = append(deps, dep), append(ends, end)
	}
	_, ok := p.scrape(t).value("lameduck_departures_told_total")
	assert.False(t, ok, "no departure series before the shutdown")

	p.signals <- syscall.SIGTERM
	p.await(t, lameduck.PhaseLameDuck)
	ends[0]() // a client that leaves by itself during the drain delay
	s := p.scrape(t)
	told, ok := s.value("lameduck_departures_told_total")
	assert.True(t, ok, "the counters exist from the start of the shutdown")
	assert.Equal(t, 0.0, told, "no turn during the drain delay")
	left, _ := s.value("lameduck_departures_left_total")
	assert.Equal(t, 1.0, left)
	_, ok = s.value("lameduck_departures_window_seconds")
	assert.False(t, ok, "no window before a turn")
	_, ok = s.value("lameduck_departures_peak_per_second")
	assert.False(t, ok, "no peak before a turn")

	p.clock.Pass(t, delay)
	p.await(t, lameduck.PhaseDraining)
	for range deps[1:] {
		p.clock.AdvanceToNext(t) // the next turn, which tells one to leave
	}
	for i, d := range deps[1:] {
		await.Recv(t, d.Leaving(), fmt.Sprintf("stream %d's turn to leave", i+1))
	}
	stopping := p.await(t, lameduck.PhaseStopping)
	rep := stopping.Departures // what the metrics export
	require.Equal(t, 3, rep.Told)
	require.Equal(t, 1, rep.Left)
	require.Equal(t, 3, rep.PeakPerSecond)

	s = p.scrape(t)
	assert.Equal(t, "stopping", s.phase(t))
	told, _ = s.value("lameduck_departures_told_total")
	assert.Equal(t, 3.0, told)
	left, _ = s.value("lameduck_departures_left_total")
	assert.Equal(t, 1.0, left, "a stream that left by itself is not told")
	win, ok := s.value("lameduck_departures_window_seconds")
	assert.True(t, ok)
	assert.Equal(t, rep.Window.Seconds(), win)
	assert.Greater(t, win, 0.0, "three turns are spread")
	assert.LessOrEqual(t, win, window.Seconds())
	peak, _ := s.value("lameduck_departures_peak_per_second")
	assert.Equal(t, 3.0, peak, "three turns within one second")
	cut, _ := s.value("lameduck_cut_total", "kind", "stream")
	assert.Equal(t, 0.0, cut, "every stream left at its turn")
	problems, err := promlint.New(strings.NewReader(s.text)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems)
	close(scraped)
	require.NoError(t, p.wait(t))
}
