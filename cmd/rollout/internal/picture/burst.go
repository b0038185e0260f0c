package picture

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Burst is failed requests of one kind drawn together on a [Lane]: a
// glyph for a failure alone, or, where the glyphs of failures would
// overlap, a histogram of them with their count.
type Burst struct {
	// Kind is what the client saw.
	Kind record.Kind
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

	// ats are its failures, in order of place; bins counts them per bin of
	// bars, from the bin at Box.Left.
	ats  []failureAt
	bins []int
}

// failureAt is a failure's time and place.
type failureAt struct {
	t time.Duration
	x float64
}

// Failures. Each kind that failed on a lane has a row of its own in the
// lane's body, in the order of the kinds, so that kinds never mix however
// many failed at once. A failure is a glyph where it is alone; failures
// whose glyphs would overlap, closer to each other than a glyph's width,
// are a burst drawn as a histogram: a bar per binPx pixels of time with
// any, as tall as the square root of its share of the panel's fullest,
// and the burst's count beside it. The count is placed as event labels
// are: inside the plot, clear of every event line and of the row's other
// counts, glyphs and bars; right of the bars, or just past a line next to
// them, or else left. A burst whose count fits nowhere takes in the next
// burst of its row (the last, the one before), so that every failure is
// counted.
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
func kindsOf(failures []record.Failure) []record.Kind {
	var seen [record.NumKinds]bool
	for _, f := range failures {
		if f.Kind >= 0 && f.Kind < record.NumKinds {
			seen[f.Kind] = true
		}
	}
	var kinds []record.Kind
	for k := range record.NumKinds {
		if seen[k] {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// bursts groups a lane's failures of kind into bursts on the row from top
// to top+kindRowPx, and places their counts. Bars are as tall as a bin of
// one failure until scaleBars sets their heights.
func bursts(l *Lane, kind record.Kind, x timeAxis, top float64) []Burst {
	var ats []failureAt
	for _, f := range l.Failures {
		if f.Kind == kind {
			fx := min(max(x.at(f.At.Seconds()), x.plot.Left), x.plot.Right)
			ats = append(ats, failureAt{f.At, fx})
		}
	}
	slices.SortStableFunc(ats, func(a, b failureAt) int { return cmp.Compare(a.x, b.x) })
	row := Rect{Left: x.plot.Left, Right: x.plot.Right, Top: top + 1, Bottom: top + kindRowPx - 1}
	var bs []Burst
	for i := 0; i < len(ats); {
		j := i + 1
		for j < len(ats) && ats[j].x-ats[j-1].x < glyphPx {
			j++
		}
		bs = append(bs, newBurst(kind, ats[i:j], row))
		i = j
	}
	return l.countBursts(bs, row)
}

// newBurst returns the burst of the failures ats, in order of place, on
// row.
func newBurst(kind record.Kind, ats []failureAt, row Rect) Burst {
	b := Burst{Kind: kind, Count: len(ats), From: ats[0].t, To: ats[0].t, ats: ats}
	for _, a := range ats {
		b.From, b.To = min(b.From, a.t), max(b.To, a.t)
	}
	if b.Count == 1 {
		b.Box = Rect{Left: ats[0].x - glyphPx/2, Right: ats[0].x + glyphPx/2, Top: row.Top, Bottom: row.Bottom}
		return b
	}
	bin := func(fx float64) int { return int((fx - row.Left) / binPx) }
	first, last := bin(ats[0].x), bin(ats[len(ats)-1].x)
	b.bins = make([]int, last-first+1)
	for _, a := range ats {
		b.bins[bin(a.x)-first]++
	}
	// The last bin of the plot may be cut by its right edge.
	left := row.Left + float64(first)*binPx
	b.Box = Rect{Left: left, Right: min(left+float64(len(b.bins))*binPx, row.Right), Top: row.Top, Bottom: row.Bottom}
	for k, n := range b.bins {
		if n > 0 {
			l := left + float64(k)*binPx
			b.Bars = append(b.Bars, Rect{Left: l, Right: min(l+binPx-barGapPx, row.Right), Top: row.Bottom - minBarPx, Bottom: row.Bottom})
		}
	}
	return b
}

// merge returns the burst of the failures of a and b, a left of b.
func merge(a, b Burst, row Rect) Burst {
	return newBurst(a.Kind, append(slices.Clip(a.ats), b.ats...), row)
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

// countBursts places the counts of bs, the bursts of a row in order of
// place, by the rule above, and returns them: a burst whose count fits
// nowhere is merged with the next one on the row, or the last with the one
// before, and its count placed again.
func (l *Lane) countBursts(bs []Burst, row Rect) []Burst {
	var done []Burst
	for i := 0; i < len(bs); i++ {
		b := bs[i]
		for b.Count > 1 {
			if b.Label = l.placeCount(&b, done, bs[i+1:]); b.Label.Text != "" {
				break
			}
			if i+1 < len(bs) {
				done, bs[i+1] = absorb(done, merge(b, bs[i+1], row), row)
				b = Burst{}
				break
			}
			if len(done) == 0 {
				break // uncounted
			}
			done, b = absorb(done[:len(done)-1], merge(done[len(done)-1], b, row), row)
		}
		if b.Count > 0 {
			done = append(done, b)
		}
	}
	return done
}

// absorb merges into b, a burst just merged, the bursts of done, in order
// of place left of it, from the first whose box or count its box now
// covers (their counts would be drawn on its bars), until it covers none.
func absorb(done []Burst, b Burst, row Rect) ([]Burst, Burst) {
	covered := func(r Rect) bool { return r.Right > b.Box.Left-countPadPx && r.Left < b.Box.Right+countPadPx }
	for {
		k := slices.IndexFunc(done, func(d Burst) bool { return covered(d.Box) || (d.Label.Text != "" && covered(d.Label.Box)) })
		if k < 0 {
			return done, b
		}
		for j := len(done) - 1; j >= k; j-- {
			b = merge(done[j], b, row)
		}
		done = done[:k]
	}
}

// placeCount returns b's count label, by the rule above, clear of the
// row's other bursts, or an empty label if it fits nowhere.
func (l *Lane) placeCount(b *Burst, others ...[]Burst) Label {
	sty := countText
	sty.colour = kindStyles[b.Kind].Color
	top := b.Box.Top + (b.Box.Height()-sty.height())/2
	for _, txt := range []string{fmt.Sprintf("%d %s", b.Count, b.Kind), fmt.Sprint(b.Count)} {
		w := sty.width(txt)
		rights := []float64{b.Box.Right + countGapPx}
		lefts := []float64{b.Box.Left - countGapPx - w}
		for _, m := range l.Marks {
			if m.X > b.Box.Right-countPadPx && m.X < b.Box.Right+countSlidePx {
				rights = append(rights, m.X+countPadPx+1)
			}
			if m.X < b.Box.Left+countPadPx && m.X > b.Box.Left-countSlidePx {
				lefts = append(lefts, m.X-countPadPx-1-w)
			}
		}
		slices.Sort(rights)
		slices.Sort(lefts)
		slices.Reverse(lefts)
		for _, x := range append(rights, lefts...) {
			lb := sty.label(txt, x, top)
			if l.countFree(lb.Box, others...) {
				return lb
			}
		}
	}
	return Label{}
}

// countFree reports whether box, a count label, is inside the lane,
// crosses no event line and keeps clear of the bursts others and their
// counts.
func (l *Lane) countFree(box Rect, others ...[]Burst) bool {
	if box.Left < l.Box.Left || box.Right > l.Box.Right {
		return false
	}
	for _, m := range l.Marks {
		if m.X > box.Left-countPadPx && m.X < box.Right+countPadPx {
			return false
		}
	}
	apart := func(r Rect) bool { return r.Right+countPadPx <= box.Left || box.Right+countPadPx <= r.Left }
	for _, bs := range others {
		for _, o := range bs {
			if !apart(o.Box) || (o.Label.Text != "" && !apart(o.Label.Box)) {
				return false
			}
		}
	}
	return true
}
