// Package record is the record of a simulated Kubernetes rolling update:
// the file that package lameducktest writes when a test fails, and that the
// rollout command writes (-report FILE.json) and draws (-draw FILE.json).
//
// A [Run] is one server's run through rolling updates: its settings, its
// exact totals, and its [Timeline], pod by pod: when each pod started,
// became ready, was sent SIGTERM, left the load balancer and exited, the
// requests it served, and every failed request with its time, pod and
// [Kind]. [WriteFile] writes runs as JSON and [ReadFile] reads them back.
//
// The JSON is for people and other programs as much as for this package
// (see [Run.MarshalJSON]): it names every field, gives durations in seconds
// with "_seconds" in the name, and leaves out the times of events that did
// not happen.
//
// The picture itself is drawn by the rollout command, whose module brings
// the plotting library, so that the tests that use lameducktest compile no
// plotting package:
//
//	go run github.com/lameduck/lameduck/cmd/rollout@latest -draw rollout.json -report rollout.png
package record

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Never is the time of an event that did not happen.
const Never time.Duration = -1

// Run is one server's recorded run through rolling updates, drawn as one
// panel. The zero Run records no settings, no request and no timeline.
type Run struct {
	// Name names the server, such as "naive" or its program's name; empty
	// for none.
	Name string
	// Note says in a few words what the server does on SIGTERM, or which
	// test ran it; empty for none.
	Note string
	// Settings are the run's settings.
	Settings Settings
	// Requests counts every request of the run, failed or not, and
	// Failures the failed ones by kind: exact totals, which the timeline's
	// bounded lists may not add up to.
	Requests int64
	Failures KindCounts
	// Timeline is what happened, over time.
	Timeline Timeline
}

// Failed returns the number of failed requests, all kinds together.
func (r Run) Failed() int64 { return r.Failures.Sum() }

// Settings are every setting of a run, its defaults filled in: a zero
// field is a setting of zero, or one that the record does not give.
type Settings struct {
	// PodCommand is the command that started each pod, with {ADDR} where
	// its listen address went; PodEnv what it added to the pods'
	// environment, as KEY=value (nil for nothing).
	PodCommand, PodEnv []string
	// Rollouts is the number of rollouts: each started a new pod and
	// terminated the oldest.
	Rollouts int
	// Replicas is the number of pods serving at once.
	Replicas int
	// Lag is how long a terminating pod's endpoint stayed in the load
	// balancer after its SIGTERM; zero means it left at the SIGTERM.
	Lag time.Duration
	// Grace is the termination grace period, after which a pod that had not
	// exited was SIGKILLed.
	Grace time.Duration
	// ProbePeriod is the readiness probe's period, ReadyPath its path, and
	// ReadyTimeout how long a new pod had to pass it.
	ProbePeriod  time.Duration
	ReadyPath    string
	ReadyTimeout time.Duration
	// Warmup is how long the load ran before the first rollout; zero means
	// none.
	Warmup time.Duration
	// Load is the load's protocol: "http1", "h2c", "grpc", "websocket" or
	// "sse".
	Load string
	// Conns is the number of long-lived client connections, and
	// WorkersPerConn the requests each carried at once.
	Conns, WorkersPerConn int
	// Fresh is the number of clients that opened a new connection for every
	// request, and Late the number of new clients that arrived shortly
	// before each old pod's endpoint left the load balancer; zero for none.
	Fresh, Late int
	// Path is the HTTP path the load requested.
	Path string
	// RequestTimeout bounded each request.
	RequestTimeout time.Duration
	// ListenAddr is the load balancer's address, as given: its port is 0
	// when the system chose one.
	ListenAddr string
}

// Timeline is what happened during a run, over time: the requests each pod
// served per interval, every failure with its time, kind and pod, and the
// events of each pod's life. Times are offsets from the start of the run.
// The zero Timeline is that of a run that stopped before its load started.
type Timeline struct {
	// Interval is the width of the intervals of [Pod.Served]; zero only
	// in a timeline without them.
	Interval time.Duration
	// LoadStart and LoadEnd are when the load started and stopped; Never,
	// or zero, if it did not.
	LoadStart, LoadEnd time.Duration
	// Pods has one entry per pod started, in order: Pods[i] is the pod
	// called "pod-" followed by i+1.
	Pods []Pod
	// Failures lists failed requests in order of time, at most 100,000
	// of them.
	Failures []Failure
	// FailuresLeftOut counts the failed requests not in Failures.
	FailuresLeftOut int64
	// ServedLeftOut counts the served requests missing from the pods'
	// Served counts: a run too long for the timeline's bounds, or requests
	// whose connection could not be traced to a pod.
	ServedLeftOut int64
}

// PeakWindow is the span in which the reports of a run count the most
// departures or reconnections at once ("at most N in any 100ms"): short
// enough that a burst of them stands out, long enough that a steady rate of
// a few hundred a second is no burst.
const PeakWindow = 100 * time.Millisecond

// Peak returns the most of times, which are in order, within any
// PeakWindow: times t with first <= t < first+PeakWindow. Clients sent
// away all at once reconnect nearly all within one window; spread over a
// departure window, a few at a time.
func Peak(times []time.Duration) int {
	peak, lo := 0, 0
	for hi, t := range times {
		for t-times[lo] >= PeakWindow {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	return peak
}

// Pod is one pod's life in a [Timeline]. Each time is an offset from the
// start of the run, or Never; a zero time is the start of the run.
type Pod struct {
	// Name is the pod's name in the run ("pod-1", ...).
	Name string
	// Started is when the process started.
	Started time.Duration
	// Ready is when its readiness probe first answered 200.
	Ready time.Duration
	// Joined is when the load balancer started routing to it.
	Joined time.Duration
	// Term is when it was sent SIGTERM.
	Term time.Duration
	// Removed is when the load balancer stopped routing new connections to
	// it (the lag after Term).
	Removed time.Duration
	// ListenerClosed is when the pod stopped listening, as seen from
	// outside (its port could be bound again), to within a few
	// milliseconds; Never where that cannot be observed (outside Unix) or
	// was not watched (pods stopped after the load).
	ListenerClosed time.Duration
	// Exited is when the process exited.
	Exited time.Duration
	// Exit says how it exited; the zero Exit if it had not.
	Exit Exit
	// Served counts the requests it served successfully per interval:
	// Served[i] covers [i×Interval, (i+1)×Interval) of the run. For the
	// websocket and sse loads, a request is a message received. Nil if it
	// served none.
	Served []int64
	// Departures are the moments, in order, at which the clients of the
	// websocket and sse loads saw the pod end a subscription to send them
	// elsewhere (a close frame with 1012 or 1001, an event stream ended
	// after its retry field); Reconnects those at which subscriptions
	// resumed on it (when the client dialed the load balancer, once the pod
	// had answered). Both are nil for other loads; a run keeps at most
	// 100,000 of each.
	Departures, Reconnects []time.Duration
}

// Exit says how a pod's process ended. The zero Exit is that of a pod that
// has not exited.
type Exit struct {
	// Addr is the address the pod listened on.
	Addr string
	// Status is the process state as the operating system reported it,
	// such as "exit status 0" or "signal: killed".
	Status string
	// Code is the exit code, or -1 if the process died from a signal.
	Code int
	// Killed reports that the pod was SIGKILLed because it had not exited
	// within the grace period.
	Killed bool
	// AfterTerm is the time from its SIGTERM to its exit.
	AfterTerm time.Duration
	// Drain is what the pod measured of its drain delay, if it uses
	// lameduck and logs its phases.
	Drain Drain
}

// Drain is what a pod that uses lameduck measured of its own drain delay,
// read from the line it logs when the delay ends ("lameduck: draining"),
// in slog's text or JSON format. The zero Drain is that of a pod that
// logged no such line.
type Drain struct {
	// Seen reports whether the pod logged the line.
	Seen bool
	// Delay is how long its drain delay lasted.
	Delay time.Duration
	// LastArrival is how long after SIGTERM the last new connection
	// reached it: the load balancer's lag as the pod saw it. Zero if no
	// connection arrived during the delay.
	LastArrival time.Duration
	// Ended says what ended the delay: "fixed", "endpoints", "quiet",
	// "min", "max" or "cut" (see lameduck.DelayReport).
	Ended string
}

// Failure is one failed request in a [Timeline]. The zero Failure is a
// refused request at the start of the run, on the first pod.
type Failure struct {
	// At is when the client saw the failure, from the start of the run.
	At time.Duration
	// Pod is the index in [Timeline.Pods] of the pod the request's
	// connection was routed to, or -1 if it reached none.
	Pod int
	// Kind says what the client saw.
	Kind Kind
}

// WriteFile writes runs to path as JSON, for [ReadFile] and the rollout
// command's -draw.
func WriteFile(path string, runs ...Run) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("record: %w", cerr)
		}
	}()
	enc := json.NewEncoder(f)
	enc.SetIndent("", " ")
	if err := enc.Encode(runs); err != nil {
		return fmt.Errorf("record: write %s: %w", path, err)
	}
	return nil
}

// ReadFile reads the runs that [WriteFile] wrote to path. It refuses a
// record that contradicts itself, such as a total of failures that its
// kinds do not add up to, and says what is wrong.
func ReadFile(path string) ([]Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	var runs []Run
	if err := json.Unmarshal(b, &runs); err != nil {
		return nil, fmt.Errorf("record: read %s: %w", path, err)
	}
	return runs, nil
}
