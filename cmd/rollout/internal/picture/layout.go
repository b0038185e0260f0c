package picture

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"strings"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// dpi maps the picture's pixels to the plotting library's points.
const dpi = 96

func px(n float64) vg.Length { return vg.Length(n) * vg.Inch / dpi }

// toPx converts the plotting library's points to pixels.
func toPx(l vg.Length) float64 { return float64(l / px(1)) }

// Sizes in pixels. GitHub shows a README's images up to about 880 pixels
// wide, and scales a wider one down, so a width a little above that stays
// sharp.
const (
	widthPx      = 1100
	marginPx     = 14
	legendLinePx = 25
	panelGapPx   = 18
	titleGapPx   = 8
	captionGapPx = 3
	labelRowPx   = 16
	nameGapPx    = 8
	tickPx       = 5
	tickGapPx    = 2
	axisGapPx    = 4
)

// textStyle is a font and a colour for a [Label].
type textStyle struct {
	size   float64 // pixels
	bold   bool
	colour color.Color
}

var (
	labelColour = color.RGBA{0x22, 0x22, 0x22, 0xff}

	legendText  = textStyle{size: 14, colour: labelColour}
	titleText   = textStyle{size: 15, bold: true, colour: labelColour}
	captionText = textStyle{size: 13, colour: labelColour}
	laneText    = textStyle{size: 13, colour: labelColour}
	tickText    = textStyle{size: 13, colour: labelColour}
	axisText    = textStyle{size: 12, colour: color.RGBA{0x55, 0x55, 0x55, 0xff}}
	eventText   = textStyle{size: 13, colour: labelColour}
)

// face returns the font the style draws with: the plotting library's, as
// its own text is.
func (s textStyle) face() font.Face {
	fnt := plot.DefaultFont
	fnt.Variant = "Sans"
	if s.bold {
		fnt.Weight = xfont.WeightBold
	}
	return font.DefaultCache.Lookup(fnt, px(s.size))
}

// width returns the width of txt in pixels.
func (s textStyle) width(txt string) float64 {
	f := s.face()
	return toPx(f.Width(txt))
}

// extents returns the height above and below the baseline, in pixels, of
// any text in the style.
func (s textStyle) extents() (ascent, descent float64) {
	f := s.face()
	e := f.Extents()
	return toPx(e.Ascent), toPx(e.Descent)
}

// height returns the height of a label's box.
func (s textStyle) height() float64 {
	a, d := s.extents()
	return a + d
}

// label returns txt laid out with its box's top left corner at (x, top).
func (s textStyle) label(txt string, x, top float64) Label {
	return Label{Text: txt, Box: Rect{Left: x, Top: top, Right: x + s.width(txt), Bottom: top + s.height()}, style: s}
}

// sample is what the legend draws left of a label: a kind's glyph, bars
// of a burst, or an event's line.
type sample struct {
	kind  record.Kind
	event Event
	// glyph, bars and line say which of them is drawn.
	glyph, bars, line bool
	// move, if not nil, is the colour of a bar of moves to draw.
	move color.Color
}

// Room in the legend for a sample left of its name.
const (
	glyphSamplePx = 14
	barsSamplePx  = 6 * binPx
	lineSamplePx  = 8
	moveSamplePx  = 12
	legendItemPx  = 12
)

// layout places every part of the figure and sets its height.
func (f *Figure) layout() {
	y := float64(marginPx) / 2
	y = f.layoutLegend(y)

	// The lanes' names share the left margin of every panel, so that the
	// panels' time axes line up.
	left := 0.0
	for _, p := range f.Panels {
		for _, l := range p.Lanes {
			left = max(left, laneText.width(l.Pod))
		}
	}
	plot := Rect{Left: marginPx + math.Ceil(left) + nameGapPx + 2, Right: float64(f.Width) - marginPx - 2}
	for i := range f.Panels {
		y += panelGapPx
		y = f.layoutPanel(&f.Panels[i], plot, y)
	}
	f.Height = int(math.Ceil(y + marginPx))
}

// layoutLegend lays out the header from y down, and returns its bottom.
// It explains the picture in a few lines, with the glyphs, bars and lines
// it uses, so that nobody has to look for a legend.
func (f *Figure) layoutLegend(y float64) float64 {
	sty := legendText
	x := float64(marginPx)
	newLine := func() {
		y += legendLinePx
		x = marginPx
	}
	// add adds an item, its sample in room left of its text; an item that
	// would run past the right margin starts a line.
	add := func(txt string, s sample, room float64) {
		if x > marginPx && x+room+sty.width(txt) > float64(f.Width)-marginPx {
			newLine()
		}
		x += room
		l := sty.label(txt, x, y)
		l.sample = s
		f.Legend = append(f.Legend, l)
		x = l.Box.Right + legendItemPx
	}
	full := fmt.Sprintf("%s/s", thousands(int64(f.FullRate)))
	served := "the requests it served"
	if f.onlyMessages {
		served = "the messages it sent"
	}
	add(fmt.Sprintf("One lane per pod. Blue: %s per %s (full band: %s).", served, formatDuration(f.Bucket), full), sample{}, 0)
	newLine()
	add("Failed requests, a row per kind:", sample{}, 0)
	for k := range record.NumKinds {
		if k == record.KindOther {
			continue // rare; still drawn, with its name in the title
		}
		add(k.String(), sample{kind: k, glyph: true}, glyphSamplePx)
	}
	add("a glyph each; where they crowd, bars (taller for more) and their count",
		sample{bars: true}, barsSamplePx)
	newLine()
	if f.hasMoves() {
		add("Websockets and event streams, per "+formatDuration(MoveBin)+":", sample{}, 0)
		add("sent away by the pod", sample{move: departureColour}, moveSamplePx)
		add("reconnected to it (one tall bar: all at once; a low, even run: spread out)", sample{move: reconnectColour}, moveSamplePx)
		newLine()
	}
	add("Events:", sample{}, 0)
	for e := range numEvents {
		name := e.String()
		if e == EventExit {
			name += " (its code · how long after SIGTERM)"
		}
		add(name, sample{event: e, line: true}, lineSamplePx)
	}
	return y + sty.height()
}

// hasMoves reports whether any lane has moves to draw.
func (f *Figure) hasMoves() bool {
	for _, p := range f.Panels {
		for i := range p.Lanes {
			if p.Lanes[i].Moves.has() {
				return true
			}
		}
	}
	return false
}

// layoutPanel lays out p from y down, its lanes across plot, and returns
// its bottom: its title, centred, its caption under it, its lanes, and its
// time axis.
func (f *Figure) layoutPanel(p *Panel, plot Rect, y float64) float64 {
	p.Texts = p.Texts[:0]
	for _, line := range wrap(titleText, p.Title, plot.Width()) {
		w := titleText.width(line)
		p.Texts = append(p.Texts, titleText.label(line, plot.Left+(plot.Width()-w)/2, y))
		y += titleText.height()
	}
	y += captionGapPx
	for _, sentence := range p.Caption {
		for _, line := range wrap(captionText, sentence, plot.Width()) {
			p.Texts = append(p.Texts, captionText.label(line, plot.Left, y))
			y += captionText.height()
		}
	}
	y += titleGapPx
	if len(p.Lanes) == 0 {
		p.Plot = Rect{Left: plot.Left, Right: plot.Right, Top: y, Bottom: y}
		return y
	}

	plot.Top = y
	x := p.axis(plot)
	most := mostInABin(p)
	for i := range p.Lanes {
		l := &p.Lanes[i]
		for j := range l.Marks {
			l.Marks[j].X = x.at(l.Marks[j].At.Seconds())
		}
		var rows int
		l.Labels, rows = labels(l.Marks, Rect{Left: plot.Left, Right: plot.Right, Top: y})
		body := y + lanePadPx + labelRowPx*float64(rows)
		kinds := kindsOf(l.Failures)
		height := max(bodyPx, float64(len(kinds))*kindRowPx+2*bodyPadPx)
		moves := 0.0
		if l.Moves.has() {
			moves = movesRowPx
		}
		l.Box = Rect{Left: plot.Left, Right: plot.Right, Top: y, Bottom: body + height + moves}
		l.Band = Rect{Left: plot.Left, Right: plot.Right, Top: body + bandTopPx, Bottom: l.Box.Bottom - moves - bandDropPx}
		if moves > 0 {
			l.Moves.layout(Rect{Left: plot.Left, Right: plot.Right, Top: l.Band.Bottom + bandDropPx, Bottom: l.Box.Bottom}, x, most, l.Marks)
		}
		l.Bursts = nil
		for k, kind := range kinds {
			l.Bursts = append(l.Bursts, bursts(l, kind, x, body+bodyPadPx+kindRowPx*float64(k))...)
		}
		name := laneText.label(l.Pod, 0, 0)
		name.Box = name.Box.moveTo(plot.Left-nameGapPx-name.Box.Width(), (l.Box.Top+l.Box.Bottom-name.Box.Height())/2)
		p.Texts = append(p.Texts, name)
		y = l.Box.Bottom
	}
	plot.Bottom = y
	p.Plot = plot
	scaleBars(p)

	y += tickPx + tickGapPx
	for _, t := range x.ticks() {
		l := tickText.label(t.label, 0, 0)
		l.Box = l.Box.moveTo(t.x-l.Box.Width()/2, y)
		l.tick = true
		p.Texts = append(p.Texts, l)
	}
	y += tickText.height() + axisGapPx
	// Each panel says what its axis is: the panels' axes differ.
	l := axisText.label("seconds since the start of the run", 0, 0)
	l.Box = l.Box.moveTo(plot.Left+(plot.Width()-l.Box.Width())/2, y)
	p.Texts = append(p.Texts, l)
	return y + l.Box.Height()
}

// axis returns the panel's time axis across plot.
func (p *Panel) axis(plot Rect) timeAxis {
	return timeAxis{plot: plot, start: p.Start.Seconds(), end: p.End.Seconds()}
}

// The parts of a lane, from its top: rows of event labels, then its body,
// where the load band is drawn, under the rows of the failures.
const (
	lanePadPx  = 2
	bodyPx     = 42
	bandTopPx  = 2
	bandDropPx = 4
)

// Event labels. Each sits in a row at the top of its lane, beside its
// event's line: just right of it, or else just left. A place is taken only
// if the label's box is inside the plot, crosses no line of its lane but
// its own (a line spans its lane's height, and so every row), and keeps
// clear of the labels already in its row. Labels are placed in order of
// time, each in the first row where its full text fits, or else its text
// with the events' short names ("TERM", "removed", "closed") but the
// exit's delay, or else its shortest ("exit 0" for the exit), in at most
// maxLabelRows rows; the lane grows by a row for each row its labels use.
// Events whose lines are too close for a label between them share one
// label, beside the outermost of their lines, and so does an event whose
// label fits nowhere with the next one (the last with the one before): the
// shared label names them in order of time, and its box may cross only
// their lines. An event that fits nowhere even then is left out: its
// line's colour and dashes, which the header explains, still say what it
// is.
const (
	maxLabelRows = 3
	groupPx      = 8
	labelGapPx   = 3
	labelSpacePx = 8
	// linePadPx keeps a label clear of another event's line: far enough
	// that it does not read as that line's.
	linePadPx = 12
)

// eventShort names events in a label short of room.
var eventShort = [numEvents]string{"ready", "TERM", "removed", "closed", "exit"}

// short returns m's label for a label short of room: the exit without its
// delay.
func (m Mark) short() string {
	if m.Event == EventExit {
		code, _, _ := strings.Cut(m.Label, " · ")
		return code
	}
	return eventShort[m.Event]
}

// labelRows is the placing of a lane's event labels.
type labelRows struct {
	lane  Rect
	marks []Mark
	rows  [][]Rect
}

// labels lays out the labels of marks in lane, by the rule above, and
// returns them and the number of rows they use.
func labels(marks []Mark, lane Rect) ([]Label, int) {
	lr := labelRows{lane: lane, marks: marks}
	var groups [][]int
	for i, m := range marks {
		if n := len(groups); n > 0 && m.X-marks[groups[n-1][len(groups[n-1])-1]].X < groupPx {
			groups[n-1] = append(groups[n-1], i)
			continue
		}
		groups = append(groups, []int{i})
	}
	var out []Label
	for i := 0; i < len(groups); i++ {
		g := groups[i]
		for {
			if l, ok := lr.place(g); ok {
				out = append(out, l)
				break
			}
			if i+1 < len(groups) {
				groups[i+1] = append(g, groups[i+1]...)
				break
			}
			if len(out) == 0 {
				break // left out
			}
			// The last label shares the one before it instead.
			prev := out[len(out)-1]
			out = out[:len(out)-1]
			lr.remove(prev)
			g = append(slices.Clone(prev.Marks), g...)
		}
	}
	rows := len(lr.rows)
	for rows > 0 && len(lr.rows[rows-1]) == 0 {
		rows--
	}
	return out, rows
}

// remove takes l out of its row.
func (lr *labelRows) remove(l Label) {
	for r, row := range lr.rows {
		lr.rows[r] = slices.DeleteFunc(row, func(b Rect) bool { return b == l.Box })
	}
}

// place finds a place for the label of the events group, by the rule
// above.
func (lr *labelRows) place(group []int) (Label, bool) {
	// The texts to try, the longest first.
	var texts [3][]string
	for _, i := range group {
		m := lr.marks[i]
		texts[0] = append(texts[0], m.Label)
		if m.Event == EventExit {
			texts[1] = append(texts[1], m.Label)
		} else {
			texts[1] = append(texts[1], m.short())
		}
		texts[2] = append(texts[2], m.short())
	}
	first, last := lr.marks[group[0]].X, lr.marks[group[len(group)-1]].X
	for _, words := range texts {
		txt := strings.Join(words, " · ")
		w := eventText.width(txt)
		for row := range maxLabelRows {
			top := lr.lane.Top + lanePadPx + labelRowPx*float64(row)
			for _, x := range []float64{last + labelGapPx, first - labelGapPx - w} {
				l := eventText.label(txt, x, top)
				if !lr.free(l.Box, row, group) {
					continue
				}
				for len(lr.rows) <= row {
					lr.rows = append(lr.rows, nil)
				}
				lr.rows[row] = append(lr.rows[row], l.Box)
				l.Marks = group
				return l, true
			}
		}
	}
	return Label{}, false
}

// free reports whether box, in row, is inside the lane, crosses no line
// but those of own, and keeps clear of the row's labels.
func (lr *labelRows) free(box Rect, row int, own []int) bool {
	if box.Left < lr.lane.Left || box.Right > lr.lane.Right {
		return false
	}
	for i, m := range lr.marks {
		if !slices.Contains(own, i) && m.X > box.Left-linePadPx && m.X < box.Right+linePadPx {
			return false
		}
	}
	if row < len(lr.rows) {
		for _, b := range lr.rows[row] {
			if box.Left < b.Right+labelSpacePx && b.Left < box.Right+labelSpacePx {
				return false
			}
		}
	}
	return true
}

// moveTo returns r moved to have its top left corner at (x, y).
func (r Rect) moveTo(x, y float64) Rect {
	return Rect{Left: x, Top: y, Right: x + r.Width(), Bottom: y + r.Height()}
}

// wrap breaks txt into lines no wider than width, between words.
func wrap(sty textStyle, txt string, width float64) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(txt) {
		if line != "" && sty.width(line+" "+w) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// timeAxis maps seconds to pixels across a plot.
type timeAxis struct {
	plot       Rect
	start, end float64
}

func (a timeAxis) at(s float64) float64 {
	return a.plot.Left + (s-a.start)/(a.end-a.start)*a.plot.Width()
}

type tick struct {
	x     float64
	label string
}

// ticks marks every second, or every few seconds on a long axis.
func (a timeAxis) ticks() []tick {
	// A step of 1, 2 or 5 times a power of ten, for about a dozen ticks,
	// labelled with as many decimals as the step has.
	raw := (a.end - a.start) / 12
	if raw <= 0 {
		return nil
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * p
	for _, m := range []float64{1, 2, 5} {
		if m*p >= raw {
			step = m * p
			break
		}
	}
	decimals := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	var ticks []tick
	for i := math.Ceil(a.start / step); i*step <= a.end+step*1e-9; i++ {
		v := i * step
		ticks = append(ticks, tick{x: a.at(v), label: strconv.FormatFloat(v, 'f', decimals, 64)})
	}
	return ticks
}
