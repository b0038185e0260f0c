package picture

import (
	"fmt"
	"image/color"
	"io"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Colours and shapes. Failures are glyphs, or short bars, on rows of their
// own, and events are lines across the lane, so that a red cross (a
// refused request) never reads as the red line of a SIGTERM.
var (
	loadFill   = color.RGBA{0xa6, 0xc8, 0xe8, 0xff}
	loadEdge   = color.RGBA{0x3b, 0x75, 0xaf, 0xff}
	laneRule   = color.RGBA{0xcc, 0xcc, 0xcc, 0xff}
	laneShade  = color.RGBA{0xf6, 0xf6, 0xf6, 0xff}
	labelVeil  = color.NRGBA{0xff, 0xff, 0xff, 0xc0} // behind a count over the load
	axisColour = color.RGBA{0x44, 0x44, 0x44, 0xff}

	kindStyles = [record.NumKinds]draw.GlyphStyle{
		record.KindRefused: {Shape: draw.CrossGlyph{}, Color: color.RGBA{0xc0, 0x00, 0x20, 0xff}, Radius: px(4)},
		record.KindReset:   {Shape: draw.PyramidGlyph{}, Color: color.RGBA{0xe0, 0x70, 0x00, 0xff}, Radius: px(4)},
		record.KindEOF:     {Shape: draw.RingGlyph{}, Color: color.RGBA{0xa0, 0x20, 0xb0, 0xff}, Radius: px(4)},
		record.Kind5xx:     {Shape: draw.BoxGlyph{}, Color: color.RGBA{0x8c, 0x56, 0x4b, 0xff}, Radius: px(3.5)},
		record.KindTimeout: {Shape: draw.PlusGlyph{}, Color: color.RGBA{0x00, 0x00, 0x00, 0xff}, Radius: px(4.5)},
		record.KindOther:   {Shape: draw.CircleGlyph{}, Color: color.RGBA{0x77, 0x77, 0x77, 0xff}, Radius: px(3)},
	}
	eventStyles = [numEvents]draw.LineStyle{
		EventReady:          {Color: color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, Width: px(2)},
		EventTerm:           {Color: color.RGBA{0xd6, 0x27, 0x28, 0xff}, Width: px(2)},
		EventRemoved:        {Color: color.RGBA{0xff, 0x8c, 0x00, 0xff}, Width: px(2), Dashes: []vg.Length{px(5), px(3)}},
		EventListenerClosed: {Color: color.RGBA{0x80, 0x50, 0xc0, 0xff}, Width: px(2), Dashes: []vg.Length{px(2), px(2)}},
		EventExit:           {Color: color.Black, Width: px(2.5)},
	}
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
	d := drawing{c: draw.New(c), height: float64(f.Height)}
	for _, l := range f.Legend {
		d.sample(l)
		d.text(l)
	}
	for _, p := range f.Panels {
		d.panel(f, p)
	}
	_, err := c.WriteTo(w)
	return err
}

// drawing draws on a canvas in the figure's pixels, y down.
type drawing struct {
	c      draw.Canvas
	height float64
}

func (d drawing) pt(x, y float64) vg.Point { return vg.Point{X: px(x), Y: px(d.height - y)} }

func (d drawing) line(sty draw.LineStyle, x0, y0, x1, y1 float64) {
	d.c.StrokeLines(sty, []vg.Point{d.pt(x0, y0), d.pt(x1, y1)})
}

func (d drawing) fill(c color.Color, r Rect) {
	d.c.FillPolygon(c, []vg.Point{d.pt(r.Left, r.Top), d.pt(r.Right, r.Top), d.pt(r.Right, r.Bottom), d.pt(r.Left, r.Bottom)})
}

// text writes l in its box: its baseline is the box's top plus the font's
// ascent, as layout measured it.
func (d drawing) text(l Label) {
	if l.Text == "" {
		return
	}
	ascent, _ := l.style.extents()
	d.c.SetColor(l.style.colour)
	d.c.FillString(l.style.face(), d.pt(l.Box.Left, l.Box.Top+ascent), l.Text)
}

// sample draws a legend's glyph or line left of its label.
func (d drawing) sample(l Label) {
	mid := (l.Box.Top + l.Box.Bottom) / 2
	switch {
	case l.sample.glyph:
		d.c.DrawGlyphNoClip(kindStyles[l.sample.kind], d.pt(l.Box.Left-glyphSamplePx/2, mid))
	case l.sample.bars:
		for i, h := range []float64{0.3, 1, 0.6, 0.2} {
			left := l.Box.Left - barsSamplePx + float64(i)*binPx
			bar := Rect{Left: left, Right: left + binPx - barGapPx, Top: l.Box.Bottom - 2 - h*(l.Box.Height()-4), Bottom: l.Box.Bottom - 2}
			d.fill(axisColour, bar)
		}
	case l.sample.move != nil:
		d.fill(l.sample.move, Rect{Left: l.Box.Left - moveSamplePx + 2, Right: l.Box.Left - 4, Top: l.Box.Top + 3, Bottom: l.Box.Bottom - 1})
	case l.sample.line:
		x := l.Box.Left - lineSamplePx/2 - 1
		d.line(eventStyles[l.sample.event], x, l.Box.Top+1, x, l.Box.Bottom-1)
	}
}

// panel draws one panel: its lanes, its axes and its text.
func (d drawing) panel(f *Figure, p Panel) {
	for i, l := range p.Lanes {
		if i%2 == 1 {
			d.fill(laneShade, l.Box)
		}
		if i > 0 {
			d.line(draw.LineStyle{Color: laneRule, Width: px(1)}, l.Box.Left, l.Box.Top, l.Box.Right, l.Box.Top)
		}
		d.load(f, p, l)
		// The events, under the failures so that none hides one; the exit
		// last, so that a listener closing as the process exits does not
		// hide it.
		for _, exit := range []bool{false, true} {
			for _, m := range l.Marks {
				if (m.Event == EventExit) == exit {
					d.line(eventStyles[m.Event], m.X, l.Box.Top+1, m.X, l.Box.Bottom-1)
				}
			}
		}
		for _, lb := range l.Labels {
			d.text(lb)
		}
		d.moves(l.Moves)
		d.failures(l)
	}
	axis := draw.LineStyle{Color: axisColour, Width: px(1)}
	if len(p.Lanes) > 0 {
		d.line(axis, p.Plot.Left, p.Plot.Top, p.Plot.Left, p.Plot.Bottom)
		d.line(axis, p.Plot.Left, p.Plot.Bottom, p.Plot.Right, p.Plot.Bottom)
	}
	for _, t := range p.Texts {
		if t.tick {
			x := (t.Box.Left + t.Box.Right) / 2
			d.line(axis, x, p.Plot.Bottom, x, p.Plot.Bottom+tickPx)
		}
		d.text(t)
	}
}

// load draws the requests a lane's pod served: a step line of the rate per
// interval, filled down to the band's bottom.
func (d drawing) load(f *Figure, p Panel, l Lane) {
	first := 0
	for first < len(l.Served) && l.Served[first] == 0 {
		first++
	}
	if first == len(l.Served) {
		return
	}
	bucket := f.Bucket.Seconds()
	x := p.axis(p.Plot)
	band := l.Band
	pts := []vg.Point{d.pt(x.at(float64(first)*bucket), band.Bottom)}
	for b := first; b < len(l.Served); b++ {
		y := band.Bottom - band.Height()*min(float64(l.Served[b])/bucket/f.FullRate, 1)
		pts = append(pts, d.pt(x.at(float64(b)*bucket), y), d.pt(x.at(float64(b+1)*bucket), y))
	}
	pts = append(pts, d.pt(x.at(float64(len(l.Served))*bucket), band.Bottom))
	c := draw.Crop(d.c, px(p.Plot.Left), px(p.Plot.Right)-d.c.Max.X, 0, 0)
	c.FillPolygon(loadFill, c.ClipPolygonX(pts))
	c.StrokeLines(draw.LineStyle{Color: loadEdge, Width: px(1)}, c.ClipLinesX(pts[1:len(pts)-1])...)
}

// failures draws a lane's bursts of failures: a glyph, or bars and their
// count.
func (d drawing) failures(l Lane) {
	for _, b := range l.Bursts {
		if b.Bars == nil {
			d.c.DrawGlyphNoClip(kindStyles[b.Kind], d.pt((b.Box.Left+b.Box.Right)/2, (b.Box.Top+b.Box.Bottom)/2))
			continue
		}
		for _, bar := range b.Bars {
			d.fill(kindStyles[b.Kind].Color, bar)
		}
		// On a veil, so that the load's line under a count does not
		// strike it through.
		d.fill(labelVeil, b.Label.Box)
		d.text(b.Label)
	}
}

// moves draws the bars of a lane's moves and their label.
func (d drawing) moves(m Moves) {
	for _, b := range m.Bars {
		c := departureColour
		if b.Reconnect {
			c = reconnectColour
		}
		d.fill(c, b.Box)
	}
	d.text(m.Label)
}
