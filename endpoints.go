package lameduck

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lameduck/lameduck/internal/kube"
	"github.com/lameduck/lameduck/internal/testhook"
)

// Evidence from the cluster, for the adaptive drain delay. In Kubernetes
// the control plane says when a pod stops receiving traffic: moments after
// the pod is deleted, the EndpointSlices that list its address mark it not
// ready (and terminating), and kube-proxy and ingress controllers act on
// that change. During the lame-duck phase the Coordinator watches the
// EndpointSlices of its namespace through package internal/kube, and
// takes the moment every slice that lists the pod's address stops routing
// to it, plus [EndpointsAllowance], as the evidence that routing has
// caught up (delay.go). This file turns the watch's snapshots into what
// the delay and the hold read, with the moment each changed.

// routing is what the EndpointSlices say of the pod.
type routing int

const (
	routingUnknown routing = iota // the first answer has not come
	routingHere                   // a slice routes to the pod
	routingGone                   // every slice that listed the pod has stopped routing to it
	routingNone                   // no evidence: the watch failed, or no slice lists the pod
)

// lastness is what the EndpointSlices say of the pod as the last endpoint
// of its Services (see [kube.Snapshot]). A terminating pod that is the last
// endpoint of a Service and turns its readiness off leaves the Service
// with no endpoint: kube-proxy then rejects every new connection until a
// replacement is ready.
type lastness int

const (
	lastUnknown   lastness = iota // the first answer has not come
	lastNot                       // every Service that lists the pod has another ready endpoint, or there is no evidence
	lastReplacing                 // a Service that lists the pod has no other ready endpoint, and another is starting
	lastAlone                     // a Service that lists the pod has no other ready endpoint, and none is starting
)

// endpointsWatch follows the EndpointSlices of the pod's namespace for
// the drain delay.
type endpointsWatch struct {
	api   *kube.Client
	clock testhook.Clock
	log   *slog.Logger
	wake  chan struct{} // set by start

	// While the process serves, one request checks that the API answers
	// and opens the connection the watch will use: the watch then starts
	// at the signal without a TLS handshake, and a refusal is said at
	// start-up. warmed is closed once it is over; refused is set if the
	// API refused for good (401, 403). Guarded by mu.
	warmed    chan struct{}
	refused   bool
	stopWarm  context.CancelFunc
	warmGroup sync.WaitGroup

	mu    sync.Mutex
	state routing
	since time.Time // when state became routingGone
	// last is what the slices say of the pod as the last endpoint of its
	// Services, and alone names the Services that have no other ready
	// endpoint. Guarded by mu.
	last  lastness
	alone []string
}

// read returns what the slices say, and since when they have stopped
// routing to the pod.
func (w *endpointsWatch) read() (routing, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.since
}

func (w *endpointsWatch) set(r routing) {
	w.mu.Lock()
	changed := w.state != r
	if changed && r == routingGone {
		w.since = w.clock.Now()
	}
	w.state = r
	w.mu.Unlock()
	if changed {
		poke(w.wake)
	}
}

// lastEndpoint returns what the slices say of the pod as the last
// endpoint of its Services, and the Services that have no other ready
// endpoint.
func (w *endpointsWatch) lastEndpoint() (lastness, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.alone
}

func (w *endpointsWatch) setLast(l lastness, alone []string) {
	w.mu.Lock()
	changed := w.last != l
	w.last, w.alone = l, alone
	w.mu.Unlock()
	if changed {
		poke(w.wake)
	}
}

// fail gives up on the evidence from the cluster, saying why, once.
func (w *endpointsWatch) fail(err error) {
	w.log.Warn("lameduck: cannot watch the EndpointSlices; the adaptive drain delay falls back to its minimum",
		slog.Any("error", err))
	w.setLast(lastNot, nil)
	w.set(routingNone)
}

// prepareEndpoints returns the watch of an adaptive drain delay in
// Kubernetes, and starts checking the API, or nil without an adaptive
// delay or outside Kubernetes. A configuration that cannot work, such as a
// pod without its service account, is logged now. Call close when Run
// returns.
func prepareEndpoints(c *Coordinator) *endpointsWatch {
	cfg := c.opts.delay
	if !cfg.adaptive || cfg.max == 0 {
		return nil
	}
	api, err := c.opts.kube, error(nil)
	if api == nil {
		api, err = kube.InCluster()
	}
	if api == nil && err == nil {
		return nil
	}
	w := &endpointsWatch{api: api, clock: c.clock, log: c.log, warmed: make(chan struct{}), stopWarm: func() {}}
	if err != nil {
		w.fail(err)
		w.refused = true
		close(w.warmed)
		return w
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stopWarm = cancel
	w.warmGroup.Add(1)
	go func() {
		defer w.warmGroup.Done()
		defer close(w.warmed)
		if err := api.Check(ctx); kube.Refused(err) {
			w.fail(err)
			w.mu.Lock()
			w.refused = true
			w.mu.Unlock()
		}
		// Otherwise the watch tries again at the signal, and says why if
		// it fails then.
	}()
	return w
}

// attrs describe the watch for the serving line: how long after the
// signal the hold as the last endpoint and the delay may last together,
// which is how long a replacement may take to be ready for no connection
// to fail. A nil w, none.
func (w *endpointsWatch) attrs(c *Coordinator) []slog.Attr {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	refused := w.refused
	w.mu.Unlock()
	if refused {
		return nil
	}
	return []slog.Attr{slog.Duration("last_endpoint_reach", c.opts.lastEndpointReach())}
}

// start readies the watch to run, poking wake on every change, and reports
// whether it should: not if the API refused it while the process served.
// A check still in progress is abandoned: the watch asks anew.
func (w *endpointsWatch) start(wake chan struct{}) bool {
	w.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wake = wake
	if w.refused {
		w.state, w.last = routingNone, lastNot
		return false
	}
	return true
}

// close ends the check of the API, if it still runs. A nil w is none.
func (w *endpointsWatch) close() {
	if w == nil {
		return
	}
	w.stopWarm()
	w.warmGroup.Wait()
}

// run watches until ctx ends, or until the watch gives up, which is said.
func (w *endpointsWatch) run(ctx context.Context) {
	if err := w.api.Watch(ctx, w.update); err != nil {
		w.fail(err)
	}
}

// update takes in what the slices say of the pod now.
func (w *endpointsWatch) update(s kube.Snapshot) {
	switch {
	case len(s.Alone) == 0:
		w.setLast(lastNot, nil)
	case s.Replacing:
		w.setLast(lastReplacing, s.Alone)
	default:
		w.setLast(lastAlone, s.Alone)
	}
	switch {
	case s.Routed:
		w.set(routingHere)
	case s.Listed:
		// Not ready anywhere, or gone from the slices that listed it.
		w.set(routingGone)
	default:
		// No slice lists the pod: no Service routes to it, or its
		// address is not the one the slices know.
		if state, _ := w.read(); state == routingUnknown {
			w.log.Warn("lameduck: no EndpointSlice lists the pod's address; the adaptive drain delay falls back to its minimum",
				slog.String("namespace", w.api.Namespace), slog.Any("addresses", w.api.Addrs),
				slog.String("fix", "if a Service selects this pod, set POD_IP from the downward API (fieldRef: status.podIP)"))
		}
		w.set(routingNone)
	}
}
