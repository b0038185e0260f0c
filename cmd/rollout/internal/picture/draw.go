package picture

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"
	"strings"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/lameduck/lameduck/internal/rollout"
)

// dpi maps the picture's pixels to the plotting library's points.
const dpi = 96

func px(n float64) vg.Length { return vg.Length(n) * vg.Inch / dpi }

// Colours and shapes. Failures are glyphs and events are lines, so that a
// red cross (a refused request) never reads as the red line of a SIGTERM.
var (
	loadFill    = color.RGBA{0xa6, 0xc8, 0xe8, 0xff}
	loadEdge    = color.RGBA{0x3b, 0x75, 0xaf, 0xff}
	laneRule    = color.RGBA{0xcc, 0xcc, 0xcc, 0xff}
	laneShade   = color.RGBA{0xf6, 0xf6, 0xf6, 0xff}
	labelColour = color.RGBA{0x22, 0x22, 0x22, 0xff}

	kindStyles = [rollout.NumKinds]draw.GlyphStyle{
		rollout.KindRefused: {Shape: draw.CrossGlyph{}, Color: color.RGBA{0xc0, 0x00, 0x20, 0xff}, Radius: px(4)},
		rollout.KindReset:   {Shape: draw.PyramidGlyph{}, Color: color.RGBA{0xe0, 0x70, 0x00, 0xff}, Radius: px(4)},
		rollout.KindEOF:     {Shape: draw.RingGlyph{}, Color: color.RGBA{0xa0, 0x20, 0xb0, 0xff}, Radius: px(4)},
		rollout.Kind5xx:     {Shape: draw.BoxGlyph{}, Color: color.RGBA{0x8c, 0x56, 0x4b, 0xff}, Radius: px(3.5)},
		rollout.KindTimeout: {Shape: draw.PlusGlyph{}, Color: color.RGBA{0x00, 0x00, 0x00, 0xff}, Radius: px(4.5)},
		rollout.KindOther:   {Shape: draw.CircleGlyph{}, Color: color.RGBA{0x77, 0x77, 0x77, 0xff}, Radius: px(3)},
	}
	eventStyles = [numEvents]draw.LineStyle{
		EventReady:          {Color: color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, Width: px(2)},
		EventTerm:           {Color: color.RGBA{0xd6, 0x27, 0x28, 0xff}, Width: px(2)},
		EventRemoved:        {Color: color.RGBA{0xff, 0x8c, 0x00, 0xff}, Width: px(2), Dashes: []vg.Length{px(5), px(3)}},
		EventListenerClosed: {Color: color.RGBA{0x80, 0x50, 0xc0, 0xff}, Width: px(2), Dashes: []vg.Length{px(2), px(2)}},
		EventExit:           {Color: color.Black, Width: px(2.5)},
	}
)

// Where things go in a lane, as fractions of its height from its bottom.
const (
	loadBottom    = 0.06
	loadTop       = 0.58
	failureBottom = 0.08
	failureTop    = 0.64
	labelRows     = 2
)

// Write draws the picture to w as "png" or "svg".
func (f *Figure) Write(w io.Writer, format string) error {
	width, height := px(float64(f.Width)), px(float64(f.Height))
	var c vg.CanvasWriterTo
	switch format {
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(dpi),
			vgimg.UseBackgroundColor(color.White))}
	case "svg":
		c = vgsvg.New(width, height)
	default:
		return fmt.Errorf("picture: unknown format %q; use png or svg", format)
	}
	dc := draw.New(c)
	f.drawHeader(draw.Crop(dc, 0, 0, height-px(headerPx), 0))
	body := draw.Crop(dc, 0, 0, px(footerPx), -px(headerPx))
	plots := make([][]*plot.Plot, len(f.Panels))
	for i, p := range f.Panels {
		plots[i] = []*plot.Plot{f.panelPlot(p, i == len(f.Panels)-1)}
	}
	tiles := draw.Tiles{Rows: len(f.Panels), Cols: 1, PadTop: px(4), PadBottom: px(4), PadLeft: px(8), PadRight: px(14), PadY: px(panelGapPx)}
	canvases := plot.Align(plots, tiles, body)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	_, err := c.WriteTo(w)
	return err
}

func textStyle(size float64, bold bool) draw.TextStyle {
	fnt := plot.DefaultFont
	fnt.Variant = "Sans"
	if bold {
		fnt.Weight = xfont.WeightBold
	}
	return draw.TextStyle{
		Color:   labelColour,
		Font:    font.From(fnt, px(size)),
		XAlign:  draw.XLeft,
		YAlign:  draw.YBottom,
		Handler: plot.DefaultTextHandler,
	}
}

// drawHeader explains the picture in two lines, with the glyphs and lines
// it uses, so that nobody has to look for a legend.
func (f *Figure) drawHeader(c draw.Canvas) {
	sty := textStyle(14, false)
	x := c.Min.X + px(14)
	y1 := c.Max.Y - px(22)
	y2 := c.Max.Y - px(47)
	full := fmt.Sprintf("%s/s", thousands(int64(f.FullRate)))
	intro := fmt.Sprintf("One lane per pod. Blue: requests it served per %s (full band: %s). Failed requests:", formatDuration(f.Bucket), full)
	c.FillText(sty, vg.Point{X: x, Y: y1}, intro)
	x += sty.Width(intro) + px(12)
	for k := range rollout.NumKinds {
		if k == rollout.KindOther {
			continue // rare; still drawn, with its name in the title
		}
		c.DrawGlyph(kindStyles[k], vg.Point{X: x, Y: y1 + px(5)})
		x += px(9)
		c.FillText(sty, vg.Point{X: x, Y: y1}, rollout.Kind(k).String())
		x += sty.Width(rollout.Kind(k).String()) + px(12)
	}
	x = c.Min.X + px(14)
	c.FillText(sty, vg.Point{X: x, Y: y2}, "Events:")
	x += sty.Width("Events:") + px(10)
	for e := range numEvents {
		c.StrokeLine2(eventStyles[e], x, y2-px(2), x, y2+px(13))
		x += px(6)
		c.FillText(sty, vg.Point{X: x, Y: y2}, e.String())
		x += sty.Width(e.String()) + px(16)
	}
}

// panelPlot returns the plot of one panel; the last one labels its time
// axis.
func (f *Figure) panelPlot(p Panel, last bool) *plot.Plot {
	plt := plot.New()
	plt.BackgroundColor = color.Transparent
	plt.Title.Text = p.Title
	plt.Title.TextStyle = textStyle(15, true)
	plt.Title.TextStyle.XAlign = draw.XCenter
	plt.Title.Padding = px(8)
	plt.X.Min, plt.X.Max = 0, f.End.Seconds()
	if last {
		plt.X.Label.Text = "seconds since the start of the run"
		plt.X.Label.TextStyle = textStyle(13, false)
		plt.X.Label.TextStyle.XAlign = draw.XCenter
		plt.X.Label.TextStyle.YAlign = draw.YTop
	}
	plt.X.Tick.Label = textStyle(13, false)
	plt.X.Tick.Label.XAlign = draw.XCenter
	plt.X.Tick.Label.YAlign = draw.YTop
	plt.X.Tick.Marker = secondTicks{}
	n := len(p.Lanes)
	plt.Y.Min, plt.Y.Max = 0, float64(n)
	ticks := make([]plot.Tick, n)
	for i, l := range p.Lanes {
		ticks[i] = plot.Tick{Value: laneBase(n, i) + 0.5, Label: l.Pod}
	}
	plt.Y.Tick.Marker = plot.ConstantTicks(ticks)
	plt.Y.Tick.Label = textStyle(13, false)
	plt.Y.Tick.Label.XAlign = draw.XRight
	plt.Y.Tick.Label.YAlign = draw.YCenter
	plt.Y.Tick.Length = 0
	plt.Add(lanesPlotter{fig: f, panel: p})
	return plt
}

// laneBase returns the bottom of lane i of n: the first pod on top.
func laneBase(n, i int) float64 { return float64(n - 1 - i) }

// secondTicks marks every second, or every few seconds on a long axis.
type secondTicks struct{}

func (secondTicks) Ticks(lo, hi float64) []plot.Tick {
	// A step of 1, 2 or 5 times a power of ten, for about a dozen ticks,
	// labelled with as many decimals as the step has.
	raw := (hi - lo) / 12
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
	var ticks []plot.Tick
	for i := math.Ceil(lo / step); i*step <= hi+step*1e-9; i++ {
		v := i * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
	}
	return ticks
}

// lanesPlotter draws a panel's lanes: shading, the load served, the
// failures and the events with their labels.
type lanesPlotter struct {
	fig   *Figure
	panel Panel
}

func (lp lanesPlotter) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	n := len(lp.panel.Lanes)
	bucket := lp.fig.Bucket.Seconds()
	for i, l := range lp.panel.Lanes {
		base := laneBase(n, i)
		if i%2 == 1 {
			c.FillPolygon(laneShade, []vg.Point{
				{X: c.Min.X, Y: trY(base)}, {X: c.Max.X, Y: trY(base)},
				{X: c.Max.X, Y: trY(base + 1)}, {X: c.Min.X, Y: trY(base + 1)},
			})
		}
		if i > 0 {
			c.StrokeLine2(draw.LineStyle{Color: laneRule, Width: px(1)}, c.Min.X, trY(base+1), c.Max.X, trY(base+1))
		}

		// The load: a step line of the rate per interval, filled down to
		// the band's bottom.
		bottom := base + loadBottom
		height := loadTop - loadBottom
		first := 0
		for first < len(l.Served) && l.Served[first] == 0 {
			first++
		}
		if first < len(l.Served) {
			pts := []vg.Point{{X: trX(float64(first) * bucket), Y: trY(bottom)}}
			for b := first; b < len(l.Served); b++ {
				y := trY(bottom + height*min(float64(l.Served[b])/bucket/lp.fig.FullRate, 1))
				pts = append(pts, vg.Point{X: trX(float64(b) * bucket), Y: y}, vg.Point{X: trX(float64(b+1) * bucket), Y: y})
			}
			pts = append(pts, vg.Point{X: trX(float64(len(l.Served)) * bucket), Y: trY(bottom)})
			c.FillPolygon(loadFill, c.ClipPolygonX(pts))
			c.StrokeLines(draw.LineStyle{Color: loadEdge, Width: px(1)}, c.ClipLinesX(pts[1:len(pts)-1])...)
		}

		// The events, under the failures so that none hides one; the exit
		// last, so that a listener closing as the process exits does
		// not hide it.
		for _, exit := range []bool{false, true} {
			for _, m := range l.Marks {
				if (m.Event == EventExit) == exit {
					x := trX(m.At.Seconds())
					c.StrokeLine2(eventStyles[m.Event], x, trY(base+0.02), x, trY(base+0.98))
				}
			}
		}
		lp.labels(c, trX, trY(base+1), l.Marks)

		// The failures, spread over the band's height by a low-discrepancy
		// sequence, so that a burst reads as a cloud as dense as it was.
		for j, fa := range l.Failures {
			spread := math.Mod(float64(j)*0.6180339887, 1)
			y := base + failureBottom + (failureTop-failureBottom)*spread
			pt := vg.Point{X: trX(fa.At.Seconds()), Y: trY(y)}
			if c.Contains(pt) {
				c.DrawGlyph(kindStyles[fa.Kind], pt)
			}
		}
	}
}

// labels writes the events' labels at the top of a lane, right of their
// lines. Events closer than a label's gap share one label; a label that
// would run into the previous one on its row goes on the next row.
func (lp lanesPlotter) labels(c draw.Canvas, trX func(float64) vg.Length, top vg.Length, marks []Mark) {
	sty := textStyle(13, false)
	rowH := px(16)
	var rowEnd [labelRows]vg.Length
	for i := range rowEnd {
		rowEnd[i] = c.Min.X - px(100)
	}
	for i := 0; i < len(marks); {
		x := trX(marks[i].At.Seconds())
		parts := []string{marks[i].Label}
		j := i + 1
		for ; j < len(marks) && trX(marks[j].At.Seconds())-x < px(8); j++ {
			parts = append(parts, marks[j].Label)
		}
		i = j
		txt := strings.Join(parts, " · ")
		w := sty.Width(txt)
		tx := x + px(4)
		if tx+w > c.Max.X {
			// At the right edge, the label goes left of its line.
			tx = x - px(4) - w
		}
		row := 0
		for r := range rowEnd {
			if tx > rowEnd[r]+px(6) {
				row = r
				break
			}
			if rowEnd[r] < rowEnd[row] {
				row = r
			}
		}
		rowEnd[row] = max(rowEnd[row], tx+w)
		c.FillText(sty, vg.Point{X: tx, Y: top - rowH*vg.Length(row+1)}, txt)
	}
}
