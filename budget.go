package lameduck

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// validate checks the options and resolves the reserves left at their
// defaults.
func (o *options) validate() error {
	if len(o.errs) > 0 {
		err := errors.Join(o.errs...)
		return fmt.Errorf("lameduck: invalid option: %w", err)
	}
	for _, d := range []struct {
		name, option string
		value        time.Duration
	}{
		{"safety margin", "WithSafetyMargin", o.safetyMargin},
		{"departure window", "WithDepartureWindow", o.window},
	} {
		if d.value < 0 {
			return fmt.Errorf("lameduck: %s is %v; it must be zero or more (%s)", d.name, d.value, d.option)
		}
	}
	if err := o.delay.validate(); err != nil {
		return err
	}
	if o.hookSet && o.hookTimeout <= 0 {
		return fmt.Errorf("lameduck: hook timeout is %v; it must be positive: it is the time kept after the drain to close the servers and run the shutdown hooks (WithHookTimeout)", o.hookTimeout)
	}
	if o.gracePeriod <= 0 {
		return fmt.Errorf("lameduck: grace period is %v; set it with WithGracePeriod to the pod's terminationGracePeriodSeconds (30s by default)", o.gracePeriod)
	}
	b := o.budget(o.gracePeriod)
	o.hookTimeout, o.safetyMargin = b.hookTimeout, b.safetyMargin
	if !b.fits() {
		return o.budgetError(b)
	}
	if !o.windowSet {
		o.window = min(DefaultDepartureWindow, (b.grace-b.reserved())/2)
	}
	return nil
}

// budget is how a grace period is shared out.
type budget struct {
	grace, drainDelay, hookTimeout, safetyMargin time.Duration
	window                                       time.Duration // zero unless set
}

// budget returns the budget of o with grace period grace: explicit reserves
// as set, default ones scaled to grace.
func (o *options) budget(grace time.Duration) budget {
	b := budget{grace: grace, drainDelay: o.delay.max, hookTimeout: o.hookTimeout, safetyMargin: o.safetyMargin}
	if o.windowSet {
		b.window = o.window
	}
	if !o.hookSet {
		b.hookTimeout = min(DefaultHookTimeout, grace/10)
	}
	if !o.marginSet {
		b.safetyMargin = min(DefaultSafetyMargin, grace/10)
	}
	return b
}

// reserved is what the budget keeps for everything but the drain.
func (b budget) reserved() time.Duration {
	return addSaturated(b.drainDelay, b.window, b.hookTimeout, b.safetyMargin)
}

// fits reports whether the budget leaves time to drain.
func (b budget) fits() bool { return b.reserved() < b.grace }

// budgetError explains a budget that leaves no time to drain and lists
// every single change that would fix it.
func (o *options) budgetError(b budget) error {
	var fixes []string
	if secs, ok := o.smallestGracePeriod(); ok {
		fixes = append(fixes, fmt.Sprintf("a grace period of %ds: set terminationGracePeriodSeconds to %d (or more) in the pod spec "+
			"and WithGracePeriod(%d * time.Second) to match; more leaves in-flight work more time to finish", secs, secs, secs))
	}
	// Each part fits below what the others leave free.
	parts := []struct {
		name, option string
		value        time.Duration
	}{
		{o.delay.name(), o.delay.option(), b.drainDelay},
		{"departure window", "WithDepartureWindow", b.window},
		{"hook timeout", "WithHookTimeout", b.hookTimeout},
		{"safety margin", "WithSafetyMargin", b.safetyMargin},
	}
	if !o.windowSet {
		parts = slices.Delete(parts, 1, 2) // the default always fits
	}
	var sum []string
	for i, part := range parts {
		var others time.Duration
		for j, q := range parts {
			if j != i {
				others = addSaturated(others, q.value)
			}
		}
		if others < b.grace && part.value > 0 {
			fixes = append(fixes, fmt.Sprintf("a %s under %v (%s)", part.name, b.grace-others, part.option))
		}
		sum = append(sum, fmt.Sprintf("%s %v", part.name, part.value))
	}
	return fmt.Errorf("lameduck: %s = %v leaves no time to drain within the grace period of %v; any one of these fits: %s",
		strings.Join(sum, " + "), b.reserved(), b.grace, strings.Join(fixes, "; or "))
}

// smallestGracePeriod returns the smallest whole number of seconds of grace
// period that fits the other settings, default reserves scaled to it, and
// whether there is one. Fitting only gets easier as the grace period grows,
// since default reserves grow by at most a fifth of it.
func (o *options) smallestGracePeriod() (int64, bool) {
	const maxSecs = math.MaxInt64 / int64(time.Second)
	fits := func(secs int64) bool { return o.budget(time.Duration(secs) * time.Second).fits() }
	if !fits(maxSecs) {
		return 0, false
	}
	lo, hi := int64(0), maxSecs // fits(lo) is false, fits(hi) is true
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fits(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, true
}

// lastEndpointReach is how long after the signal an adaptive drain delay
// may end, its hold as the last endpoint of a Service included: past the
// delay's maximum by the drain's time beyond [DrainKept], so that the drain
// keeps DrainKept (or all of its time, if it has less), and the hooks and
// the safety margin theirs. Call it once validate has resolved the
// reserves.
func (o *options) lastEndpointReach() time.Duration {
	drain := o.gracePeriod - addSaturated(o.delay.max, o.hookTimeout, o.safetyMargin)
	return o.delay.max + max(0, drain-DrainKept)
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
