package grpcserver

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
)

// checkPeriod is how often the readiness checks are run while health Watch
// streams are open, so that a check's failure and recovery reach them. A
// Kubernetes readiness probe runs every few seconds (periodSeconds is 10 by
// default, 2 in the examples); once a second is sooner than any of them
// looks, and, as the calls are shared with the probes, does not add calls
// to a dependency that probes already make that often. Set Check.Cache to
// call a dependency less often.
const checkPeriod = time.Second

// healthService is the standard health service, with two changes: the
// Coordinator's readiness checks take part in the status, and Watch
// streams end when the drain begins.
//
// The status of health.Server follows the lifecycle (see
// watchReadiness); while it says SERVING, a failing check makes the answer
// NOT_SERVING, for the overall service "" and every other service, as
// /readyz answers 503. Check runs the checks, sharing calls in progress
// and cached results with every probe; Watch streams are told of a check's
// failure and recovery by a loop that runs the checks every checkPeriod
// while any stream is open, and by every Check.
//
// health.Server.Watch returns only when its stream's context ends, and
// GracefulStop waits for it: an open Watch, which grpc-health-probe -watch,
// service meshes and grpc-go's client-side health checking keep, would
// otherwise hold the exit until the deadline.
type healthService struct {
	*health.Server
	stop   context.Context // ends when the drain begins, or at Close
	checks *checkState
}

// Check answers the status of health.Server, NOT_SERVING instead of
// SERVING while a readiness check fails.
func (h *healthService) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	resp, err := h.Server.Check(ctx, req)
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING || !h.checks.enabled() {
		return resp, err
	}
	failing, ok := h.checks.evaluate(ctx)
	if !ok {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &healthpb.HealthCheckResponse{Status: combine(resp.Status, failing)}, nil
}

// List answers as Check does, for every service.
func (h *healthService) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	resp, err := h.Server.List(ctx, req)
	if err != nil || !h.checks.enabled() {
		return resp, err
	}
	failing, ok := h.checks.evaluate(ctx)
	if !ok {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	for _, st := range resp.Statuses {
		st.Status = combine(st.Status, failing)
	}
	return resp, nil
}

// Watch sends the status of health.Server, NOT_SERVING instead of SERVING
// while a readiness check fails, on every change of either, until the
// client leaves or the drain begins.
func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.stop, cancel)()
	if h.checks.enabled() {
		h.checks.addWatcher()
		defer h.checks.removeWatcher()
	}

	// health.Server.Watch, in a goroutine of its own, tells the status of
	// health.Server through base; this goroutine alone sends on stream.
	base := &baseStream{Health_WatchServer: stream, ctx: ctx, changed: make(chan struct{}, 1)}
	baseDone := make(chan error, 1)
	go func() { baseDone <- h.Server.Watch(req, base) }()
	var (
		last      healthpb.HealthCheckResponse_ServingStatus = -1 // sent; -1 before the first Send
		baseNow   healthpb.HealthCheckResponse_ServingStatus = -1 // -1 until health.Server.Watch sends
		failing   bool
		sendErr   error
		watchErr  error
		baseEnded bool
	)
	for sendErr == nil {
		checksChanged, checksFailing := h.checks.current()
		select {
		case <-base.changed:
			was := baseNow
			baseNow = base.latest()
			failing = checksFailing
			if baseNow == healthpb.HealthCheckResponse_SERVING && was != baseNow && h.checks.enabled() {
				// Turning SERVING, at MarkReady or as the stream opens:
				// ask the checks first rather than send a SERVING they
				// may take back.
				f, ok := h.checks.evaluate(ctx)
				if !ok {
					continue // ctx ended: baseDone follows
				}
				failing = f
			}
		case <-checksChanged:
			_, failing = h.checks.current()
		case watchErr = <-baseDone:
			baseEnded = true
		}
		if baseEnded || ctx.Err() != nil {
			break
		}
		if now := combine(baseNow, failing); baseNow >= 0 && now != last {
			last = now
			sendErr = stream.Send(&healthpb.HealthCheckResponse{Status: now})
		}
	}
	cancel()
	if !baseEnded {
		watchErr = <-baseDone
	}
	if sendErr != nil {
		return status.Error(codes.Canceled, "Stream has ended.")
	}
	if h.stop.Err() == nil || stream.Context().Err() != nil {
		return watchErr // the client went away
	}
	// The drain began. The last change of status may not have been sent:
	// make sure the client has the current one, then end the stream. The
	// status is NOT_SERVING (health.Server.Shutdown) unless the service is
	// unknown.
	now := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	if resp, err := h.Server.Check(stream.Context(), req); err == nil {
		now = resp.Status
	} else if status.Code(err) != codes.NotFound {
		return err
	}
	if last != now {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: now}); err != nil {
			return err
		}
	}
	return nil
}

// combine is the status a client is told: the lifecycle's, unless checks
// fail while it says SERVING.
func combine(base healthpb.HealthCheckResponse_ServingStatus, failing bool) healthpb.HealthCheckResponse_ServingStatus {
	if failing && base == healthpb.HealthCheckResponse_SERVING {
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	return base
}

// baseStream is the stream given to health.Server.Watch: it keeps the
// latest status sent, for Watch to read, and its context ends when the
// drain begins.
type baseStream struct {
	healthpb.Health_WatchServer
	ctx     context.Context
	changed chan struct{} // holds a value when a status was sent since latest

	mu   sync.Mutex
	last healthpb.HealthCheckResponse_ServingStatus // guarded by mu
}

func (b *baseStream) Context() context.Context { return b.ctx }

func (b *baseStream) Send(resp *healthpb.HealthCheckResponse) error {
	b.mu.Lock()
	b.last = resp.Status
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return nil
}

func (b *baseStream) latest() healthpb.HealthCheckResponse_ServingStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// checkState is what the health service knows of the readiness checks.
type checkState struct {
	ld *lameduck.Coordinator

	once      sync.Once
	hasChecks bool // the Coordinator has checks; set once

	mu sync.Mutex
	// Guarded by mu.
	failing  bool          // the last evaluation failed
	changed  chan struct{} // closed and replaced when failing changes
	watchers int           // open Watch streams: the loop runs while there are any
	stopLoop context.CancelFunc
	loopDone chan struct{}
}

func newCheckState(ld *lameduck.Coordinator) *checkState {
	return &checkState{ld: ld, changed: make(chan struct{})}
}

// enabled reports whether the Coordinator has checks. Health RPCs arrive
// once Run has begun, when checks can no longer be added, so the answer is
// looked up once.
func (c *checkState) enabled() bool {
	c.once.Do(func() { c.hasChecks = len(c.ld.Status().Checks) > 0 })
	return c.hasChecks
}

// current returns whether the checks last failed, and a channel closed
// when that changes.
func (c *checkState) current() (<-chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed, c.failing
}

// evaluate runs the checks through the Coordinator, which shares calls in
// progress and cached results among every caller, so that a flood of Check
// and Watch calls never stacks calls on a dependency. It reports whether
// they fail, and false for ok if ctx ended first.
func (c *checkState) evaluate(ctx context.Context) (failing, ok bool) {
	err := c.ld.CheckReadiness(ctx)
	if ctx.Err() != nil {
		return false, false
	}
	failing = err != nil
	c.mu.Lock()
	if failing != c.failing {
		c.failing = failing
		close(c.changed)
		c.changed = make(chan struct{})
	}
	c.mu.Unlock()
	return failing, true
}

// addWatcher counts an open Watch stream, and starts the loop for the
// first one.
func (c *checkState) addWatcher() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchers++
	if c.watchers == 1 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		c.stopLoop, c.loopDone = cancel, done
		go c.loop(ctx, done)
	}
}

// removeWatcher counts a Watch stream that ended, and stops the loop after
// the last one, waiting for it to return: nothing of a Watch outlives it.
func (c *checkState) removeWatcher() {
	c.mu.Lock()
	c.watchers--
	var done chan struct{}
	if c.watchers == 0 {
		c.stopLoop()
		done = c.loopDone
	}
	c.mu.Unlock()
	if done != nil {
		<-done
	}
}

// loop runs the checks every checkPeriod while the process is ready, until
// ctx ends.
func (c *checkState) loop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(checkPeriod)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		select {
		case <-c.ld.MarkedReady():
			select {
			case <-c.ld.Entered(lameduck.PhaseLameDuck): // shutting down: NOT_SERVING for good
			default:
				c.evaluate(ctx)
			}
		default:
		}
	}
}
