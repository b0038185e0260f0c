package lameduck

import (
	"errors"
	"fmt"
	"math"
	"time"
)

func (o *options) validate() error {
	if len(o.errs) > 0 {
		err := errors.Join(o.errs...)
		return fmt.Errorf("lameduck: invalid option: %w", err)
	}
	for _, d := range []struct {
		name, option string
		value        time.Duration
	}{
		{"drain delay", "WithDrainDelay", o.drainDelay},
		{"safety margin", "WithSafetyMargin", o.safetyMargin},
	} {
		if d.value < 0 {
			return fmt.Errorf("lameduck: %s is %v; it must be zero or more (%s)", d.name, d.value, d.option)
		}
	}
	if o.hookTimeout <= 0 {
		return fmt.Errorf("lameduck: hook timeout is %v; it must be positive: it is the time kept after the drain to close the servers and run the shutdown hooks (WithHookTimeout)", o.hookTimeout)
	}
	if o.gracePeriod <= 0 {
		return fmt.Errorf("lameduck: grace period is %v; set it with WithGracePeriod to the pod's terminationGracePeriodSeconds (30s by default)", o.gracePeriod)
	}
	if reserved := addSaturated(o.drainDelay, o.hookTimeout, o.safetyMargin); reserved >= o.gracePeriod {
		need := reserved.Truncate(time.Second)/time.Second + 1
		return fmt.Errorf("lameduck: drain delay %v + hook timeout %v + safety margin %v = %v leaves no time to drain "+
			"within the grace period of %v; set terminationGracePeriodSeconds to at least %d in the pod spec and "+
			"WithGracePeriod(%d * time.Second) to match (more leaves in-flight work time to finish), or shorten the drain delay",
			o.drainDelay, o.hookTimeout, o.safetyMargin, reserved, o.gracePeriod, need, need)
	}
	return nil
}

// addSaturated adds non-negative durations, returning the largest duration
// instead of overflowing: huge settings must fail the budget check, not wrap
// around and pass it.
func addSaturated(ds ...time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		if sum > math.MaxInt64-d {
			return math.MaxInt64
		}
		sum += d
	}
	return sum
}
