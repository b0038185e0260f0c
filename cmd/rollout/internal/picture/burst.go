package picture

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lameduck/lameduck/internal/rollout"
)

// Burst is failed requests of one kind drawn together on a [Lane]: a
// glyph for a failure alone, or, where the glyphs of failures would
// overlap, a histogram of them with their count.
type Burst struct {
	// Kind is what the client saw.
	Kind rollout.Kind
	// Count is how many requests failed.
	Count int
	// From and To are when the first and the last failed.
	From, To time.Duration
	// Box is where its glyph or its bars are, on the row of its kind in
	// the lane: each kind that failed on a lane has a row of its own.
	Box Rect
	// Bars are the histogram of a burst of more than one failure: one bar
	// per few pixels of time with any failure, taller for more; nil for a
	// glyph.
	Bars []Rect
	// Label gives the count of a burst of more than one failure, beside
	// its bars and in its kind's colour; empty for a glyph, or if no place
	// was found for it.
	Label Label

	// bins counts the failures per bin, from the bin at Box.Left.
	bins []int
}

// Failures. Each kind that failed on a lane has a row of its own in the
// lane's body, in the order of the kinds, so that kinds never mix however
// many failed at once. A failure is a glyph where it is alone; failures
// whose glyphs would overlap, closer to each other than a glyph's width,
// are a burst drawn as a histogram: a bar per binPx pixels of time with
// any, as tall as the square root of its share of the panel's fullest,
// and the burst's count beside it. The count is placed as event labels are: inside the plot,
// clear of every event line and of the row's other counts, glyphs and
// bars; right of the bars, or just past a line next to them, or else left.
const (
	kindRowPx    = 14
	bodyPadPx    = 2
	glyphPx      = 9
	binPx        = 4
	barGapPx     = 1
	minBarPx     = 2
	countGapPx   = 3
	countPadPx   = 3
	countSlidePx = 60
)

var countText = textStyle{size: 11, bold: true}

// kindsOf returns the kinds of failures, in order.
func kindsOf(failures []rollout.FailureAt) []rollout.Kind {
	var seen [rollout.NumKinds]bool
	for _, f := range failures {
		if f.Kind >= 0 && f.Kind < rollout.NumKinds {
			seen[f.Kind] = true
		}
	}
	var kinds []rollout.Kind
	for k := range rollout.NumKinds {
		if seen[k] {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// bursts groups a lane's failures of kind into bursts on the row from top
// to top+kindRowPx. Bars are as tall as a bin of one failure until
// scaleBars sets their heights.
func bursts(failures []rollout.FailureAt, kind rollout.Kind, x timeAxis, top float64) []Burst {
	type at struct {
		t time.Duration
		x float64
	}
	var ats []at
	for _, f := range failures {
		if f.Kind == kind {
			fx := min(max(x.at(f.At.Seconds()), x.plot.Left), x.plot.Right)
			ats = append(ats, at{f.At, fx})
		}
	}
	slices.SortStableFunc(ats, func(a, b at) int { return cmp.Compare(a.x, b.x) })
	row := Rect{Left: x.plot.Left, Right: x.plot.Right, Top: top + 1, Bottom: top + kindRowPx - 1}
	var out []Burst
	for i := 0; i < len(ats); {
		j := i + 1
		for j < len(ats) && ats[j].x-ats[j-1].x < glyphPx {
			j++
		}
		b := Burst{Kind: kind, Count: j - i, From: ats[i].t, To: ats[i].t}
		for _, a := range ats[i:j] {
			b.From, b.To = min(b.From, a.t), max(b.To, a.t)
		}
		if b.Count == 1 {
			b.Box = Rect{Left: ats[i].x - glyphPx/2, Right: ats[i].x + glyphPx/2, Top: row.Top, Bottom: row.Bottom}
		} else {
			bin := func(fx float64) int { return int((fx - x.plot.Left) / binPx) }
			first, last := bin(ats[i].x), bin(ats[j-1].x)
			b.bins = make([]int, last-first+1)
			for _, a := range ats[i:j] {
				b.bins[bin(a.x)-first]++
			}
			left := x.plot.Left + float64(first)*binPx
			b.Box = Rect{Left: left, Right: left + float64(len(b.bins))*binPx, Top: row.Top, Bottom: row.Bottom}
			for k, n := range b.bins {
				if n > 0 {
					l := left + float64(k)*binPx
					b.Bars = append(b.Bars, Rect{Left: l, Right: l + binPx - barGapPx, Top: row.Bottom - minBarPx, Bottom: row.Bottom})
				}
			}
		}
		out = append(out, b)
		i = j
	}
	return out
}

// scaleBars sets the heights of the bars of a panel's bursts: the square
// root of their share of the fullest bin's count, so that a bin of a few
// failures stays visible beside one of hundreds (the counts are written).
func scaleBars(p *Panel) {
	most := 1
	for _, l := range p.Lanes {
		for _, b := range l.Bursts {
			for _, n := range b.bins {
				most = max(most, n)
			}
		}
	}
	for i := range p.Lanes {
		for j := range p.Lanes[i].Bursts {
			b := &p.Lanes[i].Bursts[j]
			k := 0
			for _, n := range b.bins {
				if n > 0 {
					bar := &b.Bars[k]
					bar.Top = bar.Bottom - max(minBarPx, b.Box.Height()*math.Sqrt(float64(n)/float64(most)))
					k++
				}
			}
		}
	}
}

// countLabels places the counts of a lane's bursts of more than one
// failure, by the rule above.
func countLabels(l *Lane) {
	for i := range l.Bursts {
		b := &l.Bursts[i]
		if b.Count < 2 {
			continue
		}
		b.Label = l.placeCount(b)
	}
}

// placeCount returns b's count label, by the rule above, or an empty
// label if it fits nowhere.
func (l *Lane) placeCount(b *Burst) Label {
	sty := countText
	sty.colour = kindStyles[b.Kind].Color
	top := b.Box.Top + (b.Box.Height()-sty.height())/2
	for _, txt := range []string{fmt.Sprintf("%d %s", b.Count, b.Kind), fmt.Sprint(b.Count)} {
		w := sty.width(txt)
		xs := []float64{b.Box.Right + countGapPx}
		for _, m := range l.Marks {
			if m.X > b.Box.Right-countPadPx && m.X < b.Box.Right+countSlidePx {
				xs = append(xs, m.X+countPadPx+1)
			}
		}
		slices.Sort(xs)
		xs = append(xs, b.Box.Left-countGapPx-w)
		var lefts []float64
		for _, m := range l.Marks {
			if m.X < b.Box.Left+countPadPx && m.X > b.Box.Left-countSlidePx {
				lefts = append(lefts, m.X-countPadPx-1-w)
			}
		}
		slices.Sort(lefts)
		slices.Reverse(lefts)
		for _, x := range append(xs, lefts...) {
			lb := sty.label(txt, x, top)
			if l.countFree(lb.Box, b) {
				return lb
			}
		}
	}
	return Label{}
}

// countFree reports whether box, a count label for b, is inside the lane,
// crosses no event line and keeps clear of the other bursts and counts on
// b's row.
func (l *Lane) countFree(box Rect, b *Burst) bool {
	if box.Left < l.Box.Left || box.Right > l.Box.Right {
		return false
	}
	for _, m := range l.Marks {
		if m.X > box.Left-countPadPx && m.X < box.Right+countPadPx {
			return false
		}
	}
	for i := range l.Bursts {
		o := &l.Bursts[i]
		if o.Kind != b.Kind {
			continue
		}
		clear := func(r Rect) bool { return r.Right+countPadPx <= box.Left || box.Right+countPadPx <= r.Left }
		if (o != b && !clear(o.Box)) || (o.Label.Text != "" && !clear(o.Label.Box)) {
			return false
		}
	}
	return true
}
