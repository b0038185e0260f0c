package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// LoadKind selects the protocol of the load.
type LoadKind string

const (
	// LoadHTTP1 runs raw HTTP/1.1 keep-alive clients ([HTTP1Client]), one
	// connection per worker, reconnecting through the load balancer after a
	// "Connection: close" or a failure.
	LoadHTTP1 LoadKind = "http1"
	// LoadH2C runs net/http clients speaking HTTP/2 with prior knowledge
	// (h2c): one transport (one connection at a time) per connection slot,
	// with several concurrent workers each.
	LoadH2C LoadKind = "h2c"
	// LoadGRPC runs grpc-go clients doing unary
	// grpc.testing.TestService/EmptyCall calls: one ClientConn per
	// connection slot, with several concurrent workers each. Its client
	// is package grpcload's, given as [LoadConfig.Client].
	LoadGRPC LoadKind = "grpc"
	// LoadWebSocket holds one websocket per connection slot (GET
	// [WebSocketPath] by default, as the built-in pods serve it), whose
	// numbered text messages it counts as requests. When the pod closes
	// it with 1012 (service restart) or 1001 (going away), the client
	// reconnects through the load balancer at once with ?from= the next
	// number. Any other end is a failure: a close without a close frame
	// (1006) is an eof, a reset a reset, a failed handshake refused, 5xx or
	// other, and a gap in the numbers (a message lost) other.
	LoadWebSocket LoadKind = "websocket"
	// LoadSSE holds one event stream (server-sent events) per connection
	// slot (GET [EventsPath] by default, with Accept: text/event-stream),
	// whose numbered events (id and data N) it counts as requests. When
	// the pod ends the stream (its last chunk, or after a retry field),
	// the client waits the stream's retry time, as EventSource does, and
	// reconnects through the load balancer with Last-Event-ID. A stream
	// cut without its last chunk is an eof, and a gap in the ids other.
	LoadSSE LoadKind = "sse"
)

// LoadKinds lists the supported loads, for usage texts and validation.
var LoadKinds = []LoadKind{LoadHTTP1, LoadH2C, LoadGRPC, LoadWebSocket, LoadSSE}

// builtinLoad reports whether this package runs kind itself.
func builtinLoad(kind LoadKind) bool {
	switch kind {
	case LoadHTTP1, LoadH2C, LoadWebSocket, LoadSSE:
		return true
	}
	return false
}

// DefaultPath returns the path a load of kind requests by default: "/",
// or the long-lived endpoint the built-in pods serve for the websocket and
// sse loads.
func DefaultPath(kind LoadKind) string {
	switch kind {
	case LoadWebSocket:
		return WebSocketPath
	case LoadSSE:
		return EventsPath
	}
	return "/"
}

// Default load settings.
const (
	// DefaultConns is the default number of client connections, as in the
	// measurements of the design notes.
	DefaultConns = 32
	// DefaultWorkersPerConn is how many concurrent requests each h2c or
	// gRPC connection carries: more than one, so that a GOAWAY or a reset
	// finds streams in flight.
	DefaultWorkersPerConn = 2
)

// LoadConfig configures [StartLoad].
type LoadConfig struct {
	// Kind is the protocol; empty means LoadHTTP1.
	Kind LoadKind
	// Addr is the host:port to send load to (the load balancer).
	Addr string
	// Conns is the number of client connections; zero means DefaultConns.
	Conns int
	// WorkersPerConn is the number of concurrent requests per connection
	// for h2c and gRPC; zero means DefaultWorkersPerConn. HTTP/1 always has
	// one request at a time per connection.
	WorkersPerConn int
	// Fresh is the number of extra clients that open a new connection for
	// every request and close it after, about 100 a second each: clients
	// that come and go, whose connections show where the load balancer
	// routes at every moment, as settled keep-alive connections do not.
	Fresh int
	// Path is the HTTP request path; empty means [DefaultPath] of Kind.
	// Ignored for gRPC.
	Path string
	// Timeout bounds each request; zero means DefaultRequestTimeout.
	Timeout time.Duration
	// Route, if not nil, names the pod a client connection was routed to,
	// given the connection's local address: an index into the run's pods,
	// or -1. Without it the load's timeline has no pods.
	Route func(local net.Addr) int
	// Epoch is time zero of the load's timeline; zero means the start of
	// the load.
	Epoch time.Time
	// Client runs a load that this package does not run itself: LoadGRPC
	// needs one (package grpcload's), the other kinds take none.
	Client Protocol
}

// Load is running load. Its requests are counted in windows: [Load.Mark]
// closes one and starts the next, [Load.Stop] closes the last.
type Load struct {
	cfg    LoadConfig
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	rec    *recorder

	closers  []func()
	stopOnce sync.Once
	// mu guards lanes (one per worker, read once the workers have
	// stopped) and stopping, set once Stop begins: no worker starts then.
	mu       sync.Mutex
	lanes    []*lane
	stopping bool
	last     Counts
	started  time.Time
	stopped  time.Time
}

// StartLoad starts load against cfg.Addr and returns at once. The load runs
// until [Load.Stop] or until ctx ends; requests interrupted because ctx ended
// are not counted.
func StartLoad(ctx context.Context, cfg LoadConfig) (*Load, error) {
	if cfg.Kind == "" {
		cfg.Kind = LoadHTTP1
	}
	if cfg.Conns <= 0 {
		cfg.Conns = DefaultConns
	}
	if cfg.WorkersPerConn <= 0 {
		cfg.WorkersPerConn = DefaultWorkersPerConn
	}
	if cfg.Path == "" {
		cfg.Path = DefaultPath(cfg.Kind)
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return nil, fmt.Errorf("rollout: load path %q must start with /", cfg.Path)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRequestTimeout
	}
	if cfg.Conns > maxConns || cfg.WorkersPerConn > maxConns/cfg.Conns {
		return nil, fmt.Errorf("rollout: load of %d connections × %d workers is too much for one machine; use at most %d workers in all", cfg.Conns, cfg.WorkersPerConn, maxConns)
	}
	if err := checkClient(cfg.Kind, cfg.Client, "LoadConfig.Client"); err != nil {
		return nil, err
	}
	if err := checkLoopback(cfg.Addr); err != nil {
		return nil, fmt.Errorf("rollout: load: %w", err)
	}
	l := &Load{cfg: cfg, stop: make(chan struct{}), rec: newRecorder(), started: time.Now()}
	if l.cfg.Epoch.IsZero() {
		l.cfg.Epoch = l.started
	}
	l.ctx, l.cancel = context.WithCancel(ctx)
	switch cfg.Kind {
	case LoadHTTP1:
		l.startHTTP1()
	case LoadH2C:
		l.startH2C()
	case LoadWebSocket, LoadSSE:
		l.startStreams()
	default:
		if err := cfg.Client.Start(l); err != nil {
			l.Stop()
			return nil, err
		}
	}
	for range cfg.Fresh {
		l.startFresh()
	}
	return l, nil
}

// freshPause is the pause between two requests of a Fresh client.
const freshPause = 10 * time.Millisecond

// startFresh starts one client that opens a new connection for every
// request, in the load's protocol.
func (l *Load) startFresh() {
	get := l.freshGet()
	l.loop(func(ctx context.Context) (net.Addr, error) {
		t := time.NewTimer(freshPause)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return get(ctx)
	})
}

// freshGet returns a client's request on a new connection of its own, in
// the load's protocol, closed after the response.
func (l *Load) freshGet() func(ctx context.Context) (net.Addr, error) {
	switch l.cfg.Kind {
	case LoadH2C:
		url := "http://" + l.cfg.Addr + l.cfg.Path
		return func(ctx context.Context) (net.Addr, error) {
			var dialed atomic.Pointer[trackedConn]
			tr := l.h2cTransport(&dialed)
			defer tr.CloseIdleConnections()
			return h2cGet(ctx, &http.Client{Transport: tr}, url, l.cfg.Timeout, &dialed)
		}
	case LoadHTTP1:
		return func(ctx context.Context) (net.Addr, error) {
			c := &HTTP1Client{Addr: l.cfg.Addr, Path: l.cfg.Path, Timeout: l.cfg.Timeout}
			defer c.Close()
			_, err := c.Get(ctx)
			return c.LocalAddr(), err
		}
	case LoadWebSocket, LoadSSE:
		return l.freshStream
	}
	return l.cfg.Client.Fresh(l)
}

// Arrive sends n requests at once, each from a new client on a connection
// of its own, counted with the load's: clients that reach the load
// balancer while the keep-alive ones have long settled, and find whatever
// it still routes to. The channel it returns is closed once every request
// is over. It does nothing once the load is stopping.
func (l *Load) Arrive(n int) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	done := make(chan struct{})
	if l.stopping {
		close(done)
		return done
	}
	var requests sync.WaitGroup
	for range n {
		get := l.freshGet()
		ln := &lane{}
		l.lanes = append(l.lanes, ln)
		l.wg.Add(1)
		requests.Add(1)
		go func() {
			defer l.wg.Done()
			defer requests.Done()
			local, err := get(l.ctx)
			if l.ctx.Err() == nil {
				l.record(ln, local, err)
			}
		}()
	}
	go func() {
		requests.Wait()
		close(done)
	}()
	return done
}

// Mark ends the current counting window and returns its counts.
func (l *Load) Mark() Counts { return l.rec.mark() }

// FirstSuccess returns a channel closed when the first request succeeds,
// so a caller can wait until load flows before changing anything.
func (l *Load) FirstSuccess() <-chan struct{} { return l.rec.firstOK }

// Completed returns the number of requests counted so far, all windows
// together. It lets a caller wait until load is flowing.
func (l *Load) Completed() int64 { return l.rec.requests.Load() }

// Stop asks every worker to stop after its current request, waits for them
// (each request is bounded by the timeout), closes the connections and
// returns the counts of the last window. Calling it again returns the same
// counts.
func (l *Load) Stop() Counts {
	l.stopOnce.Do(func() {
		l.mu.Lock()
		l.stopping = true
		l.mu.Unlock()
		close(l.stop)
		l.wg.Wait()
		// The load ends with its last request, whose failure, if it
		// fails, is on the timeline.
		l.stopped = time.Now()
		l.cancel()
		for _, c := range l.closers {
			c()
		}
		l.last = l.rec.mark()
	})
	return l.last
}

// loadTimeline is what a stopped load recorded over time.
type loadTimeline struct {
	start, end time.Duration
	// served[pod][bucket] counts the requests served per pod and interval.
	served        [][]int64
	servedLeftOut int64
	failures      []record.Failure
	failedLeftOut int64
	// departures and reconnects of the stream loads, in no order.
	departures, reconnects []PodEvent
}

// timeline returns what the load recorded over time; call it after Stop.
func (l *Load) timeline() loadTimeline {
	tl := loadTimeline{start: l.started.Sub(l.cfg.Epoch), end: l.stopped.Sub(l.cfg.Epoch)}
	tl.served, tl.servedLeftOut = servedByPod(l.lanes)
	l.rec.mu.Lock()
	defer l.rec.mu.Unlock()
	tl.failures = slices.Clone(l.rec.failures)
	// Workers stamp a failure before taking the lock, so the list is only
	// nearly in order.
	slices.SortStableFunc(tl.failures, func(a, b record.Failure) int { return cmp.Compare(a.At, b.At) })
	tl.failedLeftOut = l.rec.leftOut
	tl.departures, tl.reconnects = slices.Clone(l.rec.departures), slices.Clone(l.rec.reconnects)
	return tl
}

// failurePause is how long a worker waits after a failed request before its
// next one. Without it, a client that fails fast (a gRPC channel in
// TRANSIENT_FAILURE fails every call at once until its reconnect backoff
// ends) would count an outage as however many calls a CPU can fail per
// second, hundreds of thousands, and starve the pods of CPU. With it an
// outage counts as a rate per worker; every failure is still counted.
const failurePause = 10 * time.Millisecond

// loop runs one worker: do requests until stopped, counting each. do
// returns the local address of the connection the request went on (nil if
// none), which tells the pod that served it.
func (l *Load) loop(do func(ctx context.Context) (net.Addr, error)) {
	ln := &lane{}
	l.lanes = append(l.lanes, ln)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		pause := time.NewTimer(0)
		defer pause.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-l.ctx.Done():
				return
			default:
			}
			local, err := do(l.ctx)
			if l.ctx.Err() != nil {
				return // aborted: not the server's failure
			}
			if !l.record(ln, local, err) {
				continue
			}
			pause.Reset(failurePause)
			select {
			case <-pause.C:
			case <-l.stop:
				return
			case <-l.ctx.Done():
				return
			}
		}
	}()
}

// record counts a request made from local, on ln's lane of the timeline,
// and reports whether it failed.
func (l *Load) record(ln *lane, local net.Addr, err error) (failed bool) {
	at := time.Since(l.cfg.Epoch)
	pod := -1
	if local != nil && l.cfg.Route != nil {
		pod = l.cfg.Route(local)
	}
	if err != nil {
		l.rec.failure(err, pod, at)
		return true
	}
	l.rec.success()
	ln.add(int(at/TimelineBucket), pod)
	return false
}

func (l *Load) startHTTP1() {
	for range l.cfg.Conns {
		c := &HTTP1Client{Addr: l.cfg.Addr, Path: l.cfg.Path, Timeout: l.cfg.Timeout}
		l.closers = append(l.closers, func() { c.Close() })
		l.loop(func(ctx context.Context) (net.Addr, error) {
			_, err := c.Get(ctx)
			return c.LocalAddr(), err
		})
	}
}

// startH2C uses net/http's client over HTTP/2 with prior knowledge, which
// is acceptable here although its HTTP/1 path is not: the retry that hides
// failures (an idempotent request replayed after its reused connection
// broke) belongs to the HTTP/1 path, which Protocols (UnencryptedHTTP2 only)
// never uses. For HTTP/2 the transport retries at most requests the server
// provably did not process: streams above the last stream ID of a GOAWAY,
// streams refused with REFUSED_STREAM, and requests not yet written when the
// connection was found unusable. A correct client does that too, and no
// request a server accepted can be lost that way, so those retries hide no
// failure of the server; everything else (a connection reset or closed with
// streams in flight) comes back as an error and is counted.
func (l *Load) startH2C() {
	url := "http://" + l.cfg.Addr + l.cfg.Path
	for range l.cfg.Conns {
		// The last connection dialed, which a request that failed before
		// the transport handed it a connection was waiting for.
		var dialed atomic.Pointer[trackedConn]
		tr := l.h2cTransport(&dialed)
		client := &http.Client{Transport: tr}
		l.closers = append(l.closers, tr.CloseIdleConnections)
		for range l.cfg.WorkersPerConn {
			l.loop(func(ctx context.Context) (net.Addr, error) { return h2cGet(ctx, client, url, l.cfg.Timeout, &dialed) })
		}
	}
}

// dialSlot is the context key of the slot where an h2c transport records
// the connection it dials for a request.
type dialSlot struct{}

// h2cTransport returns a transport for one h2c client, which records in
// dialed the last connection it dialed.
func (l *Load) h2cTransport(dialed *atomic.Pointer[trackedConn]) *http.Transport {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	dial := trackingDialer(l.cfg.Timeout, nil)
	return &http.Transport{
		Protocols: &protocols,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			tc, _ := c.(*trackedConn)
			var de *dialError
			if errors.As(err, &de) {
				// A failure of the request is this dial's, not that of
				// the connection dialed before.
				tc = &trackedConn{local: de.local}
			}
			if tc != nil {
				dialed.Store(tc)
				// The transport dials with the context of the request
				// that needs the connection.
				if slot, ok := ctx.Value(dialSlot{}).(*atomic.Pointer[trackedConn]); ok {
					slot.Store(tc)
				}
			}
			return c, err
		},
		// One connection at a time per transport, as a client with one
		// HTTP/2 connection to a Service has: concurrent first requests
		// wait for the one dial instead of each opening a connection.
		MaxConnsPerHost:    1,
		DisableCompression: true,
		// Proxy stays nil: an HTTP_PROXY in the environment must not
		// take the load off loopback.
	}
}

// h2cGet does one request and classifies its failure. It returns the local
// address of the connection the request went on: the one the transport
// handed it, or else the one its transport dialed last (HTTP/2 hands out a
// connection only once its handshake is done, and one that broke before
// was still the request's).
func h2cGet(ctx context.Context, client *http.Client, url string, timeout time.Duration, dialed *atomic.Pointer[trackedConn]) (local net.Addr, err error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The transport may get a connection more than once for one request
	// (a cached connection found dead, then a dial), so each attempt
	// forgets what the previous one recorded.
	var conn atomic.Pointer[trackedConn]
	// own is the connection the transport dialed for this request, if it
	// dialed one: another worker's request may dial meanwhile, so dialed
	// alone could name a connection this request never used.
	var own atomic.Pointer[trackedConn]
	defer func() {
		tc := conn.Load()
		if tc == nil {
			tc = own.Load()
		}
		if tc == nil {
			tc = dialed.Load()
		}
		if tc != nil {
			local = tc.LocalAddr()
		}
	}()
	trace := &httptrace.ClientTrace{
		GetConn: func(string) { conn.Store(nil) },
		GotConn: func(i httptrace.GotConnInfo) {
			if tc, ok := i.Conn.(*trackedConn); ok {
				conn.Store(tc)
			}
		},
	}
	rctx = context.WithValue(rctx, dialSlot{}, &own)
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(rctx, trace), http.MethodGet, url, nil)
	if err != nil {
		return nil, &Failure{Kind: record.KindOther, Err: err}
	}
	resp, err := client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		tc := conn.Load()
		silent := tc == nil || !tc.heard.Load()
		return nil, &Failure{Kind: classifyH2Error(err, silent, rctx.Err() != nil), Err: err}
	}
	switch {
	case resp.StatusCode >= 500:
		return nil, &Failure{Kind: record.Kind5xx, Err: fmt.Errorf("status %d", resp.StatusCode)}
	case resp.StatusCode < 200 || resp.StatusCode >= 400:
		return nil, &Failure{Kind: record.KindOther, Err: fmt.Errorf("unexpected status %d", resp.StatusCode)}
	}
	return nil, nil
}

// classifyH2Error maps an error of net/http's HTTP/2 client to a kind.
// silent says the request's connection never received a byte from the
// server. An HTTP/2 server sends its SETTINGS as soon as it accepts a
// connection, before it can process any request, so a connection that
// failed silent was never served: the pod refused the load balancer's dial.
// The HTTP/2 errors are unexported types, so beyond the syscall errors the
// message is all there is to go on.
func classifyH2Error(err error, silent, timedOut bool) record.Kind {
	if timedOut || isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return record.KindTimeout
	}
	if isRefused(err) {
		return record.KindRefused
	}
	msg := err.Error()
	connLevel := isReset(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	for _, s := range []string{"connection reset", "broken pipe", "EOF", "GOAWAY",
		"connection lost", "conn is closed", "could not be established", "force closed"} {
		connLevel = connLevel || strings.Contains(msg, s)
	}
	switch {
	case !connLevel:
		return record.KindOther
	case silent:
		return record.KindRefused
	case isReset(err), strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"),
		strings.Contains(msg, "force closed"):
		return record.KindReset
	}
	return record.KindEOF
}

// trackedConn records whether the server ever sent a byte on a connection,
// which tells a refused connection (reset by the load balancer before the
// pod said anything) from one the pod served and then broke.
type trackedConn struct {
	net.Conn // nil for a dial that failed
	heard    atomic.Bool
	closedAt atomic.Int64 // unix nanoseconds; 0 while open
	local    net.Addr     // of a dial that failed, if known
}

// LocalAddr returns the connection's local address, or that of a dial that
// failed (nil if unknown).
func (c *trackedConn) LocalAddr() net.Addr {
	if c.Conn == nil {
		return c.local
	}
	return c.Conn.LocalAddr()
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.heard.Store(true)
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.closedAt.CompareAndSwap(0, time.Now().UnixNano())
	return c.Conn.Close()
}

// trackingDialer returns a dial function whose connections are
// *trackedConn. If conns is not nil, each connection is kept in it under
// its local address, for clients (gRPC) that report only that.
func trackingDialer(timeout time.Duration, conns *connTable) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, local, err := dial(ctx, d, network, addr)
		if err != nil {
			return nil, &dialError{err: err, local: local}
		}
		tc := &trackedConn{Conn: c}
		if conns != nil {
			conns.put(c.LocalAddr().String(), tc, timeout)
		}
		return tc, nil
	}
}

// dial dials addr with d, and returns the connection's local address even
// when the dial fails: the load balancer may have accepted the connection,
// routed it and reset it (the pod refused the dial) before connect
// returned, and the port tells which pod refused it.
func dial(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, net.Addr, error) {
	var local net.Addr
	d.ControlContext = func(_ context.Context, _, address string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { local, err = bindEphemeral(fd, address) }); cerr != nil {
			return cerr
		}
		return err
	}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, local, err
	}
	return c, c.LocalAddr(), nil
}

// dialError is a failed dial of a trackingDialer, with the local address
// the connection had, if known.
type dialError struct {
	err   error
	local net.Addr
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// connTable maps local addresses to connections. A call's failure is
// classified after its connection has closed, so closed connections stay
// in the table for a while: longer than a request may take.
type connTable struct {
	mu sync.Mutex
	m  map[string]*trackedConn
}

func (t *connTable) put(key string, c *trackedConn, requestTimeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*trackedConn)
	}
	keep := time.Now().Add(-2 * max(requestTimeout, DefaultRequestTimeout)).UnixNano()
	for k, old := range t.m {
		if at := old.closedAt.Load(); at != 0 && at < keep {
			delete(t.m, k)
		}
	}
	t.m[key] = c
}

func (t *connTable) get(key string) *trackedConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[key]
}
