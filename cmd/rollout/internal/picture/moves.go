package picture

import (
	"fmt"
	"image/color"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Moves are the websockets and event streams that a lane's pod sent away
// and those that reconnected to it, for the websocket and sse loads: a row
// of bars under the lane's load band, one pair per MoveBin of time with
// any, the departures' left of the reconnections', as tall as their count
// against the panel's fullest bin, so that the clients of a pod that sends
// them all away at once show as one tall bar, and those of a pod that
// spreads them as a low, even run of bars. A label gives the counts and
// the most in any MoveBin.
type Moves struct {
	// Departures and Reconnects are the moments, in order, at which the
	// pod sent a client away, and a client resumed on it.
	Departures, Reconnects []time.Duration
	// Box is the row, across the lane, under its load band.
	Box Rect
	// Bars are the bars drawn, in order of time.
	Bars []MoveBar
	// Label says how many left and came, and at most how many in any
	// MoveBin, such as "200 sent away · at most 12 in 100ms"; empty if
	// it fits nowhere clear of the event lines.
	Label Label
}

// MoveBar is one bar of [Moves].
type MoveBar struct {
	// Reconnect says it counts reconnections; departures otherwise.
	Reconnect bool
	// From is the start of its bin, from the start of the run.
	From time.Duration
	// Count is how many there were in the bin.
	Count int
	// Box is where it is drawn.
	Box Rect
}

// MoveBin is the width of the bins of [Moves]: the span in which the
// rollout command's report and lameducktest's RolloutResult count the
// peak of reconnections, so that the picture's peak is theirs.
const MoveBin = record.PeakWindow

// Sizes of a row of moves.
const (
	movesRowPx  = 40
	movesBarsPx = 22
	movesGapPx  = 2
)

var (
	departureColour = color.RGBA{0x00, 0x86, 0x8a, 0xff}
	reconnectColour = color.RGBA{0xb0, 0x70, 0x10, 0xff}
	movesText       = textStyle{size: 12, colour: labelColour}
)

// has reports whether the lane's pod sent any client away or took any
// back.
func (m *Moves) has() bool { return len(m.Departures)+len(m.Reconnects) > 0 }

// bins counts times per MoveBin.
func bins(times []time.Duration) map[int]int {
	b := map[int]int{}
	for _, t := range times {
		b[int(t/MoveBin)]++
	}
	return b
}

// mostInABin returns the most moves of the panel's lanes in one bin.
func mostInABin(p *Panel) int {
	most := 1
	for _, l := range p.Lanes {
		for _, ts := range [][]time.Duration{l.Moves.Departures, l.Moves.Reconnects} {
			for _, n := range bins(ts) {
				most = max(most, n)
			}
		}
	}
	return most
}

// layout places the bars of m in box, most moves in a bin at full height,
// and its label clear of the lane's event lines.
func (m *Moves) layout(box Rect, x timeAxis, most int, marks []Mark) {
	m.Box, m.Bars, m.Label = box, nil, Label{}
	bottom := box.Bottom - movesGapPx
	span := Rect{Left: box.Right, Right: box.Left}
	for i, ts := range [][]time.Duration{m.Departures, m.Reconnects} {
		for bin, n := range bins(ts) {
			from := time.Duration(bin) * MoveBin
			left, right := x.at(from.Seconds()), x.at((from + MoveBin).Seconds())
			mid := (left + right) / 2
			if i == 0 {
				right = mid
			} else {
				left = mid
			}
			right = max(right-barGapPx/2, left+1)
			left, right = max(left, box.Left), min(right, box.Right)
			if left >= right {
				continue
			}
			bar := Rect{Left: left, Right: right, Bottom: bottom, Top: bottom - max(minBarPx, movesBarsPx*float64(n)/float64(most))}
			m.Bars = append(m.Bars, MoveBar{Reconnect: i == 1, From: from, Count: n, Box: bar})
			span.Left, span.Right = min(span.Left, left), max(span.Right, right)
		}
	}
	sortBars(m.Bars)
	top := box.Top + movesGapPx
	for _, txt := range m.texts() {
		w := movesText.width(txt)
		lefts := []float64{span.Right + labelGapPx, span.Left - labelGapPx - w, span.Left}
		for _, mk := range marks {
			lefts = append(lefts, mk.X+linePadPx, mk.X-linePadPx-w)
		}
		for _, left := range append(lefts, box.Left+labelGapPx, box.Right-labelGapPx-w) {
			l := movesText.label(txt, left, top)
			if m.free(l.Box, box, marks) {
				m.Label = l
				return
			}
		}
	}
}

// texts are the label's texts to try, the longest first.
func (m *Moves) texts() []string {
	var long, short string
	add := func(times []time.Duration, what string) {
		if len(times) == 0 {
			return
		}
		peak := record.Peak(times)
		if long != "" {
			long += "; "
			short += "; "
		}
		long += fmt.Sprintf("%d %s · at most %d in any %s", len(times), what, peak, formatDuration(MoveBin))
		short += fmt.Sprintf("%d %s · ≤%d/%s", len(times), what, peak, formatDuration(MoveBin))
	}
	add(m.Departures, "sent away")
	add(m.Reconnects, "reconnected")
	return []string{long, short}
}

// free reports whether a label's box is inside the row, crosses no event
// line and no bar.
func (m *Moves) free(b, row Rect, marks []Mark) bool {
	if b.Left < row.Left || b.Right > row.Right {
		return false
	}
	for _, mk := range marks {
		if mk.X > b.Left-linePadPx && mk.X < b.Right+linePadPx {
			return false
		}
	}
	for _, bar := range m.Bars {
		if bar.Box.Left < b.Right && b.Left < bar.Box.Right && bar.Box.Top < b.Bottom {
			return false
		}
	}
	return true
}

// sortBars puts bars in order of time, departures first.
func sortBars(bars []MoveBar) {
	for i := 1; i < len(bars); i++ {
		for j := i; j > 0 && (bars[j].From < bars[j-1].From || bars[j].From == bars[j-1].From && !bars[j].Reconnect && bars[j-1].Reconnect); j-- {
			bars[j], bars[j-1] = bars[j-1], bars[j]
		}
	}
}
