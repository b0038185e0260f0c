// Package picture draws recorded rolling updates (package record): one
// panel per run (per server, in a comparison), each on a time axis of its
// own, with a caption that says why its requests failed; one lane per
// pod, with the requests it served per interval, its failed requests by
// kind where and when they happened (a row per kind: a glyph each, or a
// histogram and a count where they crowd), and the events of its life
// (ready, SIGTERM, endpoint removed from the load balancer, listener
// closed, exit), each line labelled where the label crosses nothing.
//
// It is in the module of the rollout command so that its plotting library
// is a dependency of that module only: the library's packages,
// lameducktest and the simulator build without it. lameducktest records a
// failed test's rolling update with package record, and the command draws
// the file (-draw).
//
// [New] turns recorded runs into a [Figure], the picture's content and
// where each part of it goes, in pixels, which tests can inspect;
// [Figure.Write] draws it as PNG or SVG. [WriteFile] does both from a file
// name, and writes the recorded runs themselves as JSON for a name ending
// in .json, which record.ReadFile reads back.
package picture

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Event is a kind of event in a pod's life.
type Event int

// The events drawn, in the order they happen to a pod.
const (
	// EventReady is a new pod passing its readiness probe and joining the
	// load balancer.
	EventReady Event = iota
	// EventTerm is the SIGTERM.
	EventTerm
	// EventRemoved is the load balancer no longer routing new connections
	// to the pod, the lag after the SIGTERM.
	EventRemoved
	// EventListenerClosed is the pod no longer listening.
	EventListenerClosed
	// EventExit is the pod's exit.
	EventExit

	numEvents
)

var eventNames = [numEvents]string{"ready", "SIGTERM", "endpoint removed", "listener closed", "exit"}

// String returns the event's label in the picture.
func (e Event) String() string {
	if e < 0 || e >= numEvents {
		return fmt.Sprintf("Event(%d)", int(e))
	}
	return eventNames[e]
}

// Figure is the content of the picture and where each part of it goes:
// what [Figure.Write] draws. Times are offsets from the start of each run;
// places are in pixels from the picture's top left corner, x to the right
// and y down, as [New] laid them out with the fonts Write draws in.
type Figure struct {
	// Width and Height are the picture's size in pixels.
	Width, Height int
	// Bucket is the width of the intervals of [Lane.Served].
	Bucket time.Duration
	// FullRate is the rate, in requests per second, drawn at the full
	// height of a lane's load band; the same in every panel, so that
	// lanes compare.
	FullRate float64
	// Legend is the header's text, which says what the picture's bands,
	// glyphs, bars and lines are; Write draws each kind's glyph, a burst's
	// bars and each event's line just left of its name.
	Legend []Label
	// Panels has one entry per run, in order.
	Panels []Panel

	// onlyMessages says every run is of a load that counts messages.
	onlyMessages bool
}

// Panel is one run in a [Figure].
type Panel struct {
	// Title names the server and gives the run's totals.
	Title string
	// Caption says under the title, a line for each cause, why the run's
	// requests failed, as each failure's kind and its pod's events tell
	// (such as "63 refused: pod-1 and pod-2 stopped listening 2–4 ms
	// after SIGTERM while the load balancer routed to them for 1.0 s
	// more"); or, if none did, what the stopped pods did.
	Caption []string
	// Start and End are the span of the panel's time axis, in time since
	// the start of its run: from a little before the run's first event of
	// interest to a little after the end of its load. Each panel has its
	// own, so that a short run is not drawn in a corner of a long one's.
	Start, End time.Duration
	// Lanes has one entry per pod, in order of start (the first 24 pods
	// at most: the title then says how many there were), and a last one,
	// "no pod", if some failed requests reached no pod; none if the run
	// recorded no load.
	Lanes []Lane
	// Plot is the area of the lanes: the start of the time axis at its
	// left edge, its end at its right.
	Plot Rect
	// Texts are the panel's text around its lanes, as drawn: the lines of
	// its title and of its caption (a long one takes more than one), the
	// lanes' names, and the time axis's tick labels, each centred on its
	// tick, and its name.
	Texts []Label
}

// Lane is one pod's row of a [Panel].
type Lane struct {
	// Pod is the pod's name.
	Pod string
	// Served counts the requests the pod served per interval of the
	// figure's Bucket, from the start of the run.
	Served []int64
	// Failures are the failed requests whose connection went to the pod.
	Failures []record.Failure
	// Bursts are the failures as drawn, each in exactly one, in order of
	// kind and then of time.
	Bursts []Burst
	// Marks are the events of the pod's life on the panel's time axis
	// until the end of the load, in order of time.
	Marks []Mark
	// Box is the lane's area, across the panel's plot; each event's line
	// spans its height.
	Box Rect
	// Band is where the requests served are drawn, the figure's FullRate
	// at its top.
	Band Rect
	// Labels name the events, in rows at the top of the lane, each beside
	// the lines of the events it names; events too close together share
	// one.
	Labels []Label
	// Moves are the clients of the websocket and sse loads that the pod
	// sent away and that reconnected to it, in a row under Band; empty,
	// and no row, for other loads.
	Moves Moves
}

// Mark is one event in a [Lane].
type Mark struct {
	// Event says what happened.
	Event Event
	// At is when.
	At time.Duration
	// Label is what the picture writes next to it, room permitting: the
	// event's name, or for the exit its code (or "SIGKILL") and how long
	// after the SIGTERM it came, such as "exit 0 · 2.01s". Short of room,
	// the picture writes less ("TERM", "exit 0").
	Label string
	// X is where its line is drawn.
	X float64
}

// Label is a piece of text in a [Figure] and the box it fills: as wide as
// the text and as tall as its font's ascent and descent.
type Label struct {
	// Text is what is written.
	Text string
	// Box is where.
	Box Rect
	// Marks are the indexes in its lane's Marks of the events it names,
	// for the label of an event; nil for other text.
	Marks []int

	style  textStyle
	sample sample
	// tick says the label is a tick's, drawn under the centre of its box.
	tick bool
}

// Rect is an area of a [Figure], in pixels from its top left corner.
type Rect struct {
	Left, Top, Right, Bottom float64
}

// Width returns the width of r.
func (r Rect) Width() float64 { return r.Right - r.Left }

// Height returns the height of r.
func (r Rect) Height() float64 { return r.Bottom - r.Top }

// maxLanes bounds the lanes of a panel, and so the picture's size: a run of
// a thousand rollouts would be a picture too tall to look at, and too big
// to hold in memory.
const maxLanes = 24

// endMarginPct is the room left each side of a panel's time axis, in
// percent of its span, so that a pod's exit at the very end stays in
// sight.
const endMarginPct = 2

// defaultBucket is the width of the intervals of a record that gives
// none, such as one written by hand: the simulator's.
const defaultBucket = 50 * time.Millisecond

// New lays out the picture of runs. It needs at least one run.
func New(runs ...record.Run) (*Figure, error) {
	if len(runs) == 0 {
		return nil, fmt.Errorf("picture: no run to draw")
	}
	f := &Figure{Width: widthPx, Bucket: defaultBucket}
	loads := 0
	for _, r := range runs {
		tl := r.Timeline
		if tl.Interval > 0 {
			f.Bucket = tl.Interval
		}
		if tl.LoadEnd > 0 {
			loads++
		}
	}
	if loads == 0 {
		return nil, fmt.Errorf("picture: the runs recorded no load to draw")
	}
	var rates []int64
	f.onlyMessages = true
	for _, r := range runs {
		f.onlyMessages = f.onlyMessages && unit(r.Settings.Load) == "messages"
		tl := r.Timeline
		p := Panel{Title: title(r)}
		if tl.LoadEnd <= 0 {
			// A run of a comparison that stopped before its load: its
			// panel says so, and the others are drawn.
			p.Caption = []string{"the run stopped before its load started: nothing happened to draw"}
			f.Panels = append(f.Panels, p)
			continue
		}
		p.Caption = caption(tl)
		p.Start, p.End = span(tl)
		if n := len(tl.Pods); n > maxLanes {
			p.Title += fmt.Sprintf(" (the first %d of %d pods)", maxLanes, n)
		}
		for i, pt := range tl.Pods[:min(len(tl.Pods), maxLanes)] {
			l := Lane{Pod: pt.Name, Served: pt.Served, Moves: Moves{Departures: pt.Departures, Reconnects: pt.Reconnects}}
			for _, n := range pt.Served {
				if n > 0 {
					rates = append(rates, n)
				}
			}
			for _, fa := range tl.Failures {
				if fa.Pod == i {
					l.Failures = append(l.Failures, fa)
				}
			}
			l.Marks = marks(pt, p.Start, tl.LoadEnd)
			p.Lanes = append(p.Lanes, l)
		}
		var lost []record.Failure
		for _, fa := range tl.Failures {
			if fa.Pod < 0 {
				lost = append(lost, fa)
			}
		}
		if len(lost) > 0 {
			p.Lanes = append(p.Lanes, Lane{Pod: "no pod", Failures: lost})
		}
		f.Panels = append(f.Panels, p)
	}
	f.FullRate = niceCeil(float64(fullBand(rates)) / f.Bucket.Seconds())
	f.layout()
	return f, nil
}

// title names the run's server and gives its totals, with the failures by
// kind.
func title(r record.Run) string {
	var b strings.Builder
	b.WriteString(r.Name)
	if r.Note != "" {
		fmt.Fprintf(&b, " (%s)", r.Note)
	}
	failed := r.Failed()
	fmt.Fprintf(&b, ": %d of %s %s failed", failed, thousands(r.Requests), unit(r.Settings.Load))
	if failed > 0 {
		var kinds []string
		for k, n := range r.Failures {
			if n > 0 {
				kinds = append(kinds, fmt.Sprintf("%d %s", n, record.Kind(k)))
			}
		}
		fmt.Fprintf(&b, ": %s", strings.Join(kinds, ", "))
	}
	return b.String()
}

// unit names what a load counts: requests, or the messages of the
// websocket and sse loads.
func unit(load string) string {
	if load == "websocket" || load == "sse" {
		return "messages"
	}
	return "requests"
}

// span returns the time axis of a run's panel. It starts at the start of
// the load, or, after a long warmup, which is steady load and nothing
// else, some time before the first SIGTERM, unless a request failed
// earlier; it ends at the end of the load: what happens to the last pods
// once the load has stopped is no part of a rollout. A margin each side
// keeps the events at the ends in sight.
func span(tl record.Timeline) (start, end time.Duration) {
	from := max(tl.LoadStart, 0)
	first := record.Never
	for _, pt := range tl.Pods {
		if pt.Term >= 0 && pt.Term <= tl.LoadEnd && (first < 0 || pt.Term < first) {
			first = pt.Term
		}
	}
	if first >= 0 {
		lead := max(warmupShown, (tl.LoadEnd-first)/4)
		from = max(from, first-lead)
	}
	if len(tl.Failures) > 0 {
		from = min(from, max(tl.Failures[0].At, 0))
	}
	// The least margin keeps a load of no time an axis of some.
	margin := max((tl.LoadEnd-from)*endMarginPct/100, 10*time.Millisecond)
	return max(from-margin, 0), tl.LoadEnd + margin
}

// warmupShown is how much of a long warmup a panel shows at least before
// the first SIGTERM: enough to see the load a pod served before it.
const warmupShown = 2 * time.Second

// marks returns the events of pt from start until end, the end of the
// load, labelled.
func marks(pt record.Pod, start, end time.Duration) []Mark {
	var ms []Mark
	add := func(e Event, at time.Duration, label string) {
		if at >= start && at <= end {
			ms = append(ms, Mark{Event: e, At: at, Label: label})
		}
	}
	add(EventReady, max(pt.Ready, pt.Joined), EventReady.String())
	add(EventTerm, pt.Term, EventTerm.String())
	add(EventRemoved, pt.Removed, EventRemoved.String())
	add(EventListenerClosed, pt.ListenerClosed, EventListenerClosed.String())
	if pt.Exited >= 0 {
		label := fmt.Sprintf("exit %d", pt.Exit.Code)
		switch {
		case pt.Exit.Killed:
			label = "SIGKILL"
		case pt.Exit.Code < 0:
			label = pt.Exit.Status
		}
		if pt.Term >= 0 {
			label += " · " + formatDuration(pt.Exited-pt.Term)
		}
		add(EventExit, pt.Exited, label)
	}
	// Events of one moment are drawn in the order they happen.
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].At < ms[j-1].At; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
	return ms
}

// formatDuration writes d as a person reads it on a timeline: "11ms",
// "2.01s", "12.3s".
func formatDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Millisecond).String()
}

// fullBand returns the number of requests per interval to draw at the full
// height of a lane's band: the 99th percentile of the intervals that served
// any, so that one lucky interval does not flatten all the others (the few
// above it are drawn at full height).
func fullBand(served []int64) int64 {
	if len(served) == 0 {
		return 1
	}
	slices.Sort(served)
	return served[(len(served)-1)*99/100]
}

// niceCeil rounds x up to a round number: 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
// times a power of ten.
func niceCeil(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8} {
		if m*p >= x*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// thousands writes n with commas between groups of three digits.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// WriteFile writes the picture of runs to path, as PNG or SVG by its
// extension, or the runs themselves as JSON for a path ending in .json.
func WriteFile(path string, runs ...record.Run) (err error) {
	ext := strings.ToLower(filepath.Ext(path))
	var fig *Figure
	switch ext {
	case ".json":
		return record.WriteFile(path, runs...)
	case ".png", ".svg":
		if fig, err = New(runs...); err != nil {
			return err
		}
	default:
		return fmt.Errorf("picture: %s: name the file .png, .svg or .json", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("picture: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("picture: %w", cerr)
		}
	}()
	if err := fig.Write(f, ext[1:]); err != nil {
		return fmt.Errorf("picture: write %s: %w", path, err)
	}
	return nil
}
