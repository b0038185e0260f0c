package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Defaults for [Config]'s zero values: the one set that the rollout
// command's flags and package lameducktest both start from. A run with
// them lasts a few seconds, and still shows what a rolling update does to
// a server that gets its shutdown wrong.
const (
	// DefaultCycles is the number of rollouts in a run: one rollout goes
	// through every step of a pod's shutdown; more repeat it.
	DefaultCycles = 1
	// DefaultLag is how long a terminating pod stays in the load balancer
	// after SIGTERM: kube-proxy lagging behind the EndpointSlice. On a
	// real node the rule went 1.1 s after the SIGTERM at the most
	// (--iptables-min-sync-period is 1 s); cloud load balancers lag far
	// longer.
	DefaultLag = time.Second
	// DefaultGrace is the pod's termination grace period: SIGKILL follows
	// SIGTERM after it.
	DefaultGrace = 10 * time.Second
	// DefaultProbePeriod is how often the readiness probe runs, shorter
	// than the kubelet's 10 s default so a run does not wait for nothing.
	DefaultProbePeriod = 100 * time.Millisecond
	// DefaultReadyPath is the readiness probe's path.
	DefaultReadyPath = "/readyz"
	// DefaultReadyTimeout bounds how long a new pod may take to become
	// ready before the run fails.
	DefaultReadyTimeout = 10 * time.Second
	// DefaultWarmup is how long the load runs against the first pods
	// before the first rollout, so every connection is open and busy.
	DefaultWarmup = 500 * time.Millisecond
	// probeTimeout is the readiness probe's timeout, the kubelet's default.
	probeTimeout = time.Second
)

// Upper bounds that keep a mistyped setting from running for hours or
// exhausting file descriptors.
const (
	maxCycles   = 1000
	maxReplicas = 50
	maxConns    = 5000
)

// Config describes a simulated rolling update. Its zero values mean the
// defaults above, except Pod, which is required.
type Config struct {
	// Pod says how to start a pod; its command must contain {ADDR}.
	Pod PodSpec
	// Cycles is the number of rollouts: each starts a new pod, waits until
	// it is ready, then terminates the oldest. Zero means DefaultCycles.
	Cycles int
	// Replicas is the number of pods serving at once; zero means 1. Each
	// rollout replaces one pod (maxSurge 1, maxUnavailable 0).
	Replicas int
	// Lag is how long a terminating pod's endpoint stays in the load
	// balancer after SIGTERM. Zero means DefaultLag; a negative value
	// removes it at SIGTERM, as an ideal (and unreal) kube-proxy would.
	Lag time.Duration
	// Grace is the termination grace period, after which a pod that has
	// not exited is SIGKILLed. Zero means DefaultGrace.
	Grace time.Duration
	// ProbePeriod is the readiness probe's period; zero means
	// DefaultProbePeriod.
	ProbePeriod time.Duration
	// ReadyPath is the readiness probe's path; empty means
	// DefaultReadyPath. The probe is GET http://ADDR{ReadyPath} (or
	// PROBE_ADDR if the pod command uses {PROBE_ADDR}); 200 means ready.
	ReadyPath string
	// ReadyTimeout bounds the wait for a new pod to become ready; zero
	// means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Warmup is how long load runs before the first rollout; zero means
	// DefaultWarmup, negative means none.
	Warmup time.Duration

	// Load is the load's protocol; empty means LoadHTTP1.
	Load LoadKind
	// Client runs a load that this package does not run itself: LoadGRPC
	// needs one (package grpcload's), the other loads take none.
	Client Protocol
	// Conns is the number of client connections; zero means DefaultConns.
	Conns int
	// WorkersPerConn is the number of concurrent requests per h2c or gRPC
	// connection; zero means DefaultWorkersPerConn.
	WorkersPerConn int
	// Fresh is the number of extra clients that open a new connection for
	// every request (see [LoadConfig.Fresh]); zero means none.
	Fresh int
	// Late is the number of new clients that arrive lateLead before each
	// terminating pod's endpoint is removed, each sending one request on a
	// connection of its own: clients that find the old pod through the
	// load balancer long after the keep-alive ones have moved off it, the
	// case where silence says nothing of routing. The endpoint is removed
	// once the load balancer has routed them, lateLead later at the
	// earliest. Zero means none.
	Late int
	// Path is the HTTP path the load requests; empty means [DefaultPath]
	// of Load: "/", or the built-in pods' /ws and /events for the
	// websocket and sse loads.
	Path string
	// RequestTimeout bounds each request; zero means DefaultRequestTimeout.
	RequestTimeout time.Duration

	// ListenAddr is the load balancer's address; empty means 127.0.0.1:0
	// (an OS-assigned port). It must be a loopback address.
	ListenAddr string
	// PodLog receives every line the pods print, prefixed with the pod's
	// name. Nil means the lines are kept only in memory: the last ones are
	// in [Result.PodLog] and in error messages.
	PodLog io.Writer
}

// Names spells [Config]'s settings in error messages the way a front end
// shows them to its user: the rollout command's flags ("-c"), or
// lameducktest's fields ("Config.Conns"). Its keys are the names of
// Config's fields; a field it does not list is spelled by its name.
type Names map[string]string

func (n Names) of(field string) string {
	if s, ok := n[field]; ok {
		return s
	}
	return field
}

// Check returns c with its defaults filled in, or an error that names every
// bad setting, as names spells it, and what to set it to. [Run] checks its
// Config too; a front end calls Check first for messages in its own terms.
func (c Config) Check(names Names) (Config, error) {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("%s is %v; %s", names.of(field), v, want))
	}
	count := func(field string, v *int, lo, hi, def int) {
		switch {
		case *v < 0 || *v > hi:
			want := fmt.Sprintf("use %d to %d", lo, hi)
			if def != 0 {
				want += fmt.Sprintf(", or zero for %d", def)
			}
			bad(field, *v, want)
		case *v == 0:
			*v = def
		}
	}
	duration := func(field string, v *time.Duration, def time.Duration) {
		switch {
		case *v < 0:
			bad(field, *v, fmt.Sprintf("it must be positive, or zero for %s", def))
		case *v == 0:
			*v = def
		}
	}
	path := func(field string, v *string, def string) {
		switch {
		case *v == "":
			*v = def
		case !strings.HasPrefix(*v, "/"):
			bad(field, fmt.Sprintf("%q", *v), "it must start with /")
		}
	}

	if len(c.Pod.Command) == 0 {
		errs = append(errs, fmt.Errorf("%s is empty: set it to the server's program and arguments, with %s where its listen address goes", names.of("Pod"), AddrPlaceholder))
	} else if !c.Pod.uses(AddrPlaceholder) {
		errs = append(errs, fmt.Errorf("the pod command %q has no %s: the server would not know where to listen; put %s where its listen address goes (it becomes 127.0.0.1:PORT), as in -addr %s",
			strings.Join(c.Pod.Command, " "), AddrPlaceholder, AddrPlaceholder, AddrPlaceholder))
	}
	count("Cycles", &c.Cycles, 1, maxCycles, DefaultCycles)
	count("Replicas", &c.Replicas, 1, maxReplicas, 1)
	count("Conns", &c.Conns, 1, maxConns, DefaultConns)
	count("WorkersPerConn", &c.WorkersPerConn, 1, maxConns, DefaultWorkersPerConn)
	count("Fresh", &c.Fresh, 0, maxConns, 0)
	count("Late", &c.Late, 0, maxConns, 0)
	if c.Lag == 0 {
		c.Lag = DefaultLag // negative: none
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup // negative: none
	}
	duration("Grace", &c.Grace, DefaultGrace)
	duration("ProbePeriod", &c.ProbePeriod, DefaultProbePeriod)
	duration("ReadyTimeout", &c.ReadyTimeout, DefaultReadyTimeout)
	duration("RequestTimeout", &c.RequestTimeout, DefaultRequestTimeout)
	path("ReadyPath", &c.ReadyPath, DefaultReadyPath)
	if c.Load == "" {
		c.Load = LoadHTTP1
	}
	path("Path", &c.Path, DefaultPath(c.Load))
	switch err := checkClient(c.Load, c.Client, names.of("Client")); {
	case err != nil && !slices.Contains(LoadKinds, c.Load):
		bad("Load", fmt.Sprintf("%q", c.Load), fmt.Sprintf("use one of %s", strings.Trim(fmt.Sprint(LoadKinds), "[]")))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: %s", names.of("Load"), strings.TrimPrefix(err.Error(), "rollout: ")))
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:0"
	}
	if err := checkLoopback(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", names.of("ListenAddr"), err))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bad settings: %w", errors.Join(errs...))
	}
	return c, nil
}

// Rollout is what happened during one rollout: from the start of its new
// pod (or of the load, for the first) until its old pod had exited and left
// the load balancer. Consecutive rollouts cover the run without gaps.
type Rollout struct {
	// N numbers the rollouts from 1.
	N int
	// Counts are the requests counted during the rollout.
	Counts
	// NewPod is the name of the pod started.
	NewPod string
	// ReadyAfter is the time the new pod took to pass its readiness probe.
	ReadyAfter time.Duration
	// OldPod says how the terminated pod ended.
	OldPod PodExit
}

// Result is the outcome of [Run].
type Result struct {
	// Config is the run's configuration, its defaults filled in.
	Config Config
	// Rollouts has one entry per completed rollout.
	Rollouts []Rollout
	// Total counts every request of the run, rollouts and warm-up alike.
	Total Counts
	// Proxy holds the load balancer's counters.
	Proxy ProxyStats
	// Timeline is what happened over time, pod by pod, for a picture of
	// the run.
	Timeline record.Timeline
	// Duration is the run's wall time.
	Duration time.Duration
	// PodLog holds the last lines the pods printed, prefixed with the
	// pod's name.
	PodLog []string
}

// WriteText writes a human-readable report: the settings, one line per
// rollout with the first error of each kind that failed, and the load
// balancer's counters, ending with one machine-readable line of the
// totals, "requests=N failed=F" followed by "KIND=N" for each kind that
// failed.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	r.writeDetails(&b)
	fmt.Fprintf(&b, "%s\n", r.Total.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteDetails writes what WriteText does but its last line, the totals,
// for a caller that writes them elsewhere.
func (r *Result) WriteDetails(w io.Writer) error {
	var b strings.Builder
	r.writeDetails(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// String describes the settings that shape a run's numbers on one line,
// such as "load=http1 conns=32 lag=1s grace=10s rollouts=2".
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "load=%s conns=%d", cmp.Or(c.Load, LoadHTTP1), c.Conns)
	if c.Fresh > 0 {
		fmt.Fprintf(&b, " fresh=%d", c.Fresh)
	}
	if c.Late > 0 {
		fmt.Fprintf(&b, " late=%d", c.Late)
	}
	if c.Replicas > 1 {
		fmt.Fprintf(&b, " replicas=%d", c.Replicas)
	}
	lag := c.Lag.String()
	if c.Lag < 0 {
		lag = "none"
	}
	fmt.Fprintf(&b, " lag=%s grace=%s rollouts=%d", lag, c.Grace, c.Cycles)
	return b.String()
}

func (r *Result) writeDetails(b *strings.Builder) {
	fmt.Fprintf(b, "%s duration=%s\n", r.Config, r.Duration.Round(time.Millisecond))
	for _, ro := range r.Rollouts {
		fmt.Fprintf(b, "rollout %d: %s; new %s ready after %s; old %s\n",
			ro.N, ro.Counts.Summary(), ro.NewPod, ro.ReadyAfter.Round(time.Millisecond), ro.OldPod)
		if ro.Departures+ro.Reconnects > 0 {
			fmt.Fprintf(b, "    %s\n", ro.Counts.streams())
		}
		for k, s := range ro.Samples {
			if s != "" {
				fmt.Fprintf(b, "    first %s: %s\n", record.Kind(k), s)
			}
		}
	}
	fmt.Fprintf(b, "load balancer: conns=%d dial-failed=%d no-endpoint=%d resets=%d\n",
		r.Proxy.Conns, r.Proxy.DialFailed, r.Proxy.NoEndpoint, r.Proxy.Resets)
	if len(r.Total.Codes) > 0 {
		fmt.Fprintf(b, "grpc codes:")
		for _, code := range slices.Sorted(maps.Keys(r.Total.Codes)) {
			fmt.Fprintf(b, " %s=%d", code, r.Total.Codes[code])
		}
		b.WriteString("\n")
	}
}

// run is the state of one Run.
type run struct {
	cfg   Config
	start time.Time
	log   *podLog
	proxy *Proxy
	load  *Load
	probe *http.Client
	seq   int
	pods  []*pod // serving pods, oldest first
	all   []*pod // every pod started, in order
	// podOf maps the proxy's endpoint ordinals to indexes in all. The load
	// reads it for every request while rollouts add to it, so it is
	// replaced, never changed.
	podOf atomic.Pointer[[]int]
}

// Run replays cfg.Cycles rolling updates under load and returns what the
// clients saw. It starts cfg.Replicas pods, waits until they are ready,
// starts the load through the load balancer, lets it warm up, then for each
// rollout starts a new pod, waits for its readiness probe, adds it to the
// load balancer, sends SIGTERM to the oldest pod, removes that pod's
// endpoint after cfg.Lag, and waits for it to exit (SIGKILL after
// cfg.Grace). At the end it stops the load and terminates the remaining
// pods.
//
// On an error (a pod that never becomes ready, ctx ending) Run stops
// everything it started and returns the partial Result with the error. Each
// step is bounded in time, so Run always returns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.Check(nil)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	start := time.Now()
	r := &run{
		cfg:   cfg,
		start: start,
		log:   &podLog{sink: cfg.PodLog},
		probe: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: probeTimeout},
	}
	res := &Result{Config: cfg}
	if err = r.run(ctx, res); err != nil && !strings.HasPrefix(err.Error(), "rollout:") {
		err = fmt.Errorf("rollout: %w", err)
	}
	if r.load != nil {
		last := r.load.Stop()
		if len(res.Rollouts) < cfg.Cycles {
			// A partial run: the requests after the last complete rollout
			// still count in the total.
			res.Total.Add(last)
		}
	}
	r.stopPods(ctx)
	if r.proxy != nil {
		r.proxy.Close()
		res.Proxy = r.proxy.Stats()
	}
	r.probe.CloseIdleConnections()
	res.Duration = time.Since(start)
	res.Timeline = r.timeline()
	res.PodLog = r.log.tail("", logTailLines)
	return res, err
}

func (r *run) run(ctx context.Context, res *Result) error {
	var err error
	if r.proxy, err = NewProxy(r.cfg.ListenAddr); err != nil {
		return err
	}
	for range r.cfg.Replicas {
		p, _, err := r.startReadyPod(ctx)
		if err != nil {
			return err
		}
		r.join(p)
		r.pods = append(r.pods, p)
	}
	r.load, err = StartLoad(ctx, LoadConfig{
		Kind:           r.cfg.Load,
		Client:         r.cfg.Client,
		Addr:           r.proxy.Addr(),
		Conns:          r.cfg.Conns,
		WorkersPerConn: r.cfg.WorkersPerConn,
		Fresh:          r.cfg.Fresh,
		Path:           r.cfg.Path,
		Timeout:        r.cfg.RequestTimeout,
		Route:          r.route,
		Epoch:          r.start,
	})
	if err != nil {
		return err
	}
	if r.cfg.Warmup > 0 {
		// The warm-up is a span of time by design: load against the first
		// pods, every connection opened and busy, before anything changes.
		t := time.NewTimer(r.cfg.Warmup)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	// The first rollout only means something once requests succeed.
	flowing := time.NewTimer(r.cfg.RequestTimeout + time.Second)
	defer flowing.Stop()
	select {
	case <-r.load.FirstSuccess():
	case <-flowing.C:
		return fmt.Errorf("no request succeeded through the load balancer before the first rollout; check the load path (%s) and protocol (%s) against what the pod serves; first error: %s; pod output:%s",
			r.cfg.Path, r.cfg.Load, r.load.rec.firstError(), r.pods[0].lastLines(10))
	case <-ctx.Done():
		return ctx.Err()
	}

	for n := 1; n <= r.cfg.Cycles; n++ {
		ro := Rollout{N: n}
		newPod, readyAfter, err := r.startReadyPod(ctx)
		if err != nil {
			return fmt.Errorf("rollout %d: %w", n, err)
		}
		ro.NewPod, ro.ReadyAfter = newPod.name, readyAfter
		r.join(newPod)
		old := r.pods[0]
		r.pods = append(r.pods[1:], newPod)
		ro.OldPod, err = r.terminate(ctx, old)
		if err != nil {
			return fmt.Errorf("rollout %d: %w", n, err)
		}
		if err := r.settle(ctx); err != nil {
			return fmt.Errorf("rollout %d: %w", n, err)
		}
		if n == r.cfg.Cycles {
			ro.Counts = r.load.Stop()
		} else {
			ro.Counts = r.load.Mark()
		}
		res.Rollouts = append(res.Rollouts, ro)
		res.Total.Add(ro.Counts)
	}
	return nil
}

// settlePoll is how often settle looks at the subscriptions.
const settlePoll = 5 * time.Millisecond

// settle waits, for the websocket and sse loads, until every subscription
// the old pod sent away in the current rollout has resumed, or failed to,
// so that the reconnections the old pod caused count in its rollout: the
// last clients it sent away are still on their way when it exits. It
// waits at most a request timeout and the longest reconnection time an
// event stream may ask for.
func (r *run) settle(ctx context.Context) error {
	if r.cfg.Load != LoadWebSocket && r.cfg.Load != LoadSSE {
		return nil
	}
	deadline := time.NewTimer(r.cfg.RequestTimeout + time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	for !r.load.rec.settled() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// startReadyPod starts a pod and waits until its readiness probe answers
// 200, probing every ProbePeriod as the kubelet does.
func (r *run) startReadyPod(ctx context.Context) (*pod, time.Duration, error) {
	r.seq++
	start := time.Now()
	p, err := startPod(r.cfg.Pod, fmt.Sprintf("pod-%d", r.seq), r.log)
	if err != nil {
		return nil, 0, err
	}
	r.all = append(r.all, p)
	url := "http://" + p.probeAddr + r.cfg.ReadyPath
	deadline := time.NewTimer(r.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(r.cfg.ProbePeriod)
	defer tick.Stop()
	fail := func(err error) (*pod, time.Duration, error) {
		p.kill(false)
		<-p.done
		return nil, 0, err
	}
	for {
		last := r.probeOnce(ctx, url)
		if last == "" {
			p.mark(&p.readyAt)
			return p, time.Since(start), nil
		}
		select {
		case <-tick.C:
		case <-p.done:
			return nil, 0, fmt.Errorf("pod %s exited before becoming ready (%s), %s; check the pod command; its last output:%s",
				p.name, p.exitStatus().Status, p.lastWords(), p.lastLines(15))
		case <-deadline.C:
			return fail(fmt.Errorf("pod %s did not become ready within %s: GET %s: %s; check the ready path (Config.ReadyPath, or -ready-path on the command line) and that the pod serves it on the address given for %s; its last output:%s",
				p.name, r.cfg.ReadyTimeout, url, last, p.probePlaceholder, p.lastLines(15)))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}

// probeOnce runs the readiness probe once. It returns "" when ready, or
// what was wrong.
func (r *run) probeOnce(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := r.probe.Do(req)
	if err != nil {
		return err.Error()
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return ""
}

// lateLead is how long before a terminating pod's endpoint is removed the
// Late clients arrive: late enough that every keep-alive client has long
// moved off the pod, early enough that the load balancer surely still
// routes them to it.
const lateLead = 100 * time.Millisecond

// terminate does to p what the kubelet and kube-proxy do to a deleted pod:
// SIGTERM now, endpoint removal after the lag (in parallel), SIGKILL at the
// end of the grace period. It returns once the pod has exited and left the
// load balancer.
func (r *run) terminate(ctx context.Context, p *pod) (PodExit, error) {
	if err := p.terminate(); err != nil {
		p.kill(false)
	}
	// The lag counts from the SIGTERM.
	removed := make(chan struct{})
	remove := func() {
		r.remove(p)
		close(removed)
	}
	var stopRemoval func() bool
	if r.cfg.Late > 0 {
		stopRemoval = r.removeAfterLate(remove)
	} else {
		stopRemoval = time.AfterFunc(max(r.cfg.Lag, 0), remove).Stop
	}
	if canWatchListeners {
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			p.watchListener()
		}()
		// The watcher returns once the pod has exited, which happens
		// below before terminate returns.
		defer func() { <-watched }()
	}
	if r.awaitExit(ctx, p) {
		if stopRemoval() {
			r.remove(p)
		}
		return p.exitStatus(), ctx.Err()
	}
	select {
	case <-removed:
	case <-ctx.Done():
		if stopRemoval() {
			r.remove(p)
		}
		return p.exitStatus(), ctx.Err()
	}
	return p.exitStatus(), nil
}

// removeAfterLate sends the Late clients lateLead before the lag is over,
// and calls remove once it is and their requests are: on a loaded machine
// the endpoint stays until the load balancer has routed them, as it would
// in a cluster where they came in time. stop cancels what has not
// happened yet, and reports whether it prevented remove.
func (r *run) removeAfterLate(remove func()) (stop func() bool) {
	var (
		mu              sync.Mutex
		stopped, called bool
	)
	t := time.AfterFunc(max(r.cfg.Lag-lateLead, 0), func() {
		done := r.load.Arrive(r.cfg.Late)
		lag := time.NewTimer(min(lateLead, max(r.cfg.Lag, 0)))
		defer lag.Stop()
		<-lag.C
		<-done
		mu.Lock()
		call := !stopped
		called = call
		mu.Unlock()
		if call {
			remove()
		}
	})
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		if called || stopped {
			return false
		}
		stopped = true
		t.Stop()
		return true
	}
}

// join adds p to the load balancer, recording which endpoint it is first.
func (r *run) join(p *pod) {
	podOf := []int{}
	if old := r.podOf.Load(); old != nil {
		podOf = slices.Clone(*old)
	}
	// The proxy numbers endpoints in the order they are first added, and
	// every pod has an address of its own.
	podOf = append(podOf, slices.Index(r.all, p))
	r.podOf.Store(&podOf)
	r.proxy.AddEndpoint(p.addr)
	p.mark(&p.joinedAt)
}

// remove takes p out of the load balancer.
func (r *run) remove(p *pod) {
	r.proxy.RemoveEndpoint(p.addr)
	p.mark(&p.removedAt)
}

// route returns the index in r.all of the pod a client connection was
// routed to, or -1.
func (r *run) route(local net.Addr) int {
	ord := r.proxy.RouteOf(local)
	podOf := r.podOf.Load()
	if ord < 0 || podOf == nil || ord >= len(*podOf) {
		return -1
	}
	return (*podOf)[ord]
}

// timeline assembles the run's timeline, once everything has stopped.
func (r *run) timeline() record.Timeline {
	tl := record.Timeline{Interval: TimelineBucket, LoadStart: record.Never, LoadEnd: record.Never}
	var served [][]int64
	if r.load != nil {
		lt := r.load.timeline()
		tl.LoadStart, tl.LoadEnd = lt.start, lt.end
		tl.Failures, tl.FailuresLeftOut = lt.failures, lt.failedLeftOut
		tl.ServedLeftOut = lt.servedLeftOut
		served = lt.served
	}
	var departures, reconnects [][]time.Duration
	if r.load != nil {
		lt := r.load.timeline()
		departures, reconnects = byPod(lt.departures, len(r.all)), byPod(lt.reconnects, len(r.all))
	}
	for i, p := range r.all {
		pt := p.timeline(r.start)
		if i < len(served) {
			pt.Served = served[i]
		}
		if departures != nil {
			pt.Departures, pt.Reconnects = departures[i], reconnects[i]
		}
		tl.Pods = append(tl.Pods, pt)
	}
	return tl
}

// awaitExit waits for p, which has been sent SIGTERM, to exit: it SIGKILLs
// it at the end of the grace period, as the kubelet does, or at once if ctx
// ends, and reports whether ctx ended.
func (r *run) awaitExit(ctx context.Context, p *pod) (aborted bool) {
	grace := time.NewTimer(r.cfg.Grace)
	defer grace.Stop()
	select {
	case <-p.done:
	case <-grace.C:
		p.kill(true)
		<-p.done
	case <-ctx.Done():
		p.kill(false)
		<-p.done
		return true
	}
	return false
}

// stopPods terminates the pods still serving, all at once: SIGTERM and
// SIGKILL after the grace period, or SIGKILL at once if ctx has ended
// (the run was aborted, and nobody waits for a clean exit).
func (r *run) stopPods(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range r.pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ctx.Err() != nil || p.terminate() != nil {
				p.kill(false)
			}
			r.awaitExit(ctx, p)
		}()
	}
	wg.Wait()
	r.pods = nil
}
