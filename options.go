package lameduck

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/lameduck/lameduck/internal/kube"
	"github.com/lameduck/lameduck/internal/testhook"
)

// Defaults, chosen to fit a pod spec that does not set
// terminationGracePeriodSeconds (30 s).
const (
	// DefaultGracePeriod is Kubernetes' default terminationGracePeriodSeconds.
	DefaultGracePeriod = 30 * time.Second
	// DefaultDrainDelay is long enough for kube-proxy and most load balancers
	// to stop sending new connections to a terminating pod.
	DefaultDrainDelay = 5 * time.Second
	// DefaultHookTimeout is the time reserved for closing servers and
	// running shutdown hooks, with a grace period of 30 s or more. With a
	// shorter grace period the default is a tenth of it, so that short
	// grace periods still leave time to drain.
	DefaultHookTimeout = 3 * time.Second
	// DefaultSafetyMargin is kept free at the end of the grace period for the
	// process to exit before the kubelet sends SIGKILL, with a grace period
	// of 20 s or more. With a shorter grace period the default is a tenth
	// of it.
	DefaultSafetyMargin = 2 * time.Second
	// DefaultMinDrainDelay is the shortest adaptive drain delay when the
	// cluster gives no evidence of routing (outside Kubernetes, or without the
	// permission to watch EndpointSlices): silence alone then ends no delay
	// sooner. It covers kube-proxy, which stops routing to a terminating pod
	// about 1 s after the signal in a rolling update (it applies changes at
	// most once per --iptables-min-sync-period, 1 s by default), with a margin
	// of 2 s for a busy control plane and for ingress controllers, which
	// follow the same EndpointSlices.
	DefaultMinDrainDelay = 3 * time.Second
	// DefaultDepartureWindow is the longest the long-lived work of a
	// shutdown takes to leave (see [WithDepartureWindow]) when the grace
	// period leaves room for it: the default is at most half of the time
	// left to drain.
	DefaultDepartureWindow = 10 * time.Second
	// DefaultCheckTimeout bounds a readiness check whose [Check.Timeout] is zero.
	// It matches the default timeoutSeconds of a Kubernetes probe.
	DefaultCheckTimeout = time.Second
)

// The Kubernetes timing of an adaptive drain delay (see
// [WithAdaptiveDrainDelay]): fixed, not settings. The docs, the tests and
// the examples refer to these names rather than to their values.
const (
	// EndpointsAllowance is how long an adaptive drain delay lasts after
	// the EndpointSlices stop routing to the pod: for kube-proxy to
	// rewrite its rules (and ingress controllers their upstreams), and
	// for the connections the node still sends here once they are gone.
	// kube-proxy applies a change at most once per
	// --iptables-min-sync-period, 1 s by default, after its last sync,
	// and connections still arrive for a while after the rule is gone:
	// docs/measurements.md has what was measured on a real node.
	EndpointsAllowance = 3 * time.Second
	// ReplacementWait is how long after the signal the last endpoint of
	// a Service stays ready waiting for a replacement to appear in the
	// slices, when no other endpoint of the Service is starting: the pod
	// replacing a deleted one is listed, not ready, as soon as it has an
	// address, about a second after the deletion with the image already
	// on the node. When no replacement is coming (the Deployment scaled
	// to zero or deleted, the Recreate strategy, a pod with no
	// controller), the hold costs this wait; a replacement that gets its
	// address later, such as one that waits for a new node, is not
	// waited for.
	ReplacementWait = 5 * time.Second
	// DrainKept is the part of the drain's time, as the budget shares
	// the grace period, that a hold as the last endpoint leaves to the
	// drain (all of it, if the drain has less): the hold and the delay
	// together may last past the delay's maximum by the rest.
	DrainKept = 5 * time.Second
)

// An Option configures a [Coordinator]; pass options to [New].
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	gracePeriod  time.Duration
	delay        delayConfig   // delay.go
	kube         *kube.Client  // the Kubernetes API to watch; nil for the pod's own, if any (endpoints.go). Set by tests.
	hookTimeout  time.Duration // zero until set, then resolved by validate
	safetyMargin time.Duration
	hookSet      bool // hookTimeout and safetyMargin were set explicitly
	marginSet    bool
	window       time.Duration // departure window; resolved by validate
	windowSet    bool
	signals      []os.Signal
	signalCh     <-chan os.Signal
	logger       *slog.Logger
	clock        testhook.Clock
	checkDetails bool
	finalScrape  bool
	errs         []error // nil values passed to options
}

// WithGracePeriod sets the time from the shutdown signal to the moment the
// process is killed: the pod's terminationGracePeriodSeconds, which must be
// set to the same value. The default is [DefaultGracePeriod], Kubernetes'
// default.
func WithGracePeriod(d time.Duration) Option {
	return optionFunc(func(o *options) { o.gracePeriod = d })
}

// WithHookTimeout sets the time reserved at the end of the shutdown for
// closing the servers and running the hooks registered with
// [Coordinator.OnShutdown], all of them together: the drain is cut that long
// before the deadline. It must be positive, and is honoured exactly. The
// default is [DefaultHookTimeout], or a tenth of a grace period shorter
// than 30 s.
func WithHookTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.hookTimeout, o.hookSet = d, true })
}

// WithSafetyMargin sets the time kept free at the end of the grace period:
// [Coordinator.Run] returns at least this long before the grace period ends,
// leaving the process time to exit before SIGKILL. It may be zero, and is
// honoured exactly. The default is [DefaultSafetyMargin], or a tenth of a
// grace period shorter than 20 s.
func WithSafetyMargin(d time.Duration) Option {
	return optionFunc(func(o *options) { o.safetyMargin, o.marginSet = d, true })
}

// WithDepartureWindow sets the time over which long-lived work —
// websockets, event streams, streaming RPCs — leaves once the drain delay
// is over, so that its clients reconnect to the pods that stay at a steady
// rate instead of all at once. Each piece of it is told to leave at its
// turn (see [Leaving]): in random order, evenly spread over the window,
// each at a random moment of its own slot, or 10 ms apart when there is so
// little of it that the window would spread it thinner, so that the
// process exits as soon as the last is gone. Work that starts during the
// shutdown gets a turn too, after the others. Turns that a stall of the
// process made late are caught up with at one and a half times the pace,
// not all at once, and still within the window.
//
// The window starts when the drain delay ends, once the load balancers
// have stopped routing here (a client that reconnected sooner would come
// back), and its first turn comes 10 ms later, once the servers have
// stopped accepting. It must fit the grace period with the drain delay,
// the hook timeout and the safety margin, leaving time for the last of the
// work to end after its turn; [New] returns an error that lists every
// change that fits otherwise. Zero tells all of it to leave at once, 10 ms
// into the drain.
// The default is [DefaultDepartureWindow], or half the time that the grace
// period leaves to drain when that is shorter.
func WithDepartureWindow(d time.Duration) Option {
	return optionFunc(func(o *options) { o.window, o.windowSet = d, true })
}

// WithSignals sets the operating-system signals that start the shutdown; a
// second delivery forces it (see [Coordinator.Run] for how signals that
// also end Run's context are counted). The default is SIGTERM, which the kubelet sends, and
// SIGINT (Ctrl-C). With no signals, only the end of the context given to
// [Coordinator.Run], a failure, or [WithSignalChannel] starts the shutdown.
func WithSignals(sig ...os.Signal) Option {
	for _, s := range sig {
		if s == nil {
			return optionFunc(func(o *options) {
				o.errs = append(o.errs, errors.New("WithSignals: a signal is nil; pass signals such as syscall.SIGTERM"))
			})
		}
	}
	sig = append([]os.Signal(nil), sig...)
	return optionFunc(func(o *options) { o.signals = sig })
}

// WithSignalChannel makes every value received from ch count as a shutdown
// signal, in addition to the signals of [WithSignals]: the first starts the
// shutdown, the second forces it. Tests use it to drive the sequence without
// sending signals to the test process.
func WithSignalChannel(ch <-chan os.Signal) Option {
	return optionFunc(func(o *options) {
		if ch == nil {
			o.errs = append(o.errs, errors.New("WithSignalChannel: the channel is nil; pass a channel you send signals on"))
		}
		o.signalCh = ch
	})
}

// WithLogger sets the logger for the one line per phase and for failing
// readiness checks. The default is [slog.Default].
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l == nil {
			o.errs = append(o.errs, errors.New("WithLogger: the logger is nil; pass slog.New(slog.DiscardHandler) to discard logs"))
		}
		o.logger = l
	})
}

// WithFinalScrape makes [Coordinator.Run], once the shutdown is over, keep
// the admin servers (see [Coordinator.RegisterAdmin]) up until a
// [Coordinator.Status] with the final values has been exported (see
// [Coordinator.MarkExported]), as a metrics scrape of package prommetrics
// does, and at most until the drain
// deadline, which leaves the hook timeout to close them before the
// deadline (see [WithHookTimeout]). Without it, the last values of a shutdown, such as the drain
// delay's last arrival and what was cut, are seen only by a scrape that
// happens in the milliseconds of the drain. The cost is the wait: up to
// one scrape interval more of a process whose pod no Service routes to
// any longer, holding its memory and its place on the node.
func WithFinalScrape() Option {
	return optionFunc(func(o *options) { o.finalScrape = true })
}

// WithCheckDetails makes verbose readiness responses (?verbose) include the
// error text of failing checks. By default they show only each check's name
// and whether it passed, because error text can carry hostnames, credentials
// or internal details and probe endpoints are often reachable by more people
// than logs are; the text is logged instead.
func WithCheckDetails() Option {
	return optionFunc(func(o *options) { o.checkDetails = true })
}
