package lameduck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"
)

// A Check is a named readiness check, added with [Coordinator.AddCheck]:
// while any check fails, the readiness probe answers 503 and names it.
//
// Checks run when a probe asks, concurrently, each bounded by its timeout. A
// check runs at most once at a time: probes that arrive while it runs share
// its result, so a flood of probes cannot pile up calls to a slow
// dependency.
type Check struct {
	// Name identifies the check in responses and in ?exclude=Name. It must
	// be non-empty, without spaces or control characters, and unique;
	// "started" and "shutdown" are reserved for the built-in checks.
	Name string
	// Func reports whether the dependency is usable, for example
	// (*sql.DB).PingContext. It must return soon after ctx ends.
	Func func(ctx context.Context) error
	// Timeout bounds one call of Func; a call still running after it counts
	// as failed. Zero means [DefaultCheckTimeout].
	Timeout time.Duration
	// Cache is how long a result is reused before Func is called again.
	// Zero means every probe calls Func (coalesced with calls in progress).
	Cache time.Duration
}

// check is a registered Check with the state of its calls.
type check struct {
	Check
	c *Coordinator

	mu sync.Mutex
	// last is the most recent call; it is in progress, or Func has not
	// returned yet, while running is true. Guarded by mu.
	last    *checkCall
	running bool
	// failing is the result last logged, so that only changes are logged.
	failing bool
	// stats are the finished calls, for [Coordinator.Status].
	stats CheckStatus
}

// checkCall is one call of a check's Func, shared by every probe that
// asks while it runs.
type checkCall struct {
	done    chan struct{} // closed once err and at are set
	err     error
	at      time.Time
	started time.Time
}

// AddCheck adds a readiness check. Like [http.ServeMux.Handle], it panics
// on programming errors: a name that is empty, reserved, has spaces or
// control characters, or is already taken; a nil Func; a negative Timeout
// or Cache; or a call after [Coordinator.Run].
func (c *Coordinator) AddCheck(ch Check) {
	if err := validCheck(ch); err != nil {
		panic("lameduck: AddCheck: " + err.Error())
	}
	if ch.Timeout == 0 {
		ch.Timeout = DefaultCheckTimeout
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mustNotHaveRunLocked("AddCheck")
	for _, k := range c.checks {
		if k.Name == ch.Name {
			panic(fmt.Sprintf("lameduck: AddCheck: a check named %q is already registered; give each check its own name", ch.Name))
		}
	}
	c.checks = append(c.checks, &check{Check: ch, c: c})
}

func validCheck(ch Check) error {
	switch {
	case ch.Name == "":
		return fmt.Errorf("the check's Name is empty; name it after what it checks, such as \"database\"")
	case ch.Name == "started" || ch.Name == "shutdown":
		return fmt.Errorf("the name %q is reserved for a built-in check; choose another", ch.Name)
	case strings.IndexFunc(ch.Name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("the name %q has spaces or control characters; use letters, digits, '-', '_' or '.'", ch.Name)
	case ch.Func == nil:
		return fmt.Errorf("check %q has a nil Func", ch.Name)
	case ch.Timeout < 0:
		return fmt.Errorf("check %q has a negative Timeout %v; use zero for the default of %v", ch.Name, ch.Timeout, DefaultCheckTimeout)
	case ch.Cache < 0:
		return fmt.Errorf("check %q has a negative Cache %v; use zero to run it for every probe", ch.Name, ch.Cache)
	}
	return nil
}

// start returns the call whose result answers a probe now: a cached or
// running call, or a new one.
func (k *check) start() *checkCall {
	k.mu.Lock()
	defer k.mu.Unlock()
	if last := k.last; last != nil {
		if k.running {
			// In progress, or timed out while Func still runs: do not
			// stack another call on a dependency that does not answer.
			return last
		}
		if k.Cache > 0 && k.c.clock.Now().Sub(last.at) < k.Cache {
			return last
		}
	}
	cc := &checkCall{done: make(chan struct{}), started: k.c.clock.Now()}
	k.last, k.running = cc, true
	go k.run(cc)
	return cc
}

func (k *check) run(cc *checkCall) {
	ctx, cancel := k.c.deadlineContext(context.Background(), k.c.clock.Now().Add(k.Timeout))
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() {
		k.finish(cc, fmt.Errorf("timed out after %v", k.Timeout), false)
	})
	err := call(ctx, k.Func)
	stop()
	k.finish(cc, err, true)
}

// finish records the result of call, unless it already has one (the
// timeout came first), and, once Func has returned, allows the next call.
func (k *check) finish(cc *checkCall, err error, returned bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if returned {
		k.running = false
	}
	select {
	case <-cc.done:
		return
	default:
	}
	cc.err, cc.at = err, k.c.clock.Now()
	close(cc.done)
	k.stats.Calls++
	k.stats.Elapsed += cc.at.Sub(cc.started)
	k.stats.Last = cc.at
	k.stats.Passing = err == nil
	if err != nil {
		k.stats.Failures++
	}
	if failing := err != nil; failing != k.failing {
		k.failing = failing
		if failing {
			k.c.log.Warn("lameduck: readiness check failed", slog.String("check", k.Name), slog.Any("error", err))
		} else {
			k.c.log.Info("lameduck: readiness check passes again", slog.String("check", k.Name))
		}
	}
}

// checkResult is one check's answer to one probe.
type checkResult struct {
	k    *check
	call *checkCall // nil if excluded
}

// runChecks starts every check that q does not exclude and waits for their
// results. It reports false if ctx ended first: the prober gave up.
func runChecks(ctx context.Context, checks []*check, q probeQuery) ([]checkResult, bool) {
	results := make([]checkResult, len(checks))
	for i, k := range checks {
		results[i].k = k
		if !q.excludes(k.Name) {
			results[i].call = k.start()
		}
	}
	for _, res := range results {
		if res.call == nil {
			continue
		}
		select {
		case <-res.call.done:
		case <-ctx.Done():
			return nil, false
		}
	}
	return results, true
}

var (
	bodyOK           = []byte("ok")
	bodyStarting     = []byte("starting")
	bodyShuttingDown = []byte("shutting down")
	bodyCanceled     = []byte("canceled")
	bodyMethod       = []byte("method not allowed: use GET or HEAD")
	textPlain        = []string{"text/plain; charset=utf-8"}
	noSniff          = []string{"nosniff"}
	allowGetHead     = []string{"GET, HEAD"}
)

// ReadinessHandler returns the handler for the readiness probe, by
// convention served at /readyz.
//
// It answers 503 "starting" until [Coordinator.MarkReady], then 200 "ok"
// while every check passes and 503 with the failing check's name when one
// fails, and 503 "shutting down" from the first moment of the shutdown on,
// never 200 again, so that Kubernetes takes the pod out of its Services.
// Under an adaptive drain delay in Kubernetes, the shutdown's lame duck
// begins, and readiness turns off, only once another endpoint of the pod's
// Services is ready (see [WithAdaptiveDrainDelay]).
//
// Like the Kubernetes API server's /readyz, it accepts ?verbose, which lists
// every check as "[+]name ok" or "[-]name failed" followed by a summary
// line, and ?exclude=name, repeatable, which skips a check. The built-in
// checks "started" and "shutdown" cannot be excluded. Error text of
// failing checks is logged, and shown only with [WithCheckDetails]. Methods
// other than GET and HEAD get 405.
//
// Without checks and without a query, answering allocates nothing.
func (c *Coordinator) ReadinessHandler() http.Handler { return readinessHandler{c} }

type readinessHandler struct{ c *Coordinator }

// Probe marks the handler as a probe's: a request it serves says nothing
// about where the load balancer routes, so the adapters do not count it as
// an arrival (see [Arrivals]).
func (readinessHandler) Probe() {}

func (h readinessHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !probeMethod(w, r) {
		return
	}
	c := h.c
	state := c.state.Load()
	c.mu.Lock()
	checks := c.checks
	c.mu.Unlock()
	var q probeQuery
	if r.URL.RawQuery != "" {
		q = parseProbeQuery(r.URL.RawQuery)
	}
	if !q.verbose {
		switch {
		case state == stateStarting:
			reply(w, http.StatusServiceUnavailable, bodyStarting)
			return
		case state == stateShuttingDown:
			reply(w, http.StatusServiceUnavailable, bodyShuttingDown)
			return
		}
	}
	results, ok := runChecks(r.Context(), checks, q)
	if !ok {
		reply(w, http.StatusServiceUnavailable, bodyCanceled)
		return
	}
	if !q.verbose {
		for _, res := range results {
			if res.call != nil && res.call.err != nil {
				reply(w, http.StatusServiceUnavailable, []byte(res.k.Name))
				return
			}
		}
		reply(w, http.StatusOK, bodyOK)
		return
	}

	var b strings.Builder
	passed := true
	line := func(ok bool, name, note string) {
		if ok {
			fmt.Fprintf(&b, "[+]%s ok\n", name)
			return
		}
		passed = false
		fmt.Fprintf(&b, "[-]%s failed%s\n", name, note)
	}
	line(state != stateStarting, "started", "")
	line(state != stateShuttingDown, "shutdown", "")
	for _, res := range results {
		switch {
		case res.call == nil:
			fmt.Fprintf(&b, "[+]%s excluded: ok\n", res.k.Name)
		case res.call.err == nil:
			line(true, res.k.Name, "")
		case c.opts.checkDetails:
			line(false, res.k.Name, ": "+oneLine(res.call.err.Error()))
		default:
			line(false, res.k.Name, "")
		}
	}
	if n := q.unmatched(checks); n > 0 {
		fmt.Fprintf(&b, "warn: %d excluded names match no check\n", n)
	}
	code := http.StatusOK
	if passed {
		b.WriteString("readyz check passed\n")
	} else {
		code = http.StatusServiceUnavailable
		b.WriteString("readyz check failed\n")
	}
	reply(w, code, []byte(b.String()))
}

// CheckReadiness reports whether the process is ready, as the readiness
// probe decides it: it returns nil once [Coordinator.MarkReady] has been
// called, until the shutdown begins, while every check passes. Otherwise it
// returns an error that says why: the process is starting or shutting down,
// or checks failed (the error wraps each failing check's error), or ctx ended
// first (the error wraps ctx's).
//
// Checks run as they do for a probe: each bounded by its timeout, sharing
// calls in progress and cached results with every probe, so that a server
// that publishes readiness itself, such as the gRPC health service of
// package grpcserver, may call it for every request of its own without
// stacking calls on a dependency.
func (c *Coordinator) CheckReadiness(ctx context.Context) error {
	switch c.state.Load() {
	case stateStarting:
		return errStarting
	case stateShuttingDown:
		return errShuttingDown
	}
	c.mu.Lock()
	checks := c.checks
	c.mu.Unlock()
	results, ok := runChecks(ctx, checks, probeQuery{})
	if !ok {
		return fmt.Errorf("lameduck: readiness not known: %w", context.Cause(ctx))
	}
	var errs []error
	for _, res := range results {
		if err := res.call.err; err != nil {
			errs = append(errs, fmt.Errorf("lameduck: readiness check %q failed: %w", res.k.Name, err))
		}
	}
	if c.state.Load() == stateShuttingDown {
		// The shutdown began while the checks ran: it wins, as for a probe
		// that arrives now.
		return errShuttingDown
	}
	return errors.Join(errs...)
}

var (
	errStarting     = errors.New("lameduck: not ready: starting")
	errShuttingDown = errors.New("lameduck: not ready: shutting down")
)

// maxExcludes bounds how many ?exclude values a probe request may carry;
// more are ignored, so that a hostile query cannot make a probe expensive.
const maxExcludes = 64

type probeQuery struct {
	verbose bool
	exclude []string
}

// parseProbeQuery reads the parameters the probes understand and ignores
// everything else, including malformed pairs.
func parseProbeQuery(raw string) probeQuery {
	var q probeQuery
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		key, value, _ := strings.Cut(pair, "=")
		switch key {
		case "verbose":
			q.verbose = true
		case "exclude":
			if len(q.exclude) >= maxExcludes {
				continue
			}
			if v, err := url.QueryUnescape(value); err == nil && v != "" {
				q.exclude = append(q.exclude, v)
			}
		}
	}
	return q
}

func (q probeQuery) excludes(name string) bool {
	for _, x := range q.exclude {
		if x == name {
			return true
		}
	}
	return false
}

// unmatched counts the excluded names that match no check.
func (q probeQuery) unmatched(checks []*check) int {
	n := 0
	for _, x := range q.exclude {
		found := false
		for _, k := range checks {
			found = found || k.Name == x
		}
		if !found {
			n++
		}
	}
	return n
}

// LivenessHandler returns the handler for the liveness probe, by convention
// served at /livez. It answers 200 "ok" for as long as the process runs,
// including all through the drain: a liveness probe failing during the drain
// would make the kubelet kill the pod before it finished. Methods other than
// GET and HEAD get 405.
func (c *Coordinator) LivenessHandler() http.Handler { return livenessHandler{} }

type livenessHandler struct{}

// Probe marks the handler as a probe's, as readinessHandler's does.
func (livenessHandler) Probe() {}

func (livenessHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if probeMethod(w, r) {
		reply(w, http.StatusOK, bodyOK)
	}
}

// probeMethod answers 405 to methods other than GET and HEAD and reports
// whether the request may go on.
func probeMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header()["Allow"] = allowGetHead
	reply(w, http.StatusMethodNotAllowed, bodyMethod)
	return false
}

// reply writes a short plain-text response. The header values are shared,
// read-only slices, so that the common answers allocate nothing.
func reply(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(code)
	w.Write(body) //nolint:errcheck // the prober reads what it can
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}
