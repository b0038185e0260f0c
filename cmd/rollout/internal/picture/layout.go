package picture

import (
	"fmt"
	"image/color"
	"math"
	"strconv"
	"strings"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"

	"github.com/lameduck/lameduck/internal/rollout"
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
	lanePx       = 76
	labelRowPx   = 16
	labelPadPx   = 4
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

	legendText = textStyle{size: 14, colour: labelColour}
	titleText  = textStyle{size: 15, bold: true, colour: labelColour}
	laneText   = textStyle{size: 13, colour: labelColour}
	tickText   = textStyle{size: 13, colour: labelColour}
	eventText  = textStyle{size: 13, colour: labelColour}
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

// sample is what the legend draws left of a label: a kind's glyph or an
// event's line.
type sample struct {
	kind  rollout.Kind
	event Event
	// glyph and line say which of them is drawn.
	glyph, line bool
}

// Room in the legend for a sample left of its name.
const (
	glyphSamplePx = 11
	lineSamplePx  = 8
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
	plot := Rect{Left: marginPx + math.Ceil(left) + 10, Right: float64(f.Width) - marginPx - 2}
	for i := range f.Panels {
		y += panelGapPx
		y = f.layoutPanel(&f.Panels[i], plot, y, i == len(f.Panels)-1)
	}
	f.Height = int(math.Ceil(y + marginPx))
}

// layoutLegend lays out the header from y down, and returns its bottom.
func (f *Figure) layoutLegend(y float64) float64 {
	sty := legendText
	x := float64(marginPx)
	add := func(txt string, s sample, room float64) {
		x += room
		l := sty.label(txt, x, y)
		l.sample = s
		f.Legend = append(f.Legend, l)
		x = l.Box.Right + legendItemPx
	}
	full := fmt.Sprintf("%s/s", thousands(int64(f.FullRate)))
	add(fmt.Sprintf("One lane per pod. Blue: requests it served per %s (full band: %s). Failed requests:", formatDuration(f.Bucket), full), sample{}, 0)
	for k := range rollout.NumKinds {
		if k == rollout.KindOther {
			continue // rare; still drawn, with its name in the title
		}
		add(k.String(), sample{kind: k, glyph: true}, glyphSamplePx)
	}
	y += legendLinePx
	x = marginPx
	add("Events:", sample{}, 0)
	for e := range numEvents {
		add(e.String(), sample{event: e, line: true}, lineSamplePx)
	}
	return y + sty.height()
}

// layoutPanel lays out p from y down, its lanes across plot, and returns
// its bottom; the last panel names its time axis.
func (f *Figure) layoutPanel(p *Panel, plot Rect, y float64, last bool) float64 {
	p.Texts = p.Texts[:0]
	for _, line := range wrap(titleText, p.Title, plot.Width()) {
		w := titleText.width(line)
		p.Texts = append(p.Texts, titleText.label(line, plot.Left+(plot.Width()-w)/2, y))
		y += titleText.height()
	}
	y += titleGapPx

	plot.Top = y
	x := timeAxis{plot: plot, end: f.End.Seconds()}
	for i := range p.Lanes {
		l := &p.Lanes[i]
		l.Box = Rect{Left: plot.Left, Right: plot.Right, Top: y, Bottom: y + lanePx}
		l.Band = Rect{Left: plot.Left, Right: plot.Right, Top: y + lanePx*(1-loadTop), Bottom: y + lanePx*(1-loadBottom)}
		for j := range l.Marks {
			l.Marks[j].X = x.at(l.Marks[j].At.Seconds())
		}
		l.Labels = labels(l.Marks, l.Box)
		name := laneText.label(l.Pod, 0, 0)
		name.Box = name.Box.moveTo(plot.Left-8-name.Box.Width(), y+(lanePx-name.Box.Height())/2)
		p.Texts = append(p.Texts, name)
		y += lanePx
	}
	plot.Bottom = y
	p.Plot = plot

	y += tickPx + tickGapPx
	for _, t := range x.ticks() {
		l := tickText.label(t.label, 0, 0)
		l.Box = l.Box.moveTo(t.x-l.Box.Width()/2, y)
		l.tick = true
		p.Texts = append(p.Texts, l)
	}
	y += tickText.height()
	if last {
		y += axisGapPx
		l := tickText.label("seconds since the start of the run", 0, 0)
		l.Box = l.Box.moveTo(plot.Left+(plot.Width()-l.Box.Width())/2, y)
		p.Texts = append(p.Texts, l)
		y += l.Box.Height()
	}
	return y
}

// Where the load band goes in a lane, as fractions of its height from its
// bottom.
const (
	loadBottom = 0.06
	loadTop    = 0.58
	labelRows  = 2
)

// labels lays out the events' labels at the top of a lane, right of their
// lines. Events closer than a label's gap share one label; a label that
// would run into the previous one on its row goes on the next row.
func labels(marks []Mark, lane Rect) []Label {
	sty := eventText
	var out []Label
	var rowEnd [labelRows]float64
	for i := range rowEnd {
		rowEnd[i] = lane.Left - 100
	}
	for i := 0; i < len(marks); {
		x := marks[i].X
		parts := []string{marks[i].Label}
		idx := []int{i}
		j := i + 1
		for ; j < len(marks) && marks[j].X-x < 8; j++ {
			parts = append(parts, marks[j].Label)
			idx = append(idx, j)
		}
		i = j
		txt := strings.Join(parts, " · ")
		w := sty.width(txt)
		tx := x + labelPadPx
		if tx+w > lane.Right {
			// At the right edge, the label goes left of its line.
			tx = x - labelPadPx - w
		}
		row := 0
		for r := range rowEnd {
			if tx > rowEnd[r]+6 {
				row = r
				break
			}
			if rowEnd[r] < rowEnd[row] {
				row = r
			}
		}
		rowEnd[row] = max(rowEnd[row], tx+w)
		l := sty.label(txt, tx, lane.Top+1+labelRowPx*float64(row))
		l.Marks = idx
		out = append(out, l)
	}
	return out
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
