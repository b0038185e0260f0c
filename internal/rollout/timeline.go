package rollout

import (
	"slices"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// TimelineBucket is the width of the intervals in which a [record.Timeline]
// counts the requests each pod served: short enough that a burst of
// failures right after a SIGTERM stands out against the load around it,
// long enough that a minute of load is a few hundred points per pod.
const TimelineBucket = 50 * time.Millisecond

// Bounds of a [record.Timeline], so that a long run cannot grow it without
// limit. Past them the timeline says what it left out; the counts of
// [Result] stay exact.
const (
	// maxTimelineFailures bounds the failures listed one by one: far more
	// than a picture can show apart.
	maxTimelineFailures = 100_000
	// maxLaneCells bounds what each load worker records of the served
	// requests: one cell per interval and pod the worker sent requests to,
	// about half an hour of 50 ms intervals.
	maxLaneCells = 1 << 15
)

// PodEvent is a moment of a stream load's subscription on a pod: a
// departure or a reconnection.
type PodEvent struct {
	// At is when the client saw it, from the start of the run.
	At time.Duration
	// Pod is the index in [record.Timeline.Pods] of the pod, or -1.
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

// since returns the offset of t from epoch, or record.Never for a zero t.
func since(epoch, t time.Time) time.Duration {
	if t.IsZero() {
		return record.Never
	}
	return t.Sub(epoch)
}
