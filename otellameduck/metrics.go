package otellameduck

import (
	"context"
	"errors"
	"maps"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// phases are the phases lameduck reports, in order.
var phases = []lameduck.Phase{
	lameduck.PhaseStarting, lameduck.PhaseServing, lameduck.PhaseLameDuck,
	lameduck.PhaseDraining, lameduck.PhaseStopping, lameduck.PhaseStopped,
}

// instruments are the observable instruments of the package documentation.
type instruments struct {
	phase, ready, inFlight, cut                  metric.Int64Observable
	checkPassing, checkCalls, checkFailures      metric.Int64Observable
	arrivals, delayEnded                         metric.Int64Observable
	phaseDuration, checkTime, lastArrival, delay metric.Float64Observable
	unrouted                                     metric.Float64Observable
	told, left, peak                             metric.Int64Observable
	window                                       metric.Float64Observable
}

// register creates the instruments with m and the one callback that reads
// them all from one call of status.
func register(m metric.Meter, status func() lameduck.Status) (metric.Registration, error) {
	var in instruments
	var errs []error
	i64 := func(o metric.Int64Observable, err error) metric.Int64Observable {
		errs = append(errs, err)
		return o
	}
	f64 := func(o metric.Float64Observable, err error) metric.Float64Observable {
		errs = append(errs, err)
		return o
	}
	in.phase = i64(m.Int64ObservableGauge("lameduck.phase.current", metric.WithUnit("1"),
		metric.WithDescription("The phase of the shutdown sequence the process is in: 1 for the current phase, 0 for the others.")))
	in.ready = i64(m.Int64ObservableGauge("lameduck.ready", metric.WithUnit("1"),
		metric.WithDescription("1 from the moment the process marked itself ready until the shutdown began; readiness checks aside.")))
	in.phaseDuration = f64(m.Float64ObservableGauge("lameduck.phase.duration", metric.WithUnit("s"),
		metric.WithDescription("Time spent in each phase entered so far, the current one up to now.")))
	in.inFlight = i64(m.Int64ObservableUpDownCounter("lameduck.in_flight", metric.WithUnit("{item}"),
		metric.WithDescription("Work in flight now, per server: requests and unary RPCs, streams, and hijacked connections.")))
	in.cut = i64(m.Int64ObservableCounter("lameduck.cut", metric.WithUnit("{item}"),
		metric.WithDescription("Work cut at the shutdown deadline or by a second signal, by kind.")))
	in.checkPassing = i64(m.Int64ObservableGauge("lameduck.readiness_check.passing", metric.WithUnit("1"),
		metric.WithDescription("1 if the readiness check's last call passed, 0 if it failed or timed out.")))
	in.checkCalls = i64(m.Int64ObservableCounter("lameduck.readiness_check.calls", metric.WithUnit("{call}"),
		metric.WithDescription("Calls of the readiness check that finished.")))
	in.checkFailures = i64(m.Int64ObservableCounter("lameduck.readiness_check.failures", metric.WithUnit("{call}"),
		metric.WithDescription("Calls of the readiness check that failed or timed out.")))
	in.checkTime = f64(m.Float64ObservableCounter("lameduck.readiness_check.time", metric.WithUnit("s"),
		metric.WithDescription("Time taken by the readiness check's calls, added up; a call that timed out counts for its timeout.")))
	in.arrivals = i64(m.Int64ObservableCounter("lameduck.drain_delay.arrivals", metric.WithUnit("{connection}"),
		metric.WithDescription("New connections accepted during the lame-duck phase: the load balancer still routed to the process.")))
	in.lastArrival = f64(m.Float64ObservableGauge("lameduck.drain_delay.last_arrival", metric.WithUnit("s"),
		metric.WithDescription("How long after the shutdown signal the last new connection of the lame-duck phase arrived, on the server named.")))
	in.delay = f64(m.Float64ObservableGauge("lameduck.drain_delay.duration", metric.WithUnit("s"),
		metric.WithDescription("How long the drain delay lasted, once it is over.")))
	in.delayEnded = i64(m.Int64ObservableGauge("lameduck.drain_delay.ended", metric.WithUnit("1"),
		metric.WithDescription("1 for what ended the drain delay: fixed, endpoints, quiet, min, max or cut.")))
	in.unrouted = f64(m.Float64ObservableGauge("lameduck.drain_delay.endpoints_unrouted", metric.WithUnit("s"),
		metric.WithDescription("How long after the shutdown signal the EndpointSlices stopped routing to the process.")))
	in.told = i64(m.Int64ObservableCounter("lameduck.departures.told", metric.WithUnit("{item}"),
		metric.WithDescription("Long-lived work (websockets, event streams, streaming RPCs) told to leave at its turn, once the drain delay was over; set from the start of the shutdown.")))
	in.left = i64(m.Int64ObservableCounter("lameduck.departures.left", metric.WithUnit("{item}"),
		metric.WithDescription("Long-lived work that ended by itself during the shutdown, before its turn to leave; set from the start of the shutdown.")))
	in.window = f64(m.Float64ObservableGauge("lameduck.departures.window", metric.WithUnit("s"),
		metric.WithDescription("How long the turns of the long-lived work took, from the end of the drain delay to the last turn so far; set once a piece of it has been told to leave, 0 if all was told at once.")))
	in.peak = i64(m.Int64ObservableGauge("lameduck.departures.peak_per_second", metric.WithUnit("{item}/s"),
		metric.WithDescription("The most long-lived work told to leave within any one second: the rate at which the clients came back to the other pods; set once a piece of it has been told to leave.")))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		in.observe(o, status())
		return nil
	}, in.phase, in.ready, in.phaseDuration, in.inFlight, in.cut, in.checkPassing, in.checkCalls, in.checkFailures,
		in.checkTime, in.arrivals, in.lastArrival, in.delay, in.delayEnded, in.unrouted,
		in.told, in.left, in.window, in.peak)
}

var (
	phaseKey  = attribute.Key("lameduck.phase.name")
	serverKey = attribute.Key("lameduck.server.name")
	kindKey   = attribute.Key("lameduck.work.kind")
	checkKey  = attribute.Key("lameduck.readiness_check.name")
	reasonKey = attribute.Key("lameduck.drain_delay.reason")
)

// observe reports st through o.
func (in *instruments) observe(o metric.Observer, st lameduck.Status) {
	for _, p := range phases {
		attrs := metric.WithAttributes(phaseKey.String(phaseName(p)))
		o.ObserveInt64(in.phase, boolValue(st.Phase == p), attrs)
		if d, ok := st.Elapsed[p]; ok {
			o.ObserveFloat64(in.phaseDuration, d.Seconds(), attrs)
		}
	}
	o.ObserveInt64(in.ready, boolValue(st.Ready))
	for _, s := range st.Servers {
		for _, k := range kinds(s.InFlight) {
			o.ObserveInt64(in.inFlight, int64(k.n), metric.WithAttributes(serverKey.String(s.Name), kindKey.String(k.name)))
		}
	}
	for _, k := range kinds(st.Cut) {
		o.ObserveInt64(in.cut, int64(k.n), metric.WithAttributes(kindKey.String(k.name)))
	}
	o.ObserveInt64(in.cut, int64(st.Cut.Workers), metric.WithAttributes(kindKey.String("worker")))
	for _, k := range st.Checks {
		attrs := metric.WithAttributes(checkKey.String(k.Name))
		if k.Calls > 0 {
			o.ObserveInt64(in.checkPassing, boolValue(k.Passing), attrs)
		}
		o.ObserveInt64(in.checkCalls, int64(k.Calls), attrs)
		o.ObserveInt64(in.checkFailures, int64(k.Failures), attrs)
		o.ObserveFloat64(in.checkTime, k.Elapsed.Seconds(), attrs)
	}
	if st.Phase >= lameduck.PhaseLameDuck {
		d := st.Delay
		o.ObserveInt64(in.arrivals, int64(d.Arrivals))
		if d.Arrivals > 0 {
			o.ObserveFloat64(in.lastArrival, d.LastArrival.Seconds(), metric.WithAttributes(serverKey.String(d.LastArrivalServer)))
		}
		if d.Ended != "" {
			o.ObserveFloat64(in.delay, d.Elapsed.Seconds())
			o.ObserveInt64(in.delayEnded, 1, metric.WithAttributes(reasonKey.String(string(d.Ended))))
		}
		if d.Unrouted > 0 {
			o.ObserveFloat64(in.unrouted, d.Unrouted.Seconds())
		}
		dep := st.Departures
		o.ObserveInt64(in.told, int64(dep.Told))
		o.ObserveInt64(in.left, int64(dep.Left))
		if dep.Told > 0 {
			o.ObserveFloat64(in.window, dep.Window.Seconds())
			o.ObserveInt64(in.peak, int64(dep.PeakPerSecond))
		}
	}
}

type kindCount struct {
	name string
	n    int
}

// kinds splits counts by the kinds a server tracks, named as lameduck's
// reports name them.
func kinds(c inflight.Counts) []kindCount {
	return []kindCount{{"request", c.Requests}, {"stream", c.Streams}, {"connection", c.Conns}}
}

func boolValue(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// finalStatus is the Status the instruments report from PhaseStopped on:
// the Status read as Run entered PhaseStopping (the servers closed, what
// was cut counted), in the stopped phase, with the phases' durations and
// the cut, delay and departure figures of the events: the values are
// final, and every later collection, such as the providers' Shutdown
// after Run, reports the same.
func finalStatus(stopping *lameduck.Status, ev lameduck.Event, spent map[lameduck.Phase]time.Duration) *lameduck.Status {
	st := lameduck.Status{}
	if stopping != nil {
		st = *stopping
	}
	st.Phase, st.Ready = lameduck.PhaseStopped, false
	st.Elapsed = maps.Clone(spent)
	st.Elapsed[lameduck.PhaseStopped] = 0
	st.Cut, st.Delay, st.Departures = ev.Cut, ev.Delay, ev.Departures
	return &st
}
