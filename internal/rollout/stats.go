package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Failure is the error a load client returns for a failed request. It keeps
// the underlying error and the classification, so callers can count by kind
// with errors.As.
type Failure struct {
	// Kind says what the client saw.
	Kind record.Kind
	// Code is the gRPC status code name for gRPC failures, empty otherwise.
	Code string
	// Err is the underlying error.
	Err error
}

// Error returns the kind followed by the underlying error.
func (f *Failure) Error() string {
	if f.Code != "" {
		return fmt.Sprintf("%s (grpc %s): %v", f.Kind, f.Code, f.Err)
	}
	return fmt.Sprintf("%s: %v", f.Kind, f.Err)
}

// Unwrap returns the underlying error.
func (f *Failure) Unwrap() error { return f.Err }

// KindOf returns the kind of a failed request's error: the Kind of a
// *Failure in err's chain, or KindOther.
func KindOf(err error) record.Kind {
	var f *Failure
	if errors.As(err, &f) {
		return f.Kind
	}
	return record.KindOther
}

// Counts are the requests of one window of time (one rollout, or a whole run).
type Counts struct {
	// Requests counts every request that completed or failed.
	Requests int64
	// Failures counts failed requests by kind.
	Failures record.KindCounts
	// Codes counts failed gRPC calls by status code name; nil for HTTP loads.
	Codes map[string]int64
	// Departures counts the subscriptions of the websocket and sse loads
	// that a pod ended to send its client elsewhere (a close frame with
	// 1012 or 1001, an event stream ended after its retry field), and
	// Reconnects the subscriptions that resumed on a pod after an earlier
	// one had ended, however it ended. Both are zero for other loads.
	Departures, Reconnects int64
	// PeakReconnects is the most reconnections within any 100 ms
	// (record.PeakWindow) of the window, and ReconnectSpan the time from its
	// first reconnection to its last: Reconnects over ReconnectSpan is
	// the average rate that PeakReconnects compares with.
	PeakReconnects int
	ReconnectSpan  time.Duration
	// Samples holds the first error message seen for each kind, so a report
	// can say what actually happened: the client's error, without the
	// kind's name, and why it is of that kind where the error does not
	// say.
	Samples [record.NumKinds]string
}

// Failed returns the number of failed requests, all kinds together.
func (c Counts) Failed() int64 { return c.Failures.Sum() }

// Add adds o's counts to c, keeping c's samples where it has them.
func (c *Counts) Add(o Counts) {
	c.Requests += o.Requests
	for k := range c.Failures {
		c.Failures[k] += o.Failures[k]
		if c.Samples[k] == "" {
			c.Samples[k] = o.Samples[k]
		}
	}
	c.Departures += o.Departures
	c.Reconnects += o.Reconnects
	c.PeakReconnects = max(c.PeakReconnects, o.PeakReconnects)
	c.ReconnectSpan += o.ReconnectSpan
	for code, n := range o.Codes {
		if c.Codes == nil {
			c.Codes = make(map[string]int64)
		}
		c.Codes[code] += n
	}
}

// Summary renders the counts on one line: "requests=N failed=F" followed by
// the non-zero kinds.
func (c Counts) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests=%d failed=%d", c.Requests, c.Failed())
	for k, n := range c.Failures {
		if n > 0 {
			fmt.Fprintf(&b, " %s=%d", record.Kind(k), n)
		}
	}
	return b.String()
}

// sample is what a report shows of a failure: the client's error and, for
// a refused request whose error names a reset or an EOF instead, why it
// counts as refused.
func sample(f *Failure) string {
	msg := f.Err.Error()
	if f.Code != "" {
		msg = "grpc " + f.Code + ": " + msg
	}
	if f.Kind == record.KindRefused && !strings.Contains(msg, "refused") {
		msg += " (a new connection that ended before the pod sent a byte: the load balancer could not connect to the pod, which never saw the request)"
	}
	return msg
}

// recorder counts requests into consecutive windows. Successes only touch an
// atomic counter, so a busy load pays no lock; failures are rare and take the
// lock, so that a failure and its request always land in the same window.
type recorder struct {
	requests  atomic.Int64
	succeeded atomic.Bool
	firstOK   chan struct{} // closed at the first success
	once      sync.Once

	mu       sync.Mutex
	base     int64 // requests counter at the start of the current window
	cur      Counts
	failures []record.Failure // of every window, at most maxTimelineFailures
	leftOut  int64            // failures not in failures
	// departures and reconnects are the stream loads' events, of every
	// window, at most maxTimelineFailures each; base of the current
	// window.
	departures, reconnects         []PodEvent
	departuresBase, reconnectsBase int
}

func newRecorder() *recorder { return &recorder{firstOK: make(chan struct{})} }

func (r *recorder) success() {
	r.requests.Add(1)
	if !r.succeeded.Load() {
		r.once.Do(func() {
			r.succeeded.Store(true)
			close(r.firstOK)
		})
	}
}

// failure counts a failed request, which the client saw at (from the
// timeline's epoch) on a connection routed to pod (-1 for none).
func (r *recorder) failure(err error, pod int, at time.Duration) {
	f := &Failure{Kind: record.KindOther, Err: err}
	errors.As(err, &f)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests.Add(1)
	r.cur.Failures[f.Kind]++
	if len(r.failures) < maxTimelineFailures {
		r.failures = append(r.failures, record.Failure{At: at, Pod: pod, Kind: f.Kind})
	} else {
		r.leftOut++
	}
	if r.cur.Samples[f.Kind] == "" {
		r.cur.Samples[f.Kind] = sample(f)
	}
	if f.Code != "" {
		if r.cur.Codes == nil {
			r.cur.Codes = make(map[string]int64)
		}
		r.cur.Codes[f.Code]++
	}
}

// departure records a subscription that pod ended, at at.
func (r *recorder) departure(pod int, at time.Duration) {
	r.podEvent(&r.cur.Departures, &r.departures, pod, at)
}

// reconnect records a subscription that resumed on pod, at at.
func (r *recorder) reconnect(pod int, at time.Duration) {
	r.podEvent(&r.cur.Reconnects, &r.reconnects, pod, at)
}

// podEvent counts an event of pod at at, and lists it in events while
// they are fewer than maxTimelineFailures; the count has them all.
func (r *recorder) podEvent(count *int64, events *[]PodEvent, pod int, at time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*count++
	if len(*events) < maxTimelineFailures {
		*events = append(*events, PodEvent{At: at, Pod: pod})
	}
}

// settled reports whether every subscription sent away in the current
// window has reconnected, or failed since.
func (r *recorder) settled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur.Reconnects+r.cur.Failed() >= r.cur.Departures
}

// mark closes the current window and returns its counts.
func (r *recorder) mark() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.requests.Load()
	c := r.cur
	c.Requests = now - r.base
	r.base = now
	r.cur = Counts{}
	var times []time.Duration
	for _, e := range r.reconnects[r.reconnectsBase:] {
		times = append(times, e.At)
	}
	slices.Sort(times)
	c.PeakReconnects = record.Peak(times)
	if len(times) > 0 {
		c.ReconnectSpan = times[len(times)-1] - times[0]
	}
	r.reconnectsBase, r.departuresBase = len(r.reconnects), len(r.departures)
	return c
}

// firstError returns the first error of the current window, to say why no
// request succeeded.
func (r *recorder) firstError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.cur.Samples {
		if s != "" {
			return s
		}
	}
	return "(no request completed at all)"
}

// AveragePer100ms returns the reconnections per record.PeakWindow over
// ReconnectSpan, the rate PeakReconnects compares with: all of them when
// they came within one window.
func (c Counts) AveragePer100ms() float64 {
	if c.ReconnectSpan <= record.PeakWindow {
		return float64(c.Reconnects)
	}
	return float64(c.Reconnects) * float64(record.PeakWindow) / float64(c.ReconnectSpan)
}

// streams says on one line how the stream loads' subscriptions moved:
// "32 departures, 32 reconnects over 1.48s: at most 3 in any 100ms, 2.2 on
// average".
func (c Counts) streams() string {
	return fmt.Sprintf("%d departures, %d reconnects over %s: at most %d in any %s, %.1f on average",
		c.Departures, c.Reconnects, c.ReconnectSpan.Round(time.Millisecond), c.PeakReconnects, record.PeakWindow, c.AveragePer100ms())
}
