package picture_test

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/cmd/rollout/internal/picture"
	"github.com/lameduck/lameduck/lameducktest/record"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bucket is the width of the intervals in which the simulator counts
// requests.
const bucket = 50 * time.Millisecond

// recorded is the comparison whose picture is in the README:
// go run ./cmd/rollout -compare -cycles 2 -report docs/rollout.png -report cmd/rollout/internal/picture/testdata/compare.json
const recorded = "testdata/compare.json"

func readRecorded(t testing.TB) []record.Run {
	t.Helper()
	runs, err := record.ReadFile(recorded)
	require.NoError(t, err)
	require.Len(t, runs, 3)
	return runs
}

// The figure of a recorded comparison has one panel per server, one lane
// per pod, every failure of the timeline on the lane of its pod, and the
// events of every rollout.
func TestFigureOfARecordedComparison(t *testing.T) {
	runs := readRecorded(t)
	fig, err := picture.New(runs...)
	require.NoError(t, err)
	assert.Equal(t, 1100, fig.Width)
	assert.Greater(t, fig.Height, 3*3*60, "three panels of three lanes")
	assert.Equal(t, bucket, fig.Bucket)
	assert.Positive(t, fig.FullRate)
	require.Len(t, fig.Panels, len(runs))

	for i, run := range runs {
		p := fig.Panels[i]
		tl := run.Timeline
		assert.Regexp(t, `^`+run.Name+` \(.+\): `+fmt.Sprint(run.Failed())+` of [\d,]+ requests failed`, p.Title)
		require.Len(t, p.Lanes, len(tl.Pods), "%s: one lane per pod", run.Name)

		var byKind record.KindCounts
		for j, l := range p.Lanes {
			assert.Positive(t, l.Box.Height())
			assert.Equal(t, p.Plot.Left, l.Box.Left, "the lanes span the plot")
			assert.Equal(t, p.Plot.Right, l.Box.Right, "the lanes span the plot")
			pod := tl.Pods[j]
			assert.Equal(t, pod.Name, l.Pod)
			assert.Positive(t, sum(l.Served), "%s %s served requests", run.Name, l.Pod)
			for _, f := range l.Failures {
				assert.Equal(t, j, f.Pod)
				byKind[f.Kind]++
			}
			assertMarks(t, run.Name, pod, tl.LoadEnd, l.Marks)
		}
		for k := range record.NumKinds {
			assert.Equal(t, run.Failures[k], byKind[k], "%s: every %s failure is on its pod's lane", run.Name, k)
		}
	}

	naive, textbook, lameduck := runs[0], runs[1], runs[2]
	require.Equal(t, []string{"naive", "textbook", "lameduck"}, []string{naive.Name, textbook.Name, lameduck.Name})
	assert.Positive(t, naive.Failures[record.KindRefused], "the naive server refuses connections during the lag")
	assert.Zero(t, textbook.Failures[record.KindRefused], "the textbook server keeps listening")
	assert.Positive(t, textbook.Failed())
	assert.Zero(t, lameduck.Failed())
}

// Each panel's time axis spans its own run, from a little before its load
// to a little after, with ticks where the axis puts their times, and says
// what it measures.
func TestEachPanelHasItsOwnTimeAxis(t *testing.T) {
	runs := readRecorded(t)
	fig, err := picture.New(runs...)
	require.NoError(t, err)
	for i, run := range runs {
		p := fig.Panels[i]
		tl := run.Timeline
		span := p.End - p.Start
		assert.LessOrEqual(t, p.Start, tl.LoadStart, "%s: the axis shows the whole load", run.Name)
		assert.GreaterOrEqual(t, p.Start, tl.LoadStart-span/20, "%s: and starts near it", run.Name)
		assert.Greater(t, p.End, tl.LoadEnd, "%s: the axis shows the whole load", run.Name)
		assert.LessOrEqual(t, p.End, tl.LoadEnd+span/20, "%s: and ends near it", run.Name)
		assertAxis(t, p)
	}
	naive, lameduck := fig.Panels[0], fig.Panels[2]
	assert.Less(t, naive.End, lameduck.End-time.Second, "the naive run is shorter, and so is its axis")

	// A long warmup is steady load: the axis starts a while before the
	// first SIGTERM instead.
	run := sparseRun()
	shift := 30 * time.Second
	tl := &run.Timeline
	tl.LoadEnd += shift
	for i := range tl.Pods {
		pt := &tl.Pods[i]
		for _, at := range []*time.Duration{&pt.Term, &pt.Removed, &pt.ListenerClosed, &pt.Exited} {
			if *at >= 0 {
				*at += shift
			}
		}
		pt.Served = append(make([]int64, shift/tl.Interval), pt.Served...)
	}
	for i := range tl.Failures {
		tl.Failures[i].At += shift
	}
	tl.Pods[1].Ready += shift
	tl.Pods[1].Joined += shift
	fig, err = picture.New(run)
	require.NoError(t, err)
	p := fig.Panels[0]
	assert.InDelta(t, (tl.Pods[0].Term - 2*time.Second).Seconds(), p.Start.Seconds(), 0.2, "two seconds of the warmup")
	assert.Equal(t, []picture.Event{picture.EventTerm, picture.EventListenerClosed, picture.EventExit, picture.EventRemoved}, events(p.Lanes[0].Marks),
		"pod-1's ready is before the axis")
	assertAxis(t, p)
}

// assertAxis checks that p's ticks are labelled with the times the axis
// puts at their place, in its span, and that the axis says what it is.
func assertAxis(t *testing.T, p picture.Panel) {
	t.Helper()
	var ticks []float64
	named := false
	for _, l := range p.Texts {
		if l.Text == "seconds since the start of the run" {
			named = true
			assert.Greater(t, l.Box.Top, p.Plot.Bottom, "%s: under the axis", p.Title)
		}
		v, err := strconv.ParseFloat(l.Text, 64)
		if err != nil || l.Box.Top < p.Plot.Bottom {
			continue
		}
		ticks = append(ticks, v)
		x := p.Plot.Left + (v-p.Start.Seconds())/(p.End-p.Start).Seconds()*p.Plot.Width()
		assert.InDelta(t, x, (l.Box.Left+l.Box.Right)/2, 0.01, "%s: tick %s is centred on its time", p.Title, l.Text)
		assert.GreaterOrEqual(t, v, p.Start.Seconds(), p.Title)
		assert.LessOrEqual(t, v, p.End.Seconds(), p.Title)
	}
	assert.True(t, named, "%s: the axis says what it measures", p.Title)
	assert.GreaterOrEqual(t, len(ticks), 5, "%s: ticks %v", p.Title, ticks)
	for _, l := range p.Lanes {
		for _, m := range l.Marks {
			assert.GreaterOrEqual(t, m.At, p.Start)
			assert.LessOrEqual(t, m.At, p.End)
			assert.InDelta(t, p.Plot.Left+(m.At-p.Start).Seconds()/(p.End-p.Start).Seconds()*p.Plot.Width(), m.X, 0.01)
		}
	}
}

func events(marks []picture.Mark) []picture.Event {
	var es []picture.Event
	for _, m := range marks {
		es = append(es, m.Event)
	}
	return es
}

// assertMarks checks a lane's events: a pod replaced during the load is
// marked from its SIGTERM to its exit, in that order, and the exit says
// how and when.
func assertMarks(t *testing.T, server string, pod record.Pod, loadEnd time.Duration, marks []picture.Mark) {
	t.Helper()
	var events []picture.Event
	for i, m := range marks {
		events = append(events, m.Event)
		assert.LessOrEqual(t, m.At, loadEnd, "%s %s: only events of the load", server, pod.Name)
		if i > 0 {
			assert.GreaterOrEqual(t, m.At, marks[i-1].At, "%s %s: marks in order of time", server, pod.Name)
		}
		if m.Event == picture.EventExit {
			assert.Regexp(t, `^exit 0 · \d+(\.\d+)?m?s$`, m.Label, "the exit code and how long after SIGTERM")
		} else {
			assert.Equal(t, m.Event.String(), m.Label)
		}
	}
	if pod.Term > loadEnd {
		assert.Equal(t, []picture.Event{picture.EventReady}, events, "%s %s: stopped after the load", server, pod.Name)
		return
	}
	assert.ElementsMatch(t, []picture.Event{picture.EventReady, picture.EventTerm, picture.EventRemoved, picture.EventListenerClosed, picture.EventExit}, events, "%s %s", server, pod.Name)
}

// The PNG decodes, has the figure's size, and shows the glyph of refused
// requests where there are some and nowhere else. (Each server is drawn
// alone: drawing is slow under the race detector.)
func TestPNG(t *testing.T) {
	runs := readRecorded(t)
	refused := color.RGBA{0xc0, 0x00, 0x20, 0xff}
	var near []int
	for _, run := range runs {
		near = append(near, countNear(t, renderPNG(t, run), refused))
	}
	// The header shows the glyph once, as its legend; a panel with refused
	// requests shows it many times.
	assert.Greater(t, near[0], 2*near[2], "refused requests are drawn")
	assert.Equal(t, near[1], near[2], "a run without refused requests shows only the legend's glyph")
}

// renderPNG draws runs, decodes the PNG and checks its size.
func renderPNG(t *testing.T, runs ...record.Run) *image.RGBA {
	t.Helper()
	fig, err := picture.New(runs...)
	require.NoError(t, err)
	var b bytes.Buffer
	require.NoError(t, fig.Write(&b, "png"))
	return decodePNG(t, &b, fig)
}

func decodePNG(t *testing.T, r io.Reader, fig *picture.Figure) *image.RGBA {
	t.Helper()
	img, err := png.Decode(r)
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, fig.Width, fig.Height), img.Bounds())
	rgba, ok := img.(*image.RGBA)
	require.True(t, ok, "an opaque PNG decodes as RGBA, not %T", img)
	return rgba
}

// countNear counts the pixels within a small distance of c.
func countNear(t *testing.T, img *image.RGBA, c color.RGBA) int {
	t.Helper()
	n := 0
	for i := 0; i+3 < len(img.Pix); i += 4 {
		p := img.Pix[i : i+3 : i+3]
		if abs(int(p[0])-int(c.R))+abs(int(p[1])-int(c.G))+abs(int(p[2])-int(c.B)) < 40 {
			n++
		}
	}
	return n
}

// The SVG is well-formed XML and names the servers.
func TestSVG(t *testing.T) {
	runs := readRecorded(t)
	fig, err := picture.New(runs...)
	require.NoError(t, err)
	var b bytes.Buffer
	require.NoError(t, fig.Write(&b, "svg"))
	dec := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	var root string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	assert.Equal(t, "svg", root)
	assert.ErrorContains(t, fig.Write(io.Discard, "gif"), `unknown format "gif"`)
}

// WriteFile picks the format by the file's name; JSON reads back as it was.
func TestWriteFile(t *testing.T) {
	runs := readRecorded(t)
	dir := t.TempDir()
	js := filepath.Join(dir, "run.json")
	require.NoError(t, picture.WriteFile(js, runs...))
	again, err := record.ReadFile(js)
	require.NoError(t, err)
	assert.Equal(t, runs, again)

	// One server only: drawing is slow under the race detector.
	fig, err := picture.New(runs[2])
	require.NoError(t, err)
	pngFile := filepath.Join(dir, "RUN.PNG")
	require.NoError(t, picture.WriteFile(pngFile, runs[2]))
	f, err := os.Open(pngFile)
	require.NoError(t, err)
	defer f.Close()
	decodePNG(t, f, fig)
	svgFile := filepath.Join(dir, "run.svg")
	require.NoError(t, picture.WriteFile(svgFile, runs...))
	b, err := os.ReadFile(svgFile)
	require.NoError(t, err)
	assert.Contains(t, string(b), "<svg")

	assert.ErrorContains(t, picture.WriteFile(filepath.Join(dir, "run.gif"), runs...), "name the file .png, .svg or .json")
	assert.ErrorContains(t, picture.WriteFile(filepath.Join(dir, "missing", "run.png"), runs...), "no such file or directory")
	_, err = record.ReadFile(pngFile)
	assert.ErrorContains(t, err, "read ")
}

func TestNewNeedsLoad(t *testing.T) {
	_, err := picture.New()
	assert.ErrorContains(t, err, "no run to draw")
	noLoad := record.Run{Name: "x", Timeline: record.Timeline{LoadEnd: record.Never}}
	_, err = picture.New(noLoad)
	assert.ErrorContains(t, err, "no load to draw")

	// A load of no time is still an axis of some.
	fig, err := picture.New(record.Run{Name: "x", Timeline: record.Timeline{LoadStart: time.Second, LoadEnd: time.Second}})
	require.NoError(t, err)
	assert.Less(t, fig.Panels[0].Start, fig.Panels[0].End)

	// In a comparison, a run that stopped before its load gets a panel
	// that says so, and the others are drawn.
	fig, err = picture.New(sparseRun(), noLoad)
	require.NoError(t, err)
	require.Len(t, fig.Panels, 2)
	assert.Empty(t, fig.Panels[1].Lanes)
	assert.Equal(t, []string{"the run stopped before its load started: nothing happened to draw"}, fig.Panels[1].Caption)
	assertCaption(t, fig.Panels[1], noLoad)
	assertNoCollision(t, fig)
	assert.Equal(t, image.Rect(0, 0, fig.Width, fig.Height), renderPNG(t, sparseRun(), noLoad).Bounds())
}

// Failed requests that reached no pod get a lane of their own, and a pod
// SIGKILLed at the grace period says so.
func TestLostFailuresAndKilledPods(t *testing.T) {
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	run := record.Run{
		Name:     "h2c",
		Requests: 10,
		Failures: [record.NumKinds]int64{record.KindRefused: 1, record.KindTimeout: 1},
		Timeline: record.Timeline{
			Interval: bucket, LoadStart: sec(0.1), LoadEnd: sec(3),
			Pods: []record.Pod{{
				Name: "pod-1", Started: 0, Ready: sec(0.05), Joined: sec(0.05), Term: sec(1),
				Removed: sec(1.5), ListenerClosed: record.Never, Exited: sec(2.5),
				Exit:   record.Exit{Code: -1, Killed: true, Status: "signal: killed"},
				Served: []int64{0, 0, 3, 5},
			}},
			Failures: []record.Failure{
				{At: sec(1.2), Pod: -1, Kind: record.KindRefused},
				{At: sec(2), Pod: 0, Kind: record.KindTimeout},
			},
		},
	}
	fig, err := picture.New(run)
	require.NoError(t, err)
	p := fig.Panels[0]
	assert.Equal(t, "h2c: 2 of 10 requests failed: 1 refused, 1 timeout", p.Title)
	require.Len(t, p.Lanes, 2)
	assert.Equal(t, "no pod", p.Lanes[1].Pod)
	assert.Equal(t, run.Timeline.Failures[:1], p.Lanes[1].Failures)
	assert.Equal(t, run.Timeline.Failures[1:], p.Lanes[0].Failures)
	var labels []string
	for _, m := range p.Lanes[0].Marks {
		labels = append(labels, m.Label)
	}
	assert.Equal(t, []string{"ready", "SIGTERM", "endpoint removed", "SIGKILL · 1.50s"}, labels)
	assert.Equal(t, image.Rect(0, 0, fig.Width, fig.Height), renderPNG(t, run).Bounds())
}

// A run of many rollouts draws the first pods only, and says so: the
// picture's size is bounded.
func TestManyPods(t *testing.T) {
	tl := record.Timeline{Interval: bucket, LoadStart: 0, LoadEnd: 100 * time.Second}
	for i := range 1000 {
		at := time.Duration(i) * 100 * time.Millisecond
		tl.Pods = append(tl.Pods, record.Pod{
			Name: fmt.Sprintf("pod-%d", i+1), Started: at, Ready: at, Joined: at, Term: at + time.Second,
			Removed: record.Never, ListenerClosed: record.Never, Exited: record.Never,
		})
		tl.Failures = append(tl.Failures, record.Failure{At: at + time.Second, Pod: i, Kind: record.KindEOF})
	}
	fig, err := picture.New(record.Run{Name: "long", Requests: 1000, Failures: [record.NumKinds]int64{record.KindEOF: 1000}, Timeline: tl})
	require.NoError(t, err)
	p := fig.Panels[0]
	assert.Equal(t, "long: 1000 of 1,000 requests failed: 1000 eof (the first 24 of 1000 pods)", p.Title)
	require.Len(t, p.Lanes, 24)
	assert.Equal(t, "pod-24", p.Lanes[23].Pod)
	assert.Less(t, fig.Height, 24*100+200)
}

// Failures of each kind have a row of their own in a lane, however dense:
// where glyphs would overlap, they are one burst, with bars and a count,
// and where they are sparse, a glyph each.
func TestFailuresStayApartByKind(t *testing.T) {
	fig, err := picture.New(denseRun())
	require.NoError(t, err)
	lanes := fig.Panels[0].Lanes
	require.Len(t, lanes, 3)
	assert.Equal(t, "no pod", lanes[2].Pod)
	want := map[string]map[record.Kind]int{
		"pod-1":  {record.KindRefused: 250, record.KindReset: 300, record.KindEOF: 200},
		"pod-2":  {},
		"no pod": {record.KindRefused: 20},
	}
	for _, l := range lanes {
		rows := assertBursts(t, l)
		got := map[record.Kind]int{}
		for _, b := range l.Bursts {
			got[b.Kind] += b.Count
			assert.Len(t, rows[b.Kind], 1, "%s: the %s failures are one burst", l.Pod, b.Kind)
			assert.NotEmpty(t, b.Bars, "%s: %s drawn as bars", l.Pod, b.Kind)
			assert.Equal(t, fmt.Sprintf("%d %s", b.Count, b.Kind), b.Label.Text)
		}
		assert.Equal(t, want[l.Pod], got, l.Pod)
	}
	reset, eof := lanes[0].Bursts[1], lanes[0].Bursts[2]
	require.Equal(t, []record.Kind{record.KindReset, record.KindEOF}, []record.Kind{reset.Kind, eof.Kind})
	assert.False(t, overlap(reset.Box, eof.Box), "resets and EOFs of the same milliseconds stay apart")
	assert.Equal(t, sec(1.0005), reset.From)
	assert.Less(t, reset.To, sec(1.004))

	// Sparse failures are a glyph each.
	fig, err = picture.New(sparseRun())
	require.NoError(t, err)
	l := fig.Panels[0].Lanes[0]
	rows := assertBursts(t, l)
	require.Len(t, rows[record.KindRefused], 3, "three refused requests far apart")
	for _, b := range rows[record.KindRefused] {
		assert.Equal(t, 1, b.Count)
		assert.Nil(t, b.Bars, "a glyph")
		assert.Empty(t, b.Label.Text)
	}
	require.Len(t, rows[record.KindReset], 1, "two resets a millisecond apart")
	assert.Equal(t, 2, rows[record.KindReset][0].Count)

	// The recorded comparison: every failure in one burst of its kind.
	for i, run := range readRecorded(t) {
		fig, err := picture.New(run)
		require.NoError(t, err)
		for j, l := range fig.Panels[0].Lanes {
			assertBursts(t, l)
			var byKind [record.NumKinds]int
			for _, f := range run.Timeline.Failures {
				if f.Pod == j {
					byKind[f.Kind]++
				}
			}
			var drawn [record.NumKinds]int
			for _, b := range l.Bursts {
				drawn[b.Kind] += b.Count
			}
			assert.Equal(t, byKind, drawn, "run %d %s", i, l.Pod)
		}
	}
}

// assertBursts checks that a lane's bursts account for its failures, that
// each kind has a row of its own in the lane, and that bars are inside
// their burst's box; it returns the bursts by kind.
func assertBursts(t *testing.T, l picture.Lane) map[record.Kind][]picture.Burst {
	t.Helper()
	rows := map[record.Kind][]picture.Burst{}
	total := 0
	for _, b := range l.Bursts {
		rows[b.Kind] = append(rows[b.Kind], b)
		total += b.Count
		assert.LessOrEqual(t, b.From, b.To)
		assert.True(t, b.Box.Top >= l.Box.Top && b.Box.Bottom <= l.Box.Bottom, "%s: %s burst %v in the lane %v", l.Pod, b.Kind, b.Box, l.Box)
		for _, bar := range b.Bars {
			assert.True(t, bar.Left >= b.Box.Left && bar.Right <= b.Box.Right && bar.Top >= b.Box.Top && bar.Bottom <= b.Box.Bottom && bar.Height() > 0,
				"%s: %s bar %v in its burst %v", l.Pod, b.Kind, bar, b.Box)
			assert.True(t, bar.Left >= l.Box.Left && bar.Right <= l.Box.Right, "%s: %s bar %v in the plot %v", l.Pod, b.Kind, bar, l.Box)
		}
	}
	assert.Equal(t, len(l.Failures), total, "%s: every failure is drawn once", l.Pod)
	for k, bs := range rows {
		for _, b := range bs {
			assert.Equal(t, bs[0].Box.Top, b.Box.Top, "%s: one row per kind", l.Pod)
		}
		for k2, bs2 := range rows {
			if k2 != k {
				assert.False(t, bs[0].Box.Top < bs2[0].Box.Bottom && bs2[0].Box.Top < bs[0].Box.Bottom, "%s: the rows of %s and %s are apart", l.Pod, k, k2)
			}
		}
	}
	return rows
}

// Each panel says under its title why its requests failed, from each
// failure's kind and its pod's events: the counts, the kinds, the pods,
// when their listeners closed and how long the load balancer still routed
// to them.
func TestCaptionsSayWhyRequestsFailed(t *testing.T) {
	runs := readRecorded(t)
	fig, err := picture.New(runs...)
	require.NoError(t, err)
	for i, run := range runs {
		assertCaption(t, fig.Panels[i], run)
	}
	naive, textbook, lameduck := fig.Panels[0].Caption, fig.Panels[1].Caption, fig.Panels[2].Caption
	refused := fmt.Sprint(runs[0].Failures[record.KindRefused])
	assert.Contains(t, naive, line(t, naive, `^`+refused+` refused: pod-1 and pod-2 stopped listening \d+(–\d+)? ms after SIGTERM while the load balancer routed to them for 1\.0 s more$`),
		"the naive server stops listening at once, while the load balancer still routes to it")
	// The kinds of a sentence come most first.
	line(t, naive, `^\d+ (reset|eof), \d+ (reset|eof), \d+(–\d+)? ms after SIGTERM: pod-1 and pod-2 closed connections that had a request on the way$`)
	line(t, textbook, `^\d+ (reset|eof), \d+ (reset|eof), \d+(–\d+)? ms after SIGTERM, listener still open: pod-1 and pod-2 closed connections that had a request on the way$`)
	assert.Len(t, textbook, 1, "the textbook server refuses nothing: %q", textbook)
	assert.Equal(t, []string{"no request failed: each pod kept listening until its endpoint was removed and exited 2.0 s after SIGTERM"}, lameduck)

	killed := func() record.Run {
		run := sparseRun()
		pt := &run.Timeline.Pods[0]
		pt.ListenerClosed, pt.Exited = sec(3.5), sec(31.5)
		pt.Exit = record.Exit{Code: -1, Killed: true, Status: "signal: killed"}
		run.Timeline.LoadEnd = sec(32)
		run.Timeline.Pods[1].Term, run.Timeline.Pods[1].Exited = sec(32.1), sec(32.2)
		return run
	}
	cases := []struct {
		name string
		run  func() record.Run
		want []string
	}{{
		name: "lameducktest",
		run:  sparseRun,
		want: []string{
			"2 reset, 2–3 ms after SIGTERM: pod-1 closed connections that had a request on the way",
			"3 refused: pod-1 stopped listening 4 ms after SIGTERM while the load balancer routed to it for 1.0 s more",
		},
	}, {
		// Whether a reset came just before or just after the exit that
		// followed tells nothing more: one sentence.
		name: "closed as it exited",
		run: func() record.Run {
			run := sparseRun()
			run.Timeline.Failures = []record.Failure{{At: sec(1.503), Pod: 0, Kind: record.KindEOF}, {At: sec(1.511), Pod: 0, Kind: record.KindReset}}
			return run
		},
		want: []string{"1 reset, 1 eof, 3–11 ms after SIGTERM: pod-1 closed connections that had a request on the way"},
	}, {
		name: "killed at the grace period",
		run: func() record.Run {
			run := killed()
			run.Timeline.Failures = []record.Failure{
				{At: sec(31.5), Pod: 0, Kind: record.KindReset}, {At: sec(31.5), Pod: 0, Kind: record.KindReset},
				{At: sec(31.51), Pod: 0, Kind: record.KindEOF}, {At: sec(31.6), Pod: 0, Kind: record.KindTimeout},
			}
			return run
		},
		want: []string{
			"2 reset, 1 eof when pod-1 was killed at the grace period, 30 s after SIGTERM, with requests in flight",
			"1 timeout, 30 s after SIGTERM: pod-1 did not answer within the request timeout",
		},
	}, {
		name: "failed while serving",
		run: func() record.Run {
			run := sparseRun()
			run.Timeline.Failures = []record.Failure{{At: sec(1), Pod: 0, Kind: record.Kind5xx}, {At: sec(2), Pod: 1, Kind: record.Kind5xx}}
			return run
		},
		want: []string{"2 5xx on pod-1 and pod-2 while serving, before any SIGTERM to them"},
	}, {
		name: "no pod, and not all in the record",
		run: func() record.Run {
			run := sparseRun()
			run.Timeline.Failures = []record.Failure{{At: sec(1.7), Pod: -1, Kind: record.KindRefused}}
			run.Timeline.FailuresLeftOut = 12_000
			return run
		},
		want: []string{
			"1 refused reached no pod: the load balancer had no endpoint for them, or they could not be traced to one",
			"the record lists the first 1 failures; 12,000 more are left out of this picture",
		},
	}, {
		name: "lucky",
		run: func() record.Run {
			run := sparseRun()
			run.Timeline.Failures = nil
			return run
		},
		want: []string{"no request failed, though pod-1 stopped listening before its endpoint was removed"},
	}, {
		name: "kept listening",
		run: func() record.Run {
			run := killed()
			run.Timeline.Failures = nil
			return run
		},
		want: []string{"no request failed: pod-1 kept listening until its endpoint was removed and exited 30 s after SIGTERM"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := c.run()
			fig, err := picture.New(run)
			require.NoError(t, err)
			assert.Equal(t, c.want, fig.Panels[0].Caption)
			if run.Timeline.FailuresLeftOut == 0 {
				assertCaption(t, fig.Panels[0], run)
			}
		})
	}
}

// assertCaption checks that p's caption accounts for every failure of the
// run's record, by kind, and is drawn in the panel, under its title and
// above its lanes.
func assertCaption(t *testing.T, p picture.Panel, run record.Run) {
	t.Helper()
	var want, told [record.NumKinds]int
	for _, f := range run.Timeline.Failures {
		want[f.Kind]++
	}
	count := regexp.MustCompile(`(\d+) (refused|reset|eof|5xx|timeout|other)\b`)
	for _, c := range p.Caption {
		for _, m := range count.FindAllStringSubmatch(c, -1) {
			var k record.Kind
			require.NoError(t, k.UnmarshalText([]byte(m[2])))
			n, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			told[k] += n
		}
	}
	assert.Equal(t, want, told, "%s: the caption tells every failure once: %q", run.Name, p.Caption)

	var above []string
	for _, l := range p.Texts {
		if l.Box.Bottom <= p.Plot.Top {
			above = append(above, l.Text)
		}
	}
	assert.Equal(t, strings.Join(append([]string{p.Title}, p.Caption...), " "), strings.Join(above, " "),
		"%s: the title, and the caption under it, are drawn above the lanes", run.Name)
}

// line returns the line of caption that matches re, and fails t if none
// does.
func line(t *testing.T, caption []string, re string) string {
	t.Helper()
	for _, l := range caption {
		if regexp.MustCompile(re).MatchString(l) {
			return l
		}
	}
	t.Errorf("no line of %q matches %s", caption, re)
	return ""
}

// sec returns s seconds.
func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// sparseRun is a failed test's record as lameducktest writes it: one pod
// and its replacement, a few failures at the SIGTERM.
func sparseRun() record.Run {
	return record.Run{
		Name:     "lameducktest.test",
		Note:     "TestRollingUpdate/h2c",
		Requests: 48_211,
		Failures: [record.NumKinds]int64{record.KindRefused: 3, record.KindReset: 2},
		Timeline: record.Timeline{
			Interval: bucket, LoadStart: sec(0.25), LoadEnd: sec(2.55),
			Pods: []record.Pod{{
				Name: "pod-1", Started: 0, Ready: sec(0.24), Joined: sec(0.24), Term: sec(1.5),
				Removed: sec(2.5), ListenerClosed: sec(1.504), Exited: sec(1.51),
				Exit:   record.Exit{Status: "exit status 0"},
				Served: served(sec(0.25), sec(1.5), 900),
			}, {
				Name: "pod-2", Started: sec(1.2), Ready: sec(1.5), Joined: sec(1.5), Term: sec(2.6),
				Removed: record.Never, ListenerClosed: record.Never, Exited: sec(2.62),
				Exit:   record.Exit{Status: "exit status 0"},
				Served: served(sec(1.5), sec(2.55), 900),
			}},
			Failures: []record.Failure{
				{At: sec(1.502), Pod: 0, Kind: record.KindReset},
				{At: sec(1.503), Pod: 0, Kind: record.KindReset},
				{At: sec(1.52), Pod: 0, Kind: record.KindRefused},
				{At: sec(1.61), Pod: 0, Kind: record.KindRefused},
				{At: sec(1.9), Pod: 0, Kind: record.KindRefused},
			},
		},
	}
}

// denseRun has hundreds of failures of three kinds within a second of
// pod-1's SIGTERM, and some that reached no pod.
func denseRun() record.Run {
	tl := record.Timeline{
		Interval: bucket, LoadStart: sec(0.2), LoadEnd: sec(2.2),
		Pods: []record.Pod{{
			Name: "pod-1", Started: 0, Ready: sec(0.2), Joined: sec(0.2), Term: sec(1),
			Removed: sec(2), ListenerClosed: sec(1.002), Exited: sec(1.005),
			Exit:   record.Exit{Status: "exit status 0"},
			Served: served(sec(0.2), sec(1), 1000),
		}, {
			Name: "pod-2", Started: sec(0.7), Ready: sec(1), Joined: sec(1), Term: record.Never,
			Removed: record.Never, ListenerClosed: record.Never, Exited: record.Never,
			Served: served(sec(1), sec(2.2), 1000),
		}},
	}
	var counts [record.NumKinds]int64
	add := func(kind record.Kind, pod, n int, from, to time.Duration) {
		for i := range n {
			tl.Failures = append(tl.Failures, record.Failure{At: from + (to-from)*time.Duration(i)/time.Duration(n), Pod: pod, Kind: kind})
		}
		counts[kind] += int64(n)
	}
	add(record.KindReset, 0, 300, sec(1.0005), sec(1.004))
	add(record.KindEOF, 0, 200, sec(1.001), sec(1.3))
	add(record.KindRefused, 0, 250, sec(1.006), sec(1.99))
	add(record.KindRefused, -1, 20, sec(1.5), sec(1.6))
	slices.SortStableFunc(tl.Failures, func(a, b record.Failure) int { return cmp.Compare(a.At, b.At) })
	var requests int64 = 100_000
	return record.Run{Name: "dense", Note: "Close on SIGTERM", Requests: requests, Failures: counts, Timeline: tl}
}

// longRun is many rollouts of a naive server on a long time axis, where
// each pod's events are a few pixels apart.
func longRun() record.Run {
	tl := record.Timeline{Interval: bucket, LoadStart: sec(1), LoadEnd: sec(61)}
	var failures [record.NumKinds]int64
	for i := range 30 {
		at := sec(1 + 2*float64(i))
		tl.Pods = append(tl.Pods, record.Pod{
			Name: fmt.Sprintf("pod-%d", i+1), Ready: at, Joined: at, Term: at + sec(2),
			Removed: at + sec(3), ListenerClosed: at + sec(2.004), Exited: at + sec(2.01),
			Exit:   record.Exit{Status: "exit status 0"},
			Served: served(at, at+sec(2), 500),
		})
		tl.Failures = append(tl.Failures, record.Failure{At: at + sec(2.003), Pod: i, Kind: record.KindReset},
			record.Failure{At: at + sec(2.05), Pod: i, Kind: record.KindRefused})
		failures[record.KindReset]++
		failures[record.KindRefused]++
	}
	return record.Run{Name: "long", Requests: 600_000, Failures: failures, Timeline: tl}
}

// served returns a pod's served counts: n per bucket from from to to.
func served(from, to time.Duration, n int64) []int64 {
	s := make([]int64, to/bucket+1)
	for b := from / bucket; b < to/bucket; b++ {
		s[b] = n
	}
	return s
}

// No text of the picture overlaps another, and no label crosses the line
// of an event other than the ones it names: measured on the boxes New laid
// out, with the fonts Write draws in. Every event on a lane is named.
func TestLabelsCrossNothing(t *testing.T) {
	recorded := readRecorded(t)
	cases := map[string][]record.Run{
		"recorded":          recorded,
		"recorded naive":    recorded[:1],
		"recorded textbook": recorded[1:2],
		"recorded lameduck": recorded[2:],
		"sparse":            {sparseRun()},
		"dense":             {denseRun()},
		"long":              {longRun()},
		"all":               append(slices.Clone(recorded), sparseRun(), denseRun(), longRun()),
	}
	for name, runs := range cases {
		t.Run(name, func(t *testing.T) {
			fig, err := picture.New(runs...)
			require.NoError(t, err)
			assertNoCollision(t, fig)
			assertNamed(t, fig)
		})
	}
}

// assertNamed checks that every event of fig has a label and every burst
// of failures its count.
func assertNamed(t *testing.T, fig *picture.Figure) {
	t.Helper()
	for _, p := range fig.Panels {
		for _, l := range p.Lanes {
			named := make([]bool, len(l.Marks))
			for _, lb := range l.Labels {
				for _, m := range lb.Marks {
					named[m] = true
				}
			}
			for i, m := range l.Marks {
				assert.True(t, named[i], "%s %s: %s at %v has a label", p.Title, l.Pod, m.Event, m.At)
			}
			for _, b := range l.Bursts {
				if b.Count > 1 {
					assert.Regexp(t, fmt.Sprintf(`^%d( %s)?$`, b.Count, b.Kind), b.Label.Text, "%s %s: a burst says how many failed", p.Title, l.Pod)
				}
			}
		}
	}
}

// The rules hold for any record, not only the ones above: random runs of
// up to 30 pods, with events bunched or spread and bursts of failures of
// every kind, lay out with no text over another or across a line, every
// event named, every failure in one burst, every burst counted, and every
// failure told in the caption.
func TestAnyRecordLaysOutClear(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rnd.Int64N(int64(hi-lo)+1)) }
	maybe := func(d time.Duration) time.Duration {
		if rnd.IntN(5) == 0 {
			return record.Never
		}
		return d
	}
	for i := range 200 {
		start := between(0, 2*time.Second)
		tl := record.Timeline{Interval: bucket, LoadStart: start, LoadEnd: start + between(500*time.Millisecond, 2*time.Minute)}
		// Events bunch within milliseconds in some runs, and spread over
		// seconds in others.
		spread := []time.Duration{5 * time.Millisecond, 300 * time.Millisecond, 3 * time.Second}[rnd.IntN(3)]
		for j := range rnd.IntN(30) + 1 {
			ready := between(0, tl.LoadEnd)
			term := maybe(ready + between(0, tl.LoadEnd-ready))
			pt := record.Pod{Name: fmt.Sprintf("pod-%d", j+1), Ready: ready, Joined: ready, Term: term,
				Removed: record.Never, ListenerClosed: record.Never, Exited: record.Never,
				Exit:   record.Exit{Code: rnd.IntN(3) - 1, Killed: rnd.IntN(4) == 0, Status: "signal: killed"},
				Served: served(ready, min(term, tl.LoadEnd), 100)}
			if term >= 0 {
				pt.Removed, pt.ListenerClosed, pt.Exited = maybe(term+between(0, spread)), maybe(term+between(0, spread)), maybe(term+between(0, spread))
			}
			tl.Pods = append(tl.Pods, pt)
		}
		var failures [record.NumKinds]int64
		for range rnd.IntN(20) {
			pod := rnd.IntN(len(tl.Pods)+1) - 1
			kind := record.Kind(rnd.IntN(int(record.NumKinds)))
			at := between(tl.LoadStart, tl.LoadEnd)
			width := []time.Duration{time.Millisecond, 50 * time.Millisecond, 5 * time.Second}[rnd.IntN(3)]
			for range rnd.IntN(300) + 1 {
				tl.Failures = append(tl.Failures, record.Failure{At: min(at+between(0, width), tl.LoadEnd), Pod: pod, Kind: kind})
				failures[kind]++
			}
		}
		slices.SortStableFunc(tl.Failures, func(a, b record.Failure) int { return cmp.Compare(a.At, b.At) })
		run := record.Run{Name: fmt.Sprintf("random-%d", i), Requests: 1_000_000, Failures: failures, Timeline: tl}
		fig, err := picture.New(run)
		require.NoError(t, err)
		assertNoCollision(t, fig)
		assertNamed(t, fig)
		for _, l := range fig.Panels[0].Lanes {
			assertBursts(t, l)
		}
		assertCaption(t, fig.Panels[0], run)
		if t.Failed() {
			t.Fatalf("run %d: %+v", i, run.Timeline.Pods)
		}
	}
}

// assertNoCollision checks that no two texts of fig overlap, that every
// text is inside the picture, and that no text crosses an event line but
// those its label names.
func assertNoCollision(t *testing.T, fig *picture.Figure) {
	t.Helper()
	type text struct {
		what string
		box  picture.Rect
		// lane and marks are the lane and the events a label names.
		lane  *picture.Lane
		marks []int
	}
	var texts []text
	for _, l := range fig.Legend {
		texts = append(texts, text{what: "legend " + l.Text, box: l.Box})
	}
	for i := range fig.Panels {
		p := &fig.Panels[i]
		for _, l := range p.Texts {
			texts = append(texts, text{what: fmt.Sprintf("panel %d: %s", i, l.Text), box: l.Box})
		}
		for j := range p.Lanes {
			lane := &p.Lanes[j]
			for _, l := range lane.Labels {
				texts = append(texts, text{what: fmt.Sprintf("panel %d %s: %s", i, lane.Pod, l.Text), box: l.Box, lane: lane, marks: l.Marks})
			}
			for _, b := range lane.Bursts {
				if b.Label.Text != "" {
					texts = append(texts, text{what: fmt.Sprintf("panel %d %s: count %s", i, lane.Pod, b.Label.Text), box: b.Label.Box, lane: lane})
					for _, o := range lane.Bursts {
						assert.False(t, overlap(b.Label.Box, o.Box), "panel %d %s: count %q %v is on the %s burst %v", i, lane.Pod, b.Label.Text, b.Label.Box, o.Kind, o.Box)
					}
				}
			}
		}
	}
	frame := picture.Rect{Right: float64(fig.Width), Bottom: float64(fig.Height)}
	for i, a := range texts {
		assert.True(t, a.box.Left >= frame.Left && a.box.Right <= frame.Right && a.box.Top >= frame.Top && a.box.Bottom <= frame.Bottom,
			"%q %v is inside the picture %v", a.what, a.box, frame)
		for _, b := range texts[i+1:] {
			assert.False(t, overlap(a.box, b.box), "%q %v overlaps %q %v", a.what, a.box, b.what, b.box)
		}
	}
	// An event's line spans its lane's height, and is up to 2.5 pixels
	// wide.
	const halfLine = 1.5
	for _, p := range fig.Panels {
		for j := range p.Lanes {
			lane := &p.Lanes[j]
			for k, m := range lane.Marks {
				line := picture.Rect{Left: m.X - halfLine, Right: m.X + halfLine, Top: lane.Box.Top, Bottom: lane.Box.Bottom}
				for _, a := range texts {
					if a.lane == lane && slices.Contains(a.marks, k) {
						continue
					}
					assert.False(t, overlap(a.box, line), "%q %v crosses the line of %s at %.1f of %s", a.what, a.box, m.Event, m.X, lane.Pod)
				}
			}
		}
	}
}

// overlap reports whether a and b share any area.
func overlap(a, b picture.Rect) bool {
	return a.Left < b.Right && b.Left < a.Right && a.Top < b.Bottom && b.Top < a.Bottom
}

// Drawing the README's comparison, as a -compare -report run does at its
// end: compare ns/op with the run's duration (about 20 s).
func BenchmarkWritePNG(b *testing.B) {
	runs := readRecorded(b)
	for b.Loop() {
		fig, err := picture.New(runs...)
		if err != nil {
			b.Fatal(err)
		}
		if err := fig.Write(io.Discard, "png"); err != nil {
			b.Fatal(err)
		}
	}
}

func sum(s []int64) int64 {
	var n int64
	for _, v := range s {
		n += v
	}
	return n
}

func abs(x int) int { return max(x, -x) }

// The plotting library is a dependency of the rollout command only: the
// library's own packages, lameducktest, and the simulator and record they
// share with the command, must build without it.
func TestOnlyTheCommandImportsThePlottingLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/lameduck/lameduck"
	out, err := exec.Command("go", "list", "-deps", module, module+"/httpserver", module+"/grpcserver",
		module+"/lameducktest", module+"/lameducktest/record", module+"/lameducktest/rolloutcmd").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, module+"/internal/rollout", "go list lists the packages themselves")
	for _, dep := range deps {
		assert.False(t, strings.HasPrefix(dep, "gonum.org/") || strings.HasPrefix(dep, "golang.org/x/image/"), "%s is a dependency of the library", dep)
		assert.NotEqual(t, module+"/cmd/rollout/internal/picture", dep)
	}
}

// streamRun is a websocket run in which pod-1 sends its 200 clients away
// spread over 2 s, and pod-2 sends its own away all at once.
func streamRun() record.Run {
	tl := record.Timeline{Interval: bucket, LoadStart: sec(0.2), LoadEnd: sec(6)}
	pod := func(name string, ready, term, exit float64) record.Pod {
		return record.Pod{Name: name, Ready: sec(ready), Joined: sec(ready), Term: sec(term), Removed: sec(term + 0.5),
			ListenerClosed: sec(exit), Exited: sec(exit), Exit: record.Exit{Status: "exit status 0", AfterTerm: sec(exit - term)},
			Served: served(sec(ready), sec(exit), 500)}
	}
	p1, p2, p3 := pod("pod-1", 0.1, 1, 4.1), pod("pod-2", 0.9, 4.2, 5.3), pod("pod-3", 4.1, 7, 8)
	p3.Term, p3.Exited, p3.Removed, p3.ListenerClosed = record.Never, record.Never, record.Never, record.Never
	for i := range 200 {
		at := sec(2 + 2*float64(i)/200)
		p1.Departures = append(p1.Departures, at)
		p2.Reconnects = append(p2.Reconnects, at+sec(0.001))
		burst := sec(5.2 + float64(i)/200*0.02)
		p2.Departures = append(p2.Departures, burst)
		p3.Reconnects = append(p3.Reconnects, burst+sec(0.001))
	}
	tl.Pods = []record.Pod{p1, p2, p3}
	return record.Run{Name: "lameduck", Settings: record.Settings{Load: "websocket"}, Requests: 100_000, Timeline: tl}
}

// The clients a pod sends away and those that reconnect to it are bars
// per 100 ms under its load: a spread is a low run of bars, a herd one
// tall bar, and a label says how many and the most in any 100 ms.
func TestMovesShowASpreadAgainstAHerd(t *testing.T) {
	fig, err := picture.New(streamRun())
	require.NoError(t, err)
	assertNoCollision(t, fig)
	p := fig.Panels[0]
	assert.Contains(t, p.Title, "0 of 100,000 messages failed")
	require.Len(t, p.Lanes, 3)
	spread, herd := p.Lanes[0].Moves, p.Lanes[2].Moves
	assert.Len(t, spread.Departures, 200)
	assert.Len(t, herd.Reconnects, 200)

	tallest := func(m picture.Moves, reconnect bool) (n int, height float64) {
		for _, b := range m.Bars {
			if b.Reconnect == reconnect {
				n++
				height = max(height, b.Box.Height())
				assert.GreaterOrEqual(t, b.Box.Top, m.Box.Top, "inside its row")
				assert.LessOrEqual(t, b.Box.Bottom, m.Box.Bottom, "inside its row")
			}
		}
		return n, height
	}
	nSpread, hSpread := tallest(spread, false)
	nHerd, hHerd := tallest(herd, true)
	assert.GreaterOrEqual(t, nSpread, 19, "a bar per 100 ms of the 2 s window")
	assert.LessOrEqual(t, nHerd, 2, "all at once")
	assert.Less(t, hSpread*4, hHerd, "the herd's bar stands far above the spread's")
	for _, l := range p.Lanes {
		assert.Greater(t, l.Moves.Box.Top, l.Band.Bottom-1, "%s: the row is under the load band", l.Pod)
		assert.LessOrEqual(t, l.Moves.Box.Bottom, l.Box.Bottom)
	}
	assert.Regexp(t, `^200 sent away · at most 1[01] in any 100ms$`, spread.Label.Text, "10 a 100 ms, and one more at an edge")
	assert.Contains(t, herd.Label.Text, "200 reconnected · ")
	assert.Contains(t, herd.Label.Text, "200")
	assert.Contains(t, legendText(fig), "reconnected to it")

	// Other loads have no row.
	plain, err := picture.New(sparseRun())
	require.NoError(t, err)
	assert.NotContains(t, legendText(plain), "reconnected")
	for _, l := range plain.Panels[0].Lanes {
		assert.Empty(t, l.Moves.Bars)
	}
}

func legendText(fig *picture.Figure) string {
	var b strings.Builder
	for _, l := range fig.Legend {
		b.WriteString(l.Text + " ")
	}
	return b.String()
}
