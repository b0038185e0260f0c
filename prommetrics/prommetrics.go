// Package prommetrics exports the shutdown of a [lameduck.Coordinator] to
// Prometheus: the phase, the work in flight per server, the time spent in
// each phase, what was cut, how the long-lived work left, and what the
// readiness checks said.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(collectors.NewGoCollector(), prommetrics.NewCollector(ld))
//	httpserver.Admin(ld, ":8081", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Served on an admin server ([lameduck.Coordinator.RegisterAdmin],
// httpserver.Admin), the metrics can be scraped through the drain delay and
// the drain, until Run returns; [lameduck.WithFinalScrape] keeps it up,
// within the deadline, for one scrape of the final values. Every value is
// read from [lameduck.Coordinator.Status] when Prometheus scrapes, not
// counted from events, so the in-flight counts are exact:
//
//	lameduck_phase{phase}                              1 for the phase Run is in, 0 for the others
//	lameduck_ready                                     1 from MarkReady until the shutdown begins
//	lameduck_phase_duration_seconds{phase}             time spent in each phase entered, the current one up to now
//	lameduck_in_flight{server,kind}                    requests, streams and connections in flight, per server
//	lameduck_cut_total{kind}                           requests, streams, connections and workers cut at the deadline
//	lameduck_readiness_check_passing{check}            1 if the check's last call passed; absent before its first
//	lameduck_readiness_check_duration_seconds{check}   summary (count and sum) of the checks' calls
//	lameduck_readiness_check_failures_total{check}     calls that failed or timed out
//	lameduck_lame_duck_arrivals_total                  connections accepted during the lame-duck phase
//	lameduck_last_arrival_seconds{server}              how long after the signal the last of them arrived, and where
//	lameduck_drain_delay_ended{reason}                 1 for what ended the drain delay: fixed, endpoints, quiet, min, max or cut
//	lameduck_endpoints_unrouted_seconds                how long after the signal the EndpointSlices stopped routing to the process
//	lameduck_last_endpoint_held_seconds                how long after the signal the process stayed ready as its Services' last endpoint
//	lameduck_departures_told_total                     long-lived work (websockets, event streams, streaming RPCs) told to leave at its turn
//	lameduck_departures_left_total                     long-lived work that ended by itself during the shutdown, before its turn
//	lameduck_departures_window_seconds                 how long the turns took, from the end of the drain delay to the last turn
//	lameduck_departures_peak_per_second                the most long-lived work told to leave within any one second
//
// Phases are named as [lameduck.Phase.String] names them, with "_" for
// spaces: starting, serving, lame_duck, draining, stopping, stopped. Kinds
// are request, stream and connection, and worker for cut work. The server
// label is the server's name in lameduck's logs, such as "http :8080";
// servers that do not count their work (see [lameduck.Status.Servers]) and
// admin servers have no in-flight series. The arrival series appear when
// the lame-duck phase begins, lameduck_drain_delay_ended once the delay is
// over, lameduck_endpoints_unrouted_seconds once the slices stop routing
// here, lameduck_last_endpoint_held_seconds as soon as the process stays
// ready after the signal as the last endpoint of a Service, growing until
// another endpoint is ready (see [lameduck.WithAdaptiveDrainDelay]). The departure counters appear with the arrival series, the window
// and the peak once a piece of long-lived work has been told to leave (see
// [lameduck.WithDepartureWindow]); work still there at the deadline is
// counted in lameduck_cut_total, by its kind. Measurements that lameduck
// adds later become new series; the existing ones keep their names and
// labels.
//
// Two alerts: lameduck_cut_total increasing means a shutdown cut work at its
// deadline, so the drain delay or the grace period is too short for the
// traffic; lameduck_last_arrival_seconds close to the drain delay means the
// load balancer still routed to the pod when the delay ended: raise the
// delay, or make it adaptive. lameduck_departures_peak_per_second is the
// rate at which the pods that stay took this one's long-lived clients back:
// lengthen the departure window if that is more than they can take.
//
// Why Prometheus, and why a module of its own: [docs/metrics.md].
//
// [docs/metrics.md]: https://github.com/lameduck/lameduck/blob/main/docs/metrics.md
package prommetrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// phases are the phases lameduck reports, in order.
var phases = []lameduck.Phase{
	lameduck.PhaseStarting, lameduck.PhaseServing, lameduck.PhaseLameDuck,
	lameduck.PhaseDraining, lameduck.PhaseStopping, lameduck.PhaseStopped,
}

// A Collector is a [prometheus.Collector] of one Coordinator's metrics
// (see the package documentation). Create it with [NewCollector] and
// register it with a [prometheus.Registerer].
type Collector struct {
	ld *lameduck.Coordinator

	phase, ready, phaseDuration, inFlight, cut  *prometheus.Desc
	checkPassing, checkDuration, checkFailures  *prometheus.Desc
	arrivals, lastArrival, delayEnded, unrouted *prometheus.Desc
	lastEndpoint                                *prometheus.Desc
	told, left, window, peak                    *prometheus.Desc
}

// NewCollector returns a Collector of ld's metrics. It reads ld only when
// collected, so it may be created and registered at any time, before or
// after Run. It panics if ld is nil.
func NewCollector(ld *lameduck.Coordinator) *Collector {
	if ld == nil {
		panic("prommetrics: NewCollector: the coordinator is nil; create one with lameduck.New")
	}
	return &Collector{
		ld: ld,
		phase: prometheus.NewDesc("lameduck_phase",
			"The phase of the shutdown sequence the process is in: 1 for the current phase, 0 for the others.",
			[]string{"phase"}, nil),
		ready: prometheus.NewDesc("lameduck_ready",
			"1 from the moment the process marked itself ready until the shutdown began; readiness checks aside.",
			nil, nil),
		phaseDuration: prometheus.NewDesc("lameduck_phase_duration_seconds",
			"Time spent in each phase entered so far, the current one up to now.",
			[]string{"phase"}, nil),
		inFlight: prometheus.NewDesc("lameduck_in_flight",
			"Work in flight now, per server: requests and unary RPCs, streams, and hijacked connections.",
			[]string{"server", "kind"}, nil),
		cut: prometheus.NewDesc("lameduck_cut_total",
			"Work cut at the shutdown deadline or by a second signal, by kind.",
			[]string{"kind"}, nil),
		checkPassing: prometheus.NewDesc("lameduck_readiness_check_passing",
			"1 if the readiness check's last call passed, 0 if it failed or timed out.",
			[]string{"check"}, nil),
		checkDuration: prometheus.NewDesc("lameduck_readiness_check_duration_seconds",
			"Time taken by the readiness check's calls; a call that timed out counts for its timeout.",
			[]string{"check"}, nil),
		checkFailures: prometheus.NewDesc("lameduck_readiness_check_failures_total",
			"Calls of the readiness check that failed or timed out.",
			[]string{"check"}, nil),
		arrivals: prometheus.NewDesc("lameduck_lame_duck_arrivals_total",
			"New connections accepted during the lame-duck phase: the load balancer still routed to the process.",
			nil, nil),
		lastArrival: prometheus.NewDesc("lameduck_last_arrival_seconds",
			"How long after the shutdown signal the last new connection of the lame-duck phase arrived, on the server named.",
			[]string{"server"}, nil),
		delayEnded: prometheus.NewDesc("lameduck_drain_delay_ended",
			"1 for what ended the drain delay: fixed, endpoints, quiet, min, max or cut.",
			[]string{"reason"}, nil),
		unrouted: prometheus.NewDesc("lameduck_endpoints_unrouted_seconds",
			"How long after the shutdown signal the EndpointSlices stopped routing to the process.",
			nil, nil),
		lastEndpoint: prometheus.NewDesc("lameduck_last_endpoint_held_seconds",
			"How long after the shutdown signal the process stayed ready because it was the last endpoint of a Service, until another was ready; set, and growing, from the first moment of that hold.",
			nil, nil),
		told: prometheus.NewDesc("lameduck_departures_told_total",
			"Long-lived work (websockets, event streams, streaming RPCs) told to leave at its turn, once the drain delay was over; set from the start of the shutdown.",
			nil, nil),
		left: prometheus.NewDesc("lameduck_departures_left_total",
			"Long-lived work that ended by itself during the shutdown, before its turn to leave; set from the start of the shutdown.",
			nil, nil),
		window: prometheus.NewDesc("lameduck_departures_window_seconds",
			"How long the turns of the long-lived work took, from the end of the drain delay to the last turn so far; set once a piece of it has been told to leave, 0 if all was told at once.",
			nil, nil),
		peak: prometheus.NewDesc("lameduck_departures_peak_per_second",
			"The most long-lived work told to leave within any one second: the rate at which the clients came back to the other pods; set once a piece of it has been told to leave.",
			nil, nil),
	}
}

// Describe sends the descriptions of every metric the Collector exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.phase, c.ready, c.phaseDuration, c.inFlight, c.cut,
		c.checkPassing, c.checkDuration, c.checkFailures, c.arrivals, c.lastArrival, c.delayEnded, c.unrouted, c.lastEndpoint,
		c.told, c.left, c.window, c.peak,
	} {
		ch <- d
	}
}

// Collect reads the Coordinator's status and sends its metrics, then marks
// the status exported (see [lameduck.WithFinalScrape]).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.ld.Status()
	defer c.ld.MarkExported(st)
	for _, p := range phases {
		name := phaseLabel(p)
		ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, boolValue(st.Phase == p), name)
		if d, ok := st.Elapsed[p]; ok {
			ch <- prometheus.MustNewConstMetric(c.phaseDuration, prometheus.GaugeValue, d.Seconds(), name)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, boolValue(st.Ready))
	for _, s := range st.Servers {
		for _, k := range kinds(s.InFlight) {
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(k.n), s.Name, k.name)
		}
	}
	for _, k := range kinds(st.Cut) {
		ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(k.n), k.name)
	}
	ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(st.Cut.Workers), "worker")
	for _, k := range st.Checks {
		if k.Calls > 0 {
			ch <- prometheus.MustNewConstMetric(c.checkPassing, prometheus.GaugeValue, boolValue(k.Passing), k.Name)
		}
		ch <- prometheus.MustNewConstSummary(c.checkDuration, k.Calls, k.Elapsed.Seconds(), nil, k.Name)
		ch <- prometheus.MustNewConstMetric(c.checkFailures, prometheus.CounterValue, float64(k.Failures), k.Name)
	}
	if held := st.Delay.LastEndpointElapsed; held > 0 {
		// During the hold too, before the lame duck: readiness is still on.
		ch <- prometheus.MustNewConstMetric(c.lastEndpoint, prometheus.GaugeValue, held.Seconds())
	}
	if st.Phase >= lameduck.PhaseLameDuck {
		d := st.Delay
		ch <- prometheus.MustNewConstMetric(c.arrivals, prometheus.CounterValue, float64(d.Arrivals))
		if d.Arrivals > 0 {
			ch <- prometheus.MustNewConstMetric(c.lastArrival, prometheus.GaugeValue, d.LastArrival.Seconds(), d.LastArrivalServer)
		}
		if d.Ended != "" {
			ch <- prometheus.MustNewConstMetric(c.delayEnded, prometheus.GaugeValue, 1, string(d.Ended))
		}
		if d.Unrouted > 0 {
			ch <- prometheus.MustNewConstMetric(c.unrouted, prometheus.GaugeValue, d.Unrouted.Seconds())
		}
		dep := st.Departures
		ch <- prometheus.MustNewConstMetric(c.told, prometheus.CounterValue, float64(dep.Told))
		ch <- prometheus.MustNewConstMetric(c.left, prometheus.CounterValue, float64(dep.Left))
		if dep.Told > 0 {
			ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, dep.Window.Seconds())
			ch <- prometheus.MustNewConstMetric(c.peak, prometheus.GaugeValue, float64(dep.PeakPerSecond))
		}
	}
}

type kindCount struct {
	name string
	n    int
}

// kinds splits counts by the kinds a server tracks, named as
// [inflight.Kind.String] names them.
func kinds(c inflight.Counts) []kindCount {
	return []kindCount{
		{inflight.Request.String(), c.Requests},
		{inflight.Stream.String(), c.Streams},
		{inflight.Conn.String(), c.Conns},
	}
}

func phaseLabel(p lameduck.Phase) string { return strings.ReplaceAll(p.String(), " ", "_") }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
