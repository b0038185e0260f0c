package rollout

import (
	"fmt"
	"slices"
	"time"
)

// TimelineBucket is the width of the intervals in which a [Timeline] counts
// the requests each pod served: short enough that a burst of failures right
// after a SIGTERM stands out against the load around it, long enough that a
// minute of load is a few hundred points per pod.
const TimelineBucket = 50 * time.Millisecond

// Bounds of a [Timeline], so that a long run cannot grow it without limit.
// Past them the timeline says what it left out; the counts of [Result] stay
// exact.
const (
	// maxTimelineFailures bounds the failures listed one by one: far more
	// than a picture can show apart.
	maxTimelineFailures = 100_000
	// maxLaneCells bounds what each load worker records of the served
	// requests: one cell per interval and pod the worker sent requests to,
	// about half an hour of 50 ms intervals.
	maxLaneCells = 1 << 15
)

// Never is the time of an event that did not happen.
const Never time.Duration = -1

// Timeline is what happened during a run, over time, for a picture of it:
// the requests each pod served per interval, every failure with its time,
// kind and pod, and the events of each pod's life. Times are offsets from
// the start of the run.
type Timeline struct {
	// Bucket is the width of the intervals of [PodTimeline.Served].
	Bucket time.Duration
	// LoadStart and LoadEnd are when the load started and stopped.
	LoadStart, LoadEnd time.Duration
	// Pods has one entry per pod started, in order: Pods[i] is the pod
	// called "pod-" followed by i+1.
	Pods []PodTimeline
	// Failures lists the failed requests in order of time, at most
	// 100,000 of them.
	Failures []FailureAt
	// FailuresLeftOut counts the failed requests not in Failures.
	FailuresLeftOut int64
	// ServedLeftOut counts the served requests missing from the pods'
	// Served counts: a run too long for the timeline's bounds, or requests
	// whose connection could not be traced to a pod.
	ServedLeftOut int64
}

// PodTimeline is one pod's life in a [Timeline]. Each time is an offset from
// the start of the run, or Never.
type PodTimeline struct {
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
	// Exit says how it exited; its zero value while it had not.
	Exit PodExit
	// Served counts the requests it served successfully per interval:
	// Served[i] covers [i×Bucket, (i+1)×Bucket) of the run. For the
	// websocket and sse loads, a request is a message received.
	Served []int64
	// Departures are the moments, in order, at which the clients of the
	// websocket and sse loads saw the pod end a subscription to send them
	// elsewhere (a close frame with 1012 or 1001, an event stream ended
	// after its retry field); Reconnects those at which subscriptions
	// resumed on it (when the client dialed the load balancer, once the pod
	// had answered). Both are empty for other loads; a run keeps at most
	// 100,000 of each.
	Departures, Reconnects []time.Duration
}

// PodEvent is a moment of a stream load's subscription on a pod: a
// departure or a reconnection.
type PodEvent struct {
	// At is when the client saw it, from the start of the run.
	At time.Duration
	// Pod is the index in [Timeline.Pods] of the pod, or -1.
	Pod int
}

// byPod sorts events into one list of times per pod, each in order.
func byPod(events []PodEvent, pods int) [][]time.Duration {
	out := make([][]time.Duration, pods)
	for _, e := range events {
		if e.Pod >= 0 && e.Pod < pods {
			out[e.Pod] = append(out[e.Pod], e.At)
		}
	}
	for _, ts := range out {
		slices.Sort(ts)
	}
	return out
}

// FailureAt is one failed request in a [Timeline].
type FailureAt struct {
	// At is when the client saw the failure, from the start of the run.
	At time.Duration
	// Pod is the index in [Timeline.Pods] of the pod the request's
	// connection was routed to, or -1 if it reached none.
	Pod int
	// Kind says what the client saw.
	Kind Kind
}

// MarshalText returns the kind's name, so recorded timelines read as they
// print.
func (k Kind) MarshalText() ([]byte, error) {
	if k < 0 || k >= NumKinds {
		return nil, fmt.Errorf("rollout: no such kind %d", int(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText parses a kind's name, as written by MarshalText.
func (k *Kind) UnmarshalText(b []byte) error {
	i := slices.Index(kindNames[:], string(b))
	if i < 0 {
		return fmt.Errorf("rollout: unknown failure kind %q; the kinds are %v", b, kindNames)
	}
	*k = Kind(i)
	return nil
}

// laneCell counts the requests one worker had served by one pod in one
// interval.
type laneCell struct {
	bucket, pod int32
	n           int64
}

// lane is one load worker's record of the requests it had served, by
// interval and pod. Only its worker writes to it, without a lock, so a busy
// load pays one clock read per request; it is read once the worker has
// stopped. A worker's requests come in order of time, on one connection
// at a time, so consecutive requests mostly land in the same cell.
type lane struct {
	cells   []laneCell
	leftOut int64
}

func (l *lane) add(bucket, pod int) {
	if n := len(l.cells); n > 0 {
		if c := &l.cells[n-1]; c.bucket == int32(bucket) && c.pod == int32(pod) {
			c.n++
			return
		}
	}
	if pod < 0 || len(l.cells) >= maxLaneCells {
		l.leftOut++
		return
	}
	l.cells = append(l.cells, laneCell{bucket: int32(bucket), pod: int32(pod), n: 1})
}

// servedByPod adds up the lanes: served[pod][bucket].
func servedByPod(lanes []*lane) (served [][]int64, leftOut int64) {
	for _, l := range lanes {
		leftOut += l.leftOut
		for _, c := range l.cells {
			for int(c.pod) >= len(served) {
				served = append(served, nil)
			}
			s := served[c.pod]
			if int(c.bucket) >= len(s) {
				s = append(s, make([]int64, int(c.bucket)+1-len(s))...)
				served[c.pod] = s
			}
			s[c.bucket] += c.n
		}
	}
	return served, leftOut
}

// since returns the offset of t from epoch, or Never for a zero t.
func since(epoch, t time.Time) time.Duration {
	if t.IsZero() {
		return Never
	}
	return t.Sub(epoch)
}
