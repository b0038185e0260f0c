// Package otellameduck exports the shutdown of a [lameduck.Coordinator]
// through OpenTelemetry: the measurements of package prommetrics as
// instruments, and one span for each shutdown, from the signal to the end of
// Run, with an event per phase and the shutdown's figures as attributes.
//
//	t := otellameduck.New(otellameduck.WithMeterProvider(mp), otellameduck.WithTracerProvider(tp))
//	ld, err := lameduck.New()
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := t.Instrument(ld); err != nil {
//		log.Fatal(err)
//	}
//	// Register servers, MarkReady, then:
//	err = ld.Run(ctx)
//	// Shut mp and tp down here, after Run: the final values are already out.
//
// [Telemetry.Instrument] is all the wiring: it creates the instruments, and
// adds an observer of the phases (see [lameduck.Coordinator.OnPhase]) that
// makes the span. When Run enters [lameduck.PhaseStopped], the observer
// ends the span and calls ForceFlush on both providers, before Run returns
// and within the shutdown's deadline, so that a pushing exporter, such as
// OTLP, carries every shutdown's final values out of the process; from
// then on the instruments report those values. Two mistakes would lose
// them, and each is reported to [otel.Handle] with its fix: shutting the
// providers down in a hook of [lameduck.Coordinator.OnShutdown], which runs
// before the stopped phase, rather than after Run returns; and a provider
// without a method ForceFlush(context.Context) error, as the SDK's have
// (no-op providers are neither flushed nor reported).
//
// # Metrics
//
// Every value is read from [lameduck.Coordinator.Status] when the meter
// provider collects, not counted from events, so that the in-flight counts
// are exact (instrument, unit, attributes):
//
//	lameduck.phase.current                     1       lameduck.phase.name: 1 for the phase Run is in, 0 for the others
//	lameduck.ready                             1       1 from MarkReady until the shutdown begins
//	lameduck.phase.duration                    s       lameduck.phase.name: time spent in each phase entered, the current one up to now
//	lameduck.in_flight                         {item}  lameduck.server.name, lameduck.work.kind: requests, streams and connections in flight
//	lameduck.cut                               {item}  lameduck.work.kind: requests, streams, connections and workers cut at the deadline
//	lameduck.readiness_check.passing           1       lameduck.readiness_check.name: 1 if the check's last call passed; absent before its first
//	lameduck.readiness_check.calls             {call}  lameduck.readiness_check.name: calls that finished
//	lameduck.readiness_check.failures          {call}  lameduck.readiness_check.name: calls that failed or timed out
//	lameduck.readiness_check.time              s       lameduck.readiness_check.name: time the calls took, added up
//	lameduck.drain_delay.arrivals              {connection}  connections accepted during the lame-duck phase
//	lameduck.drain_delay.last_arrival          s       lameduck.server.name: how long after the signal the last of them arrived, and where
//	lameduck.drain_delay.duration              s       how long the drain delay lasted, once it is over
//	lameduck.drain_delay.ended                 1       lameduck.drain_delay.reason: 1 for what ended the delay: fixed, endpoints, quiet, min, max or cut
//	lameduck.drain_delay.endpoints_unrouted    s       how long after the signal the EndpointSlices stopped routing to the process
//	lameduck.departures.told                   {item}  long-lived work (websockets, event streams, streaming RPCs) told to leave at its turn
//	lameduck.departures.left                   {item}  long-lived work that ended by itself during the shutdown, before its turn
//	lameduck.departures.window                 s       how long the turns took, from the end of the drain delay to the last turn
//	lameduck.departures.peak_per_second        {item}/s  the most long-lived work told to leave within any one second
//
// Counters (cut, calls, failures, time, arrivals, told, left) are cumulative
// observable counters, in_flight an observable up-down counter, the others
// observable gauges. Phases and kinds are named as in package prommetrics.
// The arrival series exist from the start of the lame-duck phase,
// drain_delay.duration and .ended once the delay is over,
// .endpoints_unrouted once the slices stop routing here. The departure
// counters exist from the start of the lame-duck phase too, the window and
// the peak once a piece of long-lived work has been told to leave (see
// [lameduck.WithDepartureWindow]); work still there at the deadline is
// counted in lameduck.cut.
//
// # The span
//
// One span, "lameduck.shutdown", of kind internal and with no parent, runs
// from [lameduck.PhaseLameDuck] (or, after a failed start,
// [lameduck.PhaseStopping]) to [lameduck.PhaseStopped], with an event per
// phase, named as the phase ("lame duck", "draining"...), carrying the
// duration of the phase before it (lameduck.phase.previous_duration).
// Its attributes, set as it ends, are the shutdown's figures, durations in
// seconds (the last arrival only when a connection arrived,
// .endpoints_unrouted only when the slices were seen to stop routing, the
// departures' window and peak only when a piece of work was told to leave):
//
//	lameduck.drain_delay.duration, .reason, .arrivals, .last_arrival, .last_arrival_server, .endpoints_unrouted
//	lameduck.departures.told, .left, .window, .peak_per_second
//	lameduck.cut.requests, .streams, .connections, .workers
//	lameduck.lame_duck.duration, lameduck.draining.duration, lameduck.stopping.duration
//
// A shutdown that cut work ends its span with status Error and a
// description such as "2 requests cut at the deadline".
//
// Why the final flush, and what it costs: [docs/metrics.md].
//
// [docs/metrics.md]: https://github.com/lameduck/lameduck/blob/main/docs/metrics.md
package otellameduck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lameduck/lameduck"
)

// ScopeName is the instrumentation scope of the meter and the tracer: this
// package's import path.
const ScopeName = "github.com/lameduck/lameduck/otellameduck"

// An Option configures a [Telemetry]; pass options to [New].
type Option interface {
	apply(*options)
}

type options struct {
	mp metric.MeterProvider // nil: otel's global one
	tp trace.TracerProvider // nil: otel's global one
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithMeterProvider sets the meter provider the instruments are created
// with, and that is flushed as Run returns. The default is otel's global
// one ([otel.GetMeterProvider]), read by [Telemetry.Instrument] and again
// at the flush. A nil mp means the default.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.mp = mp })
}

// WithTracerProvider sets the tracer provider the shutdown's span is
// created with, and that is flushed as Run returns. The default is otel's
// global one ([otel.GetTracerProvider]), read as the shutdown begins and
// again at the flush. A nil tp means the default.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tp = tp })
}

// Telemetry exports one Coordinator's shutdown through OpenTelemetry (see
// the package documentation). Create it with [New], and call
// [Telemetry.Instrument] with the Coordinator before Run.
type Telemetry struct {
	opts options

	mu sync.Mutex
	// Guarded by mu:
	ld   *lameduck.Coordinator // set by Instrument
	reg  metric.Registration   // the instruments' callback
	span trace.Span            // the shutdown's, from its start to PhaseStopped
	// hookCtx is the context of the shutdown hook that Instrument adds:
	// it ends at the shutdown's deadline, or at a second signal, and Run
	// cancels it only as it returns, so that it bounds the final flush.
	hookCtx context.Context
	// phase is the phase of the last event, and spent how long each phase
	// before it lasted, as the events report it.
	phase lameduck.Phase
	spent map[lameduck.Phase]time.Duration
	// stopping is ld's Status as Run entered PhaseStopping; final is the
	// Status the instruments report from PhaseStopped on, made of it and
	// of the last event (see [Telemetry.status]).
	stopping, final *lameduck.Status
}

// New returns a Telemetry configured by opts.
func New(opts ...Option) *Telemetry {
	t := &Telemetry{spent: make(map[lameduck.Phase]time.Duration)}
	for _, o := range opts {
		o.apply(&t.opts)
	}
	return t
}

// Instrument creates the instruments, which read ld's [lameduck.Status]
// whenever the meter provider collects; adds an observer of ld's phases
// (see [lameduck.Coordinator.OnPhase]) that records the shutdown's span and,
// as Run enters [lameduck.PhaseStopped], flushes both providers; and adds a
// shutdown hook (see [lameduck.Coordinator.OnShutdown]) that lets the final
// flush know the shutdown's deadline. Call it once, after [lameduck.New]
// and before Run.
//
// It returns an error if ld is nil, if it was called before, if Run has
// already been called, or if the meter provider fails to create the
// instruments.
func (t *Telemetry) Instrument(ld *lameduck.Coordinator) error {
	if ld == nil {
		return errors.New("otellameduck: Instrument: the Coordinator is nil; pass the one lameduck.New returned")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ld != nil {
		return errors.New("otellameduck: Instrument called twice; a Telemetry exports one Coordinator, create another with New")
	}
	if len(ld.Status().Elapsed) > 0 {
		return errors.New("otellameduck: Instrument called after Run; call it before Run, so that the whole shutdown is exported and flushed")
	}
	reg, err := register(t.meterProvider().Meter(ScopeName), t.status)
	if err != nil {
		return fmt.Errorf("otellameduck: creating the instruments: %w", err)
	}
	t.ld, t.reg = ld, reg
	ld.OnPhase(t.observe)
	ld.OnShutdown("otellameduck", t.hook)
	return nil
}

// hook records the hooks' context, which bounds the final flush.
func (t *Telemetry) hook(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hookCtx = ctx
	return nil
}

// observe records ev in the shutdown's span: it starts the span as the
// shutdown begins, adds an event per phase, and as Run enters
// [lameduck.PhaseStopped] ends it and flushes the tracer and meter
// providers, within the shutdown's deadline, before it returns. Run calls
// it for every phase.
func (t *Telemetry) observe(ev lameduck.Event) {
	now := time.Now()
	var stopping *lameduck.Status
	if ev.Phase == lameduck.PhaseStopping {
		st := t.coordinator().Status()
		stopping = &st
	}
	t.mu.Lock()
	if ev.Phase != lameduck.PhaseStarting {
		t.spent[t.phase] = ev.Elapsed
	}
	t.phase = ev.Phase
	if stopping != nil {
		t.stopping = stopping
	}
	if t.span == nil && (ev.Phase == lameduck.PhaseLameDuck || ev.Phase == lameduck.PhaseStopping) {
		_, t.span = t.tracerProvider().Tracer(ScopeName).Start(context.Background(), "lameduck.shutdown",
			trace.WithSpanKind(trace.SpanKindInternal), trace.WithNewRoot(), trace.WithTimestamp(now))
	}
	span := t.span
	if span != nil {
		attrs := []attribute.KeyValue{attribute.String("lameduck.phase.name", phaseName(ev.Phase))}
		if ev.Phase != lameduck.PhaseStarting {
			attrs = append(attrs, attribute.Float64("lameduck.phase.previous_duration", ev.Elapsed.Seconds()))
		}
		span.AddEvent(ev.Phase.String(), trace.WithTimestamp(now), trace.WithAttributes(attrs...))
	}
	if ev.Phase != lameduck.PhaseStopped {
		t.mu.Unlock()
		return
	}
	ctx := t.hookCtx
	t.final = finalStatus(t.stopping, ev, t.spent)
	attrs := spanAttributes(ev, t.spent)
	t.mu.Unlock()
	if span != nil {
		span.SetAttributes(attrs...)
		if ev.Cut.Total() > 0 {
			span.SetStatus(codes.Error, ev.Cut.String()+" cut at the deadline")
		}
		span.End(trace.WithTimestamp(now))
	}
	if ctx != nil {
		t.flush(ctx)
	}
}

// flush calls ForceFlush on both providers at once, and returns once both
// have returned or ctx has ended: an exporter that ignores ctx is left
// behind rather than allowed to hold Run past its deadline.
func (t *Telemetry) flush(ctx context.Context) {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, p := range []any{t.tracerProvider(), t.meterProvider()} {
		f, ok := p.(interface{ ForceFlush(context.Context) error })
		if !ok {
			if !isNoop(p) {
				otel.Handle(fmt.Errorf("otellameduck: the %T cannot be flushed, so the shutdown's final values may never be exported: "+
					"set the SDK's provider with otel.SetMeterProvider and otel.SetTracerProvider, or pass it with WithMeterProvider and WithTracerProvider", p))
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.ForceFlush(ctx); err != nil {
				hint := "if the provider was shut down, shut it down after Run returns, not in an OnShutdown hook"
				if ctx.Err() != nil {
					hint = "the shutdown's deadline passed: lengthen the grace period or the hook timeout, or make the exporter's timeout shorter"
				}
				errs <- fmt.Errorf("otellameduck: flushing the %T before Run returns: %w (%s)", p, err, hint)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		otel.Handle(fmt.Errorf("otellameduck: the final flush did not finish before the shutdown's deadline: %w", context.Cause(ctx)))
		return
	}
	close(errs)
	for err := range errs {
		otel.Handle(err)
	}
}

func (t *Telemetry) meterProvider() metric.MeterProvider {
	if t.opts.mp != nil {
		return t.opts.mp
	}
	return otel.GetMeterProvider()
}

func (t *Telemetry) tracerProvider() trace.TracerProvider {
	if t.opts.tp != nil {
		return t.opts.tp
	}
	return otel.GetTracerProvider()
}

func isNoop(p any) bool {
	switch p.(type) {
	case metricnoop.MeterProvider, *metricnoop.MeterProvider, tracenoop.TracerProvider, *tracenoop.TracerProvider:
		return true
	}
	return false
}

// status is what the instruments report: ld's Status until Run enters
// PhaseStopped, the final one from then on (see finalStatus).
func (t *Telemetry) status() lameduck.Status {
	t.mu.Lock()
	ld, final := t.ld, t.final
	t.mu.Unlock()
	if final != nil {
		return *final
	}
	if ld == nil { // a collection racing Instrument
		return lameduck.Status{}
	}
	return ld.Status()
}

func (t *Telemetry) coordinator() *lameduck.Coordinator {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ld
}

// spanAttributes are the shutdown's figures, as ev (of PhaseStopped) and
// the phases' durations report them.
func spanAttributes(ev lameduck.Event, spent map[lameduck.Phase]time.Duration) []attribute.KeyValue {
	d := ev.Delay
	attrs := []attribute.KeyValue{
		attribute.Float64("lameduck.drain_delay.duration", d.Elapsed.Seconds()),
		attribute.String("lameduck.drain_delay.reason", string(d.Ended)),
		attribute.Int("lameduck.drain_delay.arrivals", d.Arrivals),
		attribute.Int("lameduck.cut.requests", ev.Cut.Requests),
		attribute.Int("lameduck.cut.streams", ev.Cut.Streams),
		attribute.Int("lameduck.cut.connections", ev.Cut.Conns),
		attribute.Int("lameduck.cut.workers", ev.Cut.Workers),
	}
	if d.Arrivals > 0 {
		attrs = append(attrs,
			attribute.Float64("lameduck.drain_delay.last_arrival", d.LastArrival.Seconds()),
			attribute.String("lameduck.drain_delay.last_arrival_server", d.LastArrivalServer))
	}
	if d.Unrouted > 0 {
		attrs = append(attrs, attribute.Float64("lameduck.drain_delay.endpoints_unrouted", d.Unrouted.Seconds()))
	}
	dep := ev.Departures
	attrs = append(attrs, attribute.Int("lameduck.departures.told", dep.Told), attribute.Int("lameduck.departures.left", dep.Left))
	if dep.Told > 0 {
		attrs = append(attrs,
			attribute.Float64("lameduck.departures.window", dep.Window.Seconds()),
			attribute.Int("lameduck.departures.peak_per_second", dep.PeakPerSecond))
	}
	for _, p := range []lameduck.Phase{lameduck.PhaseLameDuck, lameduck.PhaseDraining, lameduck.PhaseStopping} {
		if s, ok := spent[p]; ok {
			attrs = append(attrs, attribute.Float64("lameduck."+phaseName(p)+".duration", s.Seconds()))
		}
	}
	return attrs
}

func phaseName(p lameduck.Phase) string { return strings.ReplaceAll(p.String(), " ", "_") }
