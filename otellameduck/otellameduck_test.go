package otellameduck_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/testnet"
	"github.com/lameduck/lameduck/otellameduck"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on an event, so that a bug fails a test
// instead of hanging the suite.
const waitTimeout = 10 * time.Second

// points flattens metric data into "name{key=value,...}" → value, the
// attributes sorted, so that tests compare exported values as text.
func points(rm *metricdata.ResourceMetrics) map[string]float64 {
	out := map[string]float64{}
	key := func(name string, set attribute.Set) string {
		var kv []string
		for _, a := range set.ToSlice() {
			kv = append(kv, string(a.Key)+"="+a.Value.Emit())
		}
		sort.Strings(kv)
		return name + "{" + strings.Join(kv, ",") + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = p.Value
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = p.Value
				}
			}
		}
	}
	return out
}

// exporter is a push exporter that keeps, for each export, the values it
// carried: what a collector would have received.
type exporter struct {
	mu      sync.Mutex
	exports []map[string]float64
}

func (e *exporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (e *exporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (e *exporter) Export(_ context.Context, rm *metricdata.ResourceMetrics) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exports = append(e.exports, points(rm)) // rm is reused after Export returns
	return nil
}

func (e *exporter) ForceFlush(context.Context) error { return nil }
func (e *exporter) Shutdown(context.Context) error   { return nil }

func (e *exporter) last() map[string]float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.exports) == 0 {
		return nil
	}
	return e.exports[len(e.exports)-1]
}

// sdk is an OpenTelemetry SDK whose only way out is a flush: its periodic
// reader and batch span processor would export in an hour, long after the
// test. A manual reader lets the test collect while the process runs.
type sdk struct {
	metrics *exporter
	spans   *tracetest.InMemoryExporter
	manual  *sdkmetric.ManualReader
	mp      *sdkmetric.MeterProvider
	tp      *sdktrace.TracerProvider
}

func newSDK(t *testing.T) *sdk {
	s := &sdk{metrics: &exporter{}, spans: tracetest.NewInMemoryExporter(), manual: sdkmetric.NewManualReader()}
	s.mp = sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(s.metrics, sdkmetric.WithInterval(time.Hour))),
		sdkmetric.WithReader(s.manual))
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(s.spans, sdktrace.WithBatchTimeout(time.Hour)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.mp.Shutdown(ctx); !errors.Is(err, sdkmetric.ErrReaderShutdown) { // a test may shut it down first
			assert.NoError(t, err)
		}
		assert.NoError(t, s.tp.Shutdown(ctx))
	})
	return s
}

func (s *sdk) collect(t *testing.T) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, s.manual.Collect(context.Background(), &rm))
	return points(&rm)
}

// errorHandler collects what is reported to otel.Handle.
type errorHandler struct {
	mu   sync.Mutex
	errs []error
}

func (h *errorHandler) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, err)
}

func (h *errorHandler) reported() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.errs)
}

func handleErrors(t *testing.T) *errorHandler {
	h := &errorHandler{}
	otel.SetErrorHandler(h)
	t.Cleanup(func() { otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { t.Logf("otel: %v", err) })) })
	return h
}

// process is a Coordinator with an HTTP server on loopback, exported by a
// Telemetry. Its handler holds each request until the test releases it, or
// until the request's context ends.
type process struct {
	ld      *lameduck.Coordinator
	app     *httpserver.Server
	signals chan os.Signal
	events  chan lameduck.Event
	started chan chan struct{}
	done    chan error
}

func newProcess(t *testing.T, tel *otellameduck.Telemetry, opts ...lameduck.Option) *process {
	t.Helper()
	p := &process{
		signals: make(chan os.Signal, 2), events: make(chan lameduck.Event, 10),
		started: make(chan chan struct{}, 10), done: make(chan error, 1),
	}
	opts = append([]lameduck.Option{
		lameduck.WithSignals(), lameduck.WithSignalChannel(p.signals),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
	ld, err := lameduck.New(opts...)
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) { p.events <- e })
	p.ld = ld
	p.app = httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("hold") {
			release := make(chan struct{})
			p.started <- release
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})})
	ld.Register(p.app)
	if tel != nil {
		require.NoError(t, tel.Instrument(ld))
	}
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
	for {
		if e := await.Recv(t, p.events, "phase "+phase.String()); e.Phase == phase {
			return e
		}
	}
}

func (p *process) url(query string) string { return "http://" + p.app.Addr().String() + "/?" + query }

// get sends a request on a new connection, as a client that a load
// balancer routes here does, and returns its status code.
func get(url string) (int, error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: waitTimeout}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestTheFinalValuesAreFlushedBeforeRunReturns(t *testing.T) {
	h := handleErrors(t)
	s := newSDK(t)
	tel := otellameduck.New(otellameduck.WithMeterProvider(s.mp), otellameduck.WithTracerProvider(s.tp))
	const delay = 300 * time.Millisecond
	p := newProcess(t, tel, lameduck.WithDrainDelay(delay), lameduck.WithGracePeriod(10*time.Second))
	p.ld.MarkReady()
	p.run(t)
	server := "http " + p.app.Addr().String()

	held := make(chan int, 1)
	go func() {
		code, err := get(p.url("hold"))
		assert.NoError(t, err)
		held <- code
	}()
	release := await.Recv(t, p.started, "the held request reaching its handler")
	serving := s.collect(t)
	assert.Equal(t, 1.0, serving["lameduck.phase.current{lameduck.phase.name=serving}"])
	assert.Equal(t, 1.0, serving["lameduck.ready{}"])
	assert.Equal(t, 1.0, serving["lameduck.in_flight{lameduck.server.name="+server+",lameduck.work.kind=request}"])
	assert.NotContains(t, serving, "lameduck.drain_delay.arrivals{}", "no arrival series before the shutdown")

	signalled := time.Now()
	p.signals <- os.Interrupt
	p.await(t, lameduck.PhaseLameDuck)
	// A new connection during the delay: the load balancer still routes here.
	code, err := get(p.url(""))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	lameDuck := s.collect(t)
	assert.Equal(t, 1.0, lameDuck["lameduck.phase.current{lameduck.phase.name=lame_duck}"])
	assert.Equal(t, 1.0, lameDuck["lameduck.drain_delay.arrivals{}"], "arrivals are counted as they come")
	close(release)
	assert.Equal(t, http.StatusOK, await.Recv(t, held, "the answer to the held request"))
	require.NoError(t, await.Recv(t, p.done, "Run's return"))
	returned := time.Since(signalled).Seconds()

	// Nothing has collected since Run returned: what the push exporter
	// has is what the flush sent before it.
	final := s.metrics.last()
	require.NotNil(t, final, "the meter provider was flushed before Run returned")
	t.Logf("exported as Run returned: %v", final)
	for _, ph := range []string{"starting", "serving", "lame_duck", "draining", "stopping"} {
		assert.Equal(t, 0.0, final["lameduck.phase.current{lameduck.phase.name="+ph+"}"], ph)
		assert.Contains(t, final, "lameduck.phase.duration{lameduck.phase.name="+ph+"}", ph)
	}
	assert.Equal(t, 1.0, final["lameduck.phase.current{lameduck.phase.name=stopped}"])
	assert.Equal(t, 0.0, final["lameduck.ready{}"])
	assert.Equal(t, 1.0, final["lameduck.drain_delay.ended{lameduck.drain_delay.reason=fixed}"])
	assert.Equal(t, 1.0, final["lameduck.drain_delay.arrivals{}"])
	// Times on the real clock, so orderings: the delay lasts at least
	// what was configured and no longer than the test saw, and the
	// arrival came within it.
	delayTook := final["lameduck.drain_delay.duration{}"]
	assert.GreaterOrEqual(t, delayTook, delay.Seconds())
	assert.Less(t, delayTook, returned)
	lameDuckTook := final["lameduck.phase.duration{lameduck.phase.name=lame_duck}"]
	assert.GreaterOrEqual(t, lameDuckTook, delay.Seconds(), "the lame duck lasts the delay")
	assert.Less(t, lameDuckTook, returned)
	last := final["lameduck.drain_delay.last_arrival{lameduck.server.name="+server+"}"]
	assert.Greater(t, last, 0.0)
	assert.Less(t, last, delayTook, "the last arrival came during the delay")
	for _, k := range []string{"request", "stream", "connection", "worker"} {
		assert.Equal(t, 0.0, final["lameduck.cut{lameduck.work.kind="+k+"}"], k)
	}
	assert.Equal(t, 0.0, final["lameduck.in_flight{lameduck.server.name="+server+",lameduck.work.kind=request}"])
	assert.Equal(t, final, s.collect(t), "the values are final: a later collection reports the same")

	spans := s.spans.GetSpans()
	require.Len(t, spans, 1, "one span per shutdown, flushed before Run returned")
	span := spans[0]
	assert.Equal(t, "lameduck.shutdown", span.Name)
	assert.Equal(t, codes.Unset, span.Status.Code)
	var events []string
	for _, e := range span.Events {
		events = append(events, e.Name)
	}
	assert.Equal(t, []string{"lame duck", "draining", "stopping", "stopped"}, events)
	attrs := map[string]attribute.Value{}
	for _, a := range span.Attributes {
		attrs[string(a.Key)] = a.Value
	}
	assert.Equal(t, "fixed", attrs["lameduck.drain_delay.reason"].AsString())
	assert.Equal(t, int64(1), attrs["lameduck.drain_delay.arrivals"].AsInt64())
	assert.Equal(t, server, attrs["lameduck.drain_delay.last_arrival_server"].AsString())
	assert.InDelta(t, last, attrs["lameduck.drain_delay.last_arrival"].AsFloat64(), 1e-9, "the span and the metrics agree")
	assert.GreaterOrEqual(t, attrs["lameduck.lame_duck.duration"].AsFloat64(), delay.Seconds())
	assert.Less(t, attrs["lameduck.lame_duck.duration"].AsFloat64(), returned)
	assert.Equal(t, int64(0), attrs["lameduck.cut.requests"].AsInt64())
	assert.Equal(t, int64(0), attrs["lameduck.departures.told"].AsInt64())
	assert.NotContains(t, attrs, "lameduck.departures.window", "no window without long-lived work")
	assert.Contains(t, final, "lameduck.departures.told{}", "the counters exist from the start of the shutdown")
	assert.Equal(t, 0.0, final["lameduck.departures.told{}"])
	assert.NotContains(t, final, "lameduck.departures.window{}")
	assert.Less(t, span.EndTime.Sub(span.StartTime).Seconds(), returned, "the span ends before Run returns")
	assert.Empty(t, h.reported())
}

func TestDeparturesAreExportedAndOnTheSpan(t *testing.T) {
	h := handleErrors(t)
	s := newSDK(t)
	tel := otellameduck.New(otellameduck.WithMeterProvider(s.mp), otellameduck.WithTracerProvider(s.tp))
	const delay, window = time.Second, 500 * time.Millisecond
	p := newProcess(t, tel, lameduck.WithDrainDelay(delay),
		lameduck.WithDepartureWindow(window), lameduck.WithGracePeriod(10*time.Second))
	ws := testnet.NewStreams()
	p.ld.Register(ws)
	p.ld.MarkReady()
	p.run(t)
	var deps []*lameduck.Departure
	var ends []func()
	for range 4 {
		dep, end := ws.Open(false)
		deps, ends = append(deps, dep), append(ends, end)
	}
	assert.NotContains(t, s.collect(t), "lameduck.departures.told{}", "no departure series before the shutdown")

	p.signals <- os.Interrupt
	p.await(t, lameduck.PhaseLameDuck)
	ends[0]() // a client that leaves by itself during the drain delay
	lameDuck := s.collect(t)
	assert.Equal(t, 1.0, lameDuck["lameduck.phase.current{lameduck.phase.name=lame_duck}"])
	assert.Equal(t, 0.0, lameDuck["lameduck.departures.told{}"], "no turn during the drain delay")
	assert.Contains(t, lameDuck, "lameduck.departures.told{}", "the counters exist from the start of the shutdown")
	assert.Equal(t, 1.0, lameDuck["lameduck.departures.left{}"])
	assert.NotContains(t, lameDuck, "lameduck.departures.window{}", "no window before a turn")
	assert.NotContains(t, lameDuck, "lameduck.departures.peak_per_second{}", "no peak before a turn")

	for i, d := range deps[1:] {
		await.Recv(t, d.Leaving(), fmt.Sprintf("stream %d's turn to leave", i+1))
	}
	stopping := p.await(t, lameduck.PhaseStopping)
	require.NoError(t, await.Recv(t, p.done, "Run's return"))
	rep := stopping.Departures
	assert.Equal(t, 3, rep.Told)
	assert.Equal(t, 1, rep.Left, "a stream that left by itself is not told")
	assert.Greater(t, rep.Window, time.Duration(0), "three turns are spread")
	assert.LessOrEqual(t, rep.Window, window)
	assert.Equal(t, 3, rep.PeakPerSecond, "three turns within one second")

	final := s.metrics.last()
	require.NotNil(t, final, "the meter provider was flushed before Run returned")
	assert.Equal(t, 3.0, final["lameduck.departures.told{}"])
	assert.Equal(t, 1.0, final["lameduck.departures.left{}"])
	assert.Equal(t, rep.Window.Seconds(), final["lameduck.departures.window{}"])
	assert.Equal(t, 3.0, final["lameduck.departures.peak_per_second{}"])
	assert.Equal(t, 0.0, final["lameduck.cut{lameduck.work.kind=stream}"], "every stream left at its turn")

	spans := s.spans.GetSpans()
	require.Len(t, spans, 1)
	attrs := map[string]attribute.Value{}
	for _, a := range spans[0].Attributes {
		attrs[string(a.Key)] = a.Value
	}
	assert.Equal(t, int64(3), attrs["lameduck.departures.told"].AsInt64())
	assert.Equal(t, int64(1), attrs["lameduck.departures.left"].AsInt64())
	assert.Equal(t, rep.Window.Seconds(), attrs["lameduck.departures.window"].AsFloat64(), "the span and the metrics agree")
	assert.Equal(t, int64(3), attrs["lameduck.departures.peak_per_second"].AsInt64())
	assert.Equal(t, codes.Unset, spans[0].Status.Code)
	assert.Empty(t, h.reported())
}

func TestACutShutdownEndsItsSpanWithAnError(t *testing.T) {
	handleErrors(t)
	s := newSDK(t)
	tel := otellameduck.New(otellameduck.WithMeterProvider(s.mp), otellameduck.WithTracerProvider(s.tp))
	p := newProcess(t, tel, lameduck.WithDrainDelay(0), lameduck.WithGracePeriod(2*time.Second))
	p.ld.MarkReady()
	p.run(t)
	held := make(chan error, 1)
	go func() {
		_, err := get(p.url("hold")) // never released: the deadline cuts it
		held <- err
	}()
	await.Recv(t, p.started, "the held request reaching its handler")
	p.signals <- os.Interrupt
	err := await.Recv(t, p.done, "Run's return")
	require.ErrorIs(t, err, lameduck.ErrCut)
	await.Recv(t, held, "the held request's end")

	final := s.metrics.last()
	require.NotNil(t, final)
	assert.Equal(t, 1.0, final["lameduck.phase.current{lameduck.phase.name=stopped}"])
	assert.Equal(t, 1.0, final["lameduck.cut{lameduck.work.kind=request}"])
	spans := s.spans.GetSpans()
	require.Len(t, spans, 1)
	assert.Equal(t, codes.Error, spans[0].Status.Code)
	assert.Equal(t, "1 request cut at the deadline", spans[0].Status.Description)
}

func TestMisuseIsReportedWithTheFix(t *testing.T) {
	t.Run("Instrument", func(t *testing.T) {
		h := handleErrors(t)
		s := newSDK(t)
		tel := otellameduck.New(otellameduck.WithMeterProvider(s.mp), otellameduck.WithTracerProvider(s.tp))
		assert.ErrorContains(t, tel.Instrument(nil), "the Coordinator is nil")
		p := newProcess(t, tel)
		assert.ErrorContains(t, tel.Instrument(p.ld), "Instrument called twice")
		p.run(t)
		p.signals <- os.Interrupt
		require.NoError(t, await.Recv(t, p.done, "Run's return"), "Instrument is all the wiring")
		assert.Empty(t, h.reported())
		assert.ErrorContains(t, otellameduck.New().Instrument(p.ld), "Instrument called after Run")
	})
	t.Run("providers shut down in a hook", func(t *testing.T) {
		h := handleErrors(t)
		s := newSDK(t)
		tel := otellameduck.New(otellameduck.WithMeterProvider(s.mp), otellameduck.WithTracerProvider(s.tp))
		p := newProcess(t, tel)
		p.ld.OnShutdown("", s.mp.Shutdown)
		p.run(t)
		p.signals <- os.Interrupt
		require.NoError(t, await.Recv(t, p.done, "Run's return"))
		var msgs []string
		for _, err := range h.reported() {
			msgs = append(msgs, err.Error())
		}
		require.NotEmpty(t, msgs)
		assert.Contains(t, strings.Join(msgs, "\n"), "shut it down after Run returns, not in an OnShutdown hook")
	})
}

func TestAFlushThatHangsCannotHoldRunPastTheDeadline(t *testing.T) {
	h := handleErrors(t)
	stuck := &stuckProvider{release: make(chan struct{})}
	defer close(stuck.release)
	tel := otellameduck.New(otellameduck.WithMeterProvider(stuck), otellameduck.WithTracerProvider(stuck))
	const grace = 2 * time.Second
	p := newProcess(t, tel, lameduck.WithDrainDelay(0), lameduck.WithGracePeriod(grace))
	p.run(t)
	start := time.Now()
	p.signals <- os.Interrupt
	require.NoError(t, await.Recv(t, p.done, "Run's return"))
	assert.Less(t, time.Since(start), grace, "Run returned before the grace period was over")
	assert.NotEmpty(t, h.reported())
	assert.ErrorContains(t, h.reported()[0], "did not finish before the shutdown's deadline")
}

// stuckProvider is a provider whose ForceFlush ignores its context until
// released, as an exporter stuck on a dead collector might.
type stuckProvider struct {
	noopProviders
	release chan struct{}
}

func (p *stuckProvider) ForceFlush(context.Context) error {
	<-p.release
	return nil
}

// noopProviders is a meter provider and a tracer provider that record nothing.
type noopProviders struct {
	metricnoop.MeterProvider
	tracenoop.TracerProvider
}
