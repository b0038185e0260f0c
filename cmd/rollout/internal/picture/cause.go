package picture

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// cause is why a request failed, as its kind and its pod's events tell.
type cause int

const (
	// causeServing is a failure before the pod's SIGTERM.
	causeServing cause = iota
	// causeClosed is a reset or an EOF after the SIGTERM: the server
	// closed a connection with a request on its way, by closing it or by
	// exiting; which of them came first, a few milliseconds apart, tells
	// nothing more.
	causeClosed
	// causeNotListening is a refused connection after the SIGTERM: the
	// load balancer routed it to a pod that no longer listened.
	causeNotListening
	// causeKilled is a reset or an EOF as the pod was killed at the end
	// of its grace period.
	causeKilled
	// causeTimeout, cause5xx and causeOther are the other kinds after the
	// SIGTERM.
	causeTimeout
	cause5xx
	causeOther
	// causeNoPod is a failure that reached no pod.
	causeNoPod
)

// Tolerances of the classification, for events observed from outside.
const (
	// exitSlack is how much before a killed pod's observed exit a reset
	// still counts as the SIGKILL's: the client may see the kernel's reset
	// of a dead process's connections before its parent reaps it.
	exitSlack = 2 * time.Millisecond
	// stillOpen is how long a listener must have stayed open after a
	// failure for the failure to be "listener still open", and not a
	// listener closing at the same moment.
	stillOpen = 50 * time.Millisecond
)

// classify returns the cause of failure f, on pod pt (nil for none).
func classify(f record.Failure, pt *record.Pod) cause {
	switch {
	case pt == nil:
		return causeNoPod
	case pt.Term < 0 || f.At < pt.Term:
		return causeServing
	case f.Kind == record.KindRefused:
		return causeNotListening
	case f.Kind == record.KindTimeout:
		return causeTimeout
	case f.Kind == record.Kind5xx:
		return cause5xx
	case f.Kind == record.KindOther:
		return causeOther
	case pt.Exit.Killed && pt.Exited >= 0 && f.At >= pt.Exited-exitSlack:
		return causeKilled
	}
	return causeClosed
}

// causeGroup is the failures of a run with one cause, to be told in one
// sentence.
type causeGroup struct {
	cause  cause
	counts [record.NumKinds]int
	first  time.Duration
	// pods are the indexes of the pods the failures went to, in order;
	// seen has each of them, as a long run's record lists many pods.
	pods []int
	seen map[int]bool
	// after spans the failures' times after their pods' SIGTERMs.
	after durations
	// listenerOpen says every failure came well before its pod's
	// listener closed.
	listenerOpen bool
}

// durations are the least and the greatest of some durations.
type durations struct {
	lo, hi time.Duration
	n      int
}

func (s *durations) add(d time.Duration) {
	if s.n == 0 || d < s.lo {
		s.lo = d
	}
	if s.n == 0 || d > s.hi {
		s.hi = d
	}
	s.n++
}

// caption says, a sentence for each cause, why the run's requests failed,
// in the order the first of each failed; or, if none did, what the pods
// did that kept them all.
func caption(tl record.Timeline) []string {
	var groups []*causeGroup
	byCause := map[cause]*causeGroup{}
	for _, f := range tl.Failures {
		var pt *record.Pod
		if f.Pod >= 0 && f.Pod < len(tl.Pods) {
			pt = &tl.Pods[f.Pod]
		}
		c := classify(f, pt)
		g := byCause[c]
		if g == nil {
			g = &causeGroup{cause: c, first: f.At, listenerOpen: true, seen: map[int]bool{}}
			byCause[c] = g
			groups = append(groups, g)
		}
		if f.Kind >= 0 && f.Kind < record.NumKinds {
			g.counts[f.Kind]++
		}
		g.first = min(g.first, f.At)
		if pt == nil {
			continue
		}
		if !g.seen[f.Pod] {
			g.seen[f.Pod] = true
			g.pods = append(g.pods, f.Pod)
		}
		if pt.Term >= 0 {
			g.after.add(f.At - pt.Term)
		}
		if pt.ListenerClosed < 0 || pt.ListenerClosed-f.At < stillOpen {
			g.listenerOpen = false
		}
	}
	slices.SortStableFunc(groups, func(a, b *causeGroup) int { return cmp.Compare(a.first, b.first) })
	var lines []string
	for _, g := range groups {
		slices.Sort(g.pods)
		lines = append(lines, g.sentence(tl))
	}
	if len(tl.Failures) == 0 && tl.FailuresLeftOut == 0 {
		lines = append(lines, noFailure(tl))
	}
	if tl.FailuresLeftOut > 0 {
		lines = append(lines, fmt.Sprintf("the record lists the first %s failures; %s more are left out of this picture",
			thousands(int64(len(tl.Failures))), thousands(tl.FailuresLeftOut)))
	}
	return lines
}

// sentence tells g.
func (g *causeGroup) sentence(tl record.Timeline) string {
	counts := countsOf(g.counts)
	who, it := pods(tl, g.pods)
	// A comma keeps the counts' numbers and the delay's apart: "12 eof,
	// 2–4 ms after SIGTERM".
	after := ", " + sayRange(g.after.lo, g.after.hi) + " after SIGTERM"
	switch g.cause {
	case causeServing:
		return fmt.Sprintf("%s on %s while serving, before any SIGTERM to %s", counts, who, it)
	case causeClosed:
		open := ""
		if g.listenerOpen {
			open = ", listener still open"
		}
		return fmt.Sprintf("%s%s%s: %s closed connections that had a request on the way", counts, after, open, who)
	case causeNotListening:
		return notListening(tl, g, counts, who, it)
	case causeKilled:
		var exit durations
		for _, i := range g.pods {
			exit.add(tl.Pods[i].Exited - tl.Pods[i].Term)
		}
		was := "was"
		if len(g.pods) > 1 {
			was = "were"
		}
		return fmt.Sprintf("%s when %s %s killed at the grace period, %s after SIGTERM, with requests in flight", counts, who, was, sayRange(exit.lo, exit.hi))
	case causeTimeout:
		return fmt.Sprintf("%s%s: %s did not answer within the request timeout", counts, after, who)
	case cause5xx:
		return fmt.Sprintf("%s%s: %s answered with a server error", counts, after, who)
	case causeOther:
		return fmt.Sprintf("%s%s, on %s: the run's report has their errors", counts, after, who)
	}
	return fmt.Sprintf("%s reached no pod: the load balancer had no endpoint for them, or they could not be traced to one", counts)
}

// notListening tells refused connections after SIGTERM: when each pod
// stopped listening, and how long the load balancer still routed to it.
func notListening(tl record.Timeline, g *causeGroup, counts, who, it string) string {
	var stop, routed durations
	exitOnly, stillRouted, unknown := true, false, false
	for _, i := range g.pods {
		pt := tl.Pods[i]
		at := pt.ListenerClosed
		if at < 0 {
			at = pt.Exited // a process that exited listens no more
		} else {
			exitOnly = false
		}
		if at < 0 {
			unknown = true
			continue
		}
		stop.add(at - pt.Term)
		if pt.Removed < 0 {
			stillRouted = true
		} else {
			routed.add(max(pt.Removed-at, 0))
		}
	}
	if unknown {
		return fmt.Sprintf("%s, %s after SIGTERM: the load balancer routed them to %s, which no longer listened", counts, sayRange(g.after.lo, g.after.hi), who)
	}
	how := "stopped listening"
	if exitOnly {
		how = "exited"
	}
	lb := fmt.Sprintf("while the load balancer routed to %s for %s more", it, sayRange(routed.lo, routed.hi))
	if stillRouted {
		lb = "while the load balancer still routed to " + it
	}
	return fmt.Sprintf("%s: %s %s %s after SIGTERM %s", counts, who, how, sayRange(stop.lo, stop.hi), lb)
}

// noFailure tells a run in which no request failed: what its stopped pods
// did.
func noFailure(tl record.Timeline) string {
	var stopped, early []int
	var exit durations
	exited, known := true, true
	for i, pt := range tl.Pods {
		if pt.Term < 0 || pt.Term > tl.LoadEnd {
			continue
		}
		stopped = append(stopped, i)
		closed := pt.ListenerClosed
		if closed < 0 {
			closed = pt.Exited
		}
		switch {
		case closed < 0:
			known = false // not watched: nothing to tell
		case pt.Removed < 0 || closed < pt.Removed:
			early = append(early, i)
		}
		if pt.Exited >= 0 {
			exit.add(pt.Exited - pt.Term)
		} else {
			exited = false
		}
	}
	switch {
	case len(stopped) == 0:
		return "no request failed, and no pod was stopped during the load"
	case len(early) > 0:
		who, it := pods(tl, early)
		return fmt.Sprintf("no request failed, though %s stopped listening before %s endpoint was removed", who, its(it))
	case !known:
		return "no request failed"
	}
	who := "each pod"
	if len(stopped) == 1 {
		who = tl.Pods[stopped[0]].Name
	}
	s := fmt.Sprintf("no request failed: %s kept listening until its endpoint was removed", who)
	if exited {
		s += " and exited " + sayRange(exit.lo, exit.hi) + " after SIGTERM"
	}
	return s
}

// countsOf writes counts by kind, the most first: "52 reset, 12 eof".
func countsOf(counts [record.NumKinds]int) string {
	var kinds []record.Kind
	for k := range record.NumKinds {
		if counts[k] > 0 {
			kinds = append(kinds, k)
		}
	}
	slices.SortStableFunc(kinds, func(a, b record.Kind) int { return cmp.Compare(counts[b], counts[a]) })
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return strings.Join(parts, ", ")
}

// pods names the pods of indexes, and returns the pronoun for them.
func pods(tl record.Timeline, indexes []int) (who, it string) {
	var names []string
	for _, i := range indexes {
		names = append(names, tl.Pods[i].Name)
	}
	switch n := len(names); {
	case n == 0:
		return "no pod", "it"
	case n == 1:
		return names[0], "it"
	case n <= 3:
		return strings.Join(names[:n-1], ", ") + " and " + names[n-1], "them"
	default:
		return fmt.Sprintf("%d pods", n), "them"
	}
}

// its returns the possessive of a pronoun from pods.
func its(it string) string {
	if it == "it" {
		return "its"
	}
	return "their"
}

// say writes d for a sentence: "4 ms", "350 ms", "1.0 s", "12 s"; a
// duration that rounds to a second is in seconds, as a lag of "998 ms"
// reads better as the "1.0 s" it was set to.
func say(d time.Duration) string {
	switch {
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	case d.Round(100*time.Millisecond) < time.Second:
		return fmt.Sprintf("%d ms", d.Round(10*time.Millisecond).Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}

// sayRange writes the durations from lo to hi: "4 ms", "2–4 ms", "4 ms–1.2
// s", one of them if they read the same.
func sayRange(lo, hi time.Duration) string {
	a, b := say(lo), say(hi)
	switch {
	case a == b:
		return a
	case strings.HasSuffix(a, " ms") == strings.HasSuffix(b, " ms"):
		return strings.TrimSuffix(strings.TrimSuffix(a, " ms"), " s") + "–" + b
	}
	return a + "–" + b
}
