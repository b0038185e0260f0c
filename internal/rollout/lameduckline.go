package rollout

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// LameDuckReport is what a pod that uses lameduck measured of its own
// drain delay, read from the line it logs when the delay ends ("lameduck:
// draining"), in slog's text or JSON format.
type LameDuckReport struct {
	// Seen reports whether the pod logged the line.
	Seen bool
	// DelayTook is how long its drain delay lasted.
	DelayTook time.Duration
	// LastArrival is how long after SIGTERM the last new connection
	// reached it: the load balancer's lag as the pod saw it. Zero if no
	// connection arrived during the delay.
	LastArrival time.Duration
	// Ended says what ended the delay: "fixed", "endpoints", "quiet",
	// "min", "max" or "cut" (see lameduck.DelayReport).
	Ended string
}

// String renders the report as in rollout reports.
func (r LameDuckReport) String() string {
	lag := "no arrival"
	if r.LastArrival > 0 {
		lag = "last arrival " + r.LastArrival.Round(time.Millisecond).String()
	}
	return "drain delay " + r.DelayTook.Round(time.Millisecond).String() + " (" + r.Ended + "), " + lag
}

var (
	lameDuckText = regexp.MustCompile(`\b(drain_delay_took|last_arrival|drain_delay_ended)=("[^"]*"|\S+)`)
	lameDuckJSON = regexp.MustCompile(`"(drain_delay_took|last_arrival|drain_delay_ended)":("[^"]*"|-?\d+)`)
)

// parseLameDuckLine reads a LameDuckReport from one line of a pod's log, if
// it is lameduck's line that ends the drain delay.
func parseLameDuckLine(line string) (LameDuckReport, bool) {
	if !strings.Contains(line, "lameduck: draining") {
		return LameDuckReport{}, false
	}
	re, json := lameDuckText, false
	if strings.Contains(line, `"msg":"lameduck: draining"`) {
		re, json = lameDuckJSON, true
	}
	r := LameDuckReport{Seen: true}
	for _, m := range re.FindAllStringSubmatch(line, -1) {
		key, val := m[1], m[2]
		if key == "drain_delay_ended" {
			r.Ended = strings.Trim(val, `"`)
			continue
		}
		var d time.Duration
		var err error
		if json { // slog's JSON handler writes durations in nanoseconds
			var ns int64
			ns, err = strconv.ParseInt(val, 10, 64)
			d = time.Duration(ns)
		} else {
			d, err = time.ParseDuration(val)
		}
		if err != nil {
			continue
		}
		if key == "drain_delay_took" {
			r.DelayTook = d
		} else {
			r.LastArrival = d
		}
	}
	return r, true
}
