package rollout

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// drainString renders what a pod measured of its drain delay as in
// rollout reports.
func drainString(r record.Drain) string {
	lag := "no arrival"
	if r.LastArrival > 0 {
		lag = "last arrival " + r.LastArrival.Round(time.Millisecond).String()
	}
	return "drain delay " + r.Delay.Round(time.Millisecond).String() + " (" + r.Ended + "), " + lag
}

var (
	lameDuckText = regexp.MustCompile(`\b(drain_delay_took|last_arrival|drain_delay_ended)=("[^"]*"|\S+)`)
	lameDuckJSON = regexp.MustCompile(`"(drain_delay_took|last_arrival|drain_delay_ended)":("[^"]*"|-?\d+)`)
)

// parseLameDuckLine reads a record.Drain from one line of a pod's log, if
// it is lameduck's line that ends the drain delay.
func parseLameDuckLine(line string) (record.Drain, bool) {
	if !strings.Contains(line, "lameduck: draining") {
		return record.Drain{}, false
	}
	re, json := lameDuckText, false
	if strings.Contains(line, `"msg":"lameduck: draining"`) {
		re, json = lameDuckJSON, true
	}
	r := record.Drain{Seen: true}
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
			r.Delay = d
		} else {
			r.LastArrival = d
		}
	}
	return r, true
}
