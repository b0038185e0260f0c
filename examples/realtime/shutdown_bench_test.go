package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
	realtime "github.com/lameduck/lameduck/examples/realtime"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/testnet"
)

// The service and the load of BenchmarkShutdownOfRealtimeService.
const (
	benchWS, benchSSE, benchGRPC = 2000, 500, 200 // clients on A before the signal
	// benchLate clients of each kind arrive at A halfway through its drain
	// delay, as a load balancer still routes them there.
	benchLate = 10
	// benchConns connections to each instance carry the gRPC streams, ten
	// streams on each.
	benchConns    = 20
	benchInterval = 500 * time.Millisecond // between two messages of a stream
	benchDelay    = 2 * time.Second
	// benchGrace leaves 15 - 2 (delay) - 1.5 (hooks) - 1.5 (margin) = 10 s
	// to drain, and so a default departure window of half of it: 5 s.
	benchGrace = 15 * time.Second
	// benchResume is how many messages a client has on B, once resumed
	// there, before it is done.
	benchResume = 3
	// benchDialing clients at most wait for their first messages at once,
	// so that the load connects at a pace a 2-core machine keeps up with.
	benchDialing = 1000
)

// BenchmarkShutdownOfRealtimeService runs two instances, A and B, of one
// real-time service in the test process, each a lameduck.Coordinator
// running the example's HTTP server (websockets on /ws, event streams on
// /events, one message every 500 ms) and a gRPC server of server streams
// of the same numbered messages. 2,000 websocket (coder/websocket), 500
// event stream and 200 gRPC stream clients follow the sequence on A, and
// 10 of each kind more arrive during A's drain delay; then A gets its
// SIGTERM (through lameduck.WithSignalChannel). Each client resumes on B
// from its last number when A sends it away (websocket: close 1012; event
// stream: end of the stream after a "retry:", and the wait it sets; gRPC:
// UNAVAILABLE) and checks that it missed nothing.
//
// It measures two wirings of A, one after the other in the same run:
// "spread", lameduck's default departure window (5 s with a grace period
// of 15 s and a drain delay of 2 s), and "at-once",
// lameduck.WithDepartureWindow(0), which tells every stream to leave as
// the drain begins. It reports the most reconnects to B in any 100 ms and
// in any second, each as a ratio to the spread's average rate (its
// reconnects over the time from the first to the last), the closures that
// were not the protocol's "reconnect elsewhere", the messages lost, what
// was cut at the drain deadline, the late clients that failed, and when
// A's Run returned, after the signal and after its last client was sent
// away. The machine is shared: it also reports the longest that a 10 ms
// ticker of the process fired late during the shutdown, a stall that
// delays A's turns and the clients alike and bunches what it delays. It
// logs a table of both wirings. The figures, and what they show, are in
// docs/measurements.md.
//
// The open-file limit is raised, up to the hard limit, to what 2,730
// clients, each on A and then on B, need in one process: 12,000. A
// shutdown takes under 10 s, and the whole benchmark about 25 s; one
// iteration is enough, and the metrics are the last iteration's:
//
//	go test -run '^$' -bench Shutdown -benchtime 1x ./examples/realtime/
func BenchmarkShutdownOfRealtimeService(b *testing.B) {
	const files = 12000
	testnet.RaiseFileLimit(b, files)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < files {
		b.Fatalf("the benchmark needs %d open files; the limit is %d, the hard limit %d: raise it with ulimit -Hn", files, lim.Cur, lim.Max)
	}
	var spread *outcome
	b.Run("spread", func(b *testing.B) {
		for b.Loop() {
			spread = shutdownOnce(b, "spread")
		}
		spread.report(b, spread)
	})
	b.Run("at-once", func(b *testing.B) {
		if spread == nil {
			b.Skip("at-once is measured against the spread, in the same run: -bench 'Shutdown' runs both")
		}
		var atOnce *outcome
		for b.Loop() {
			atOnce = shutdownOnce(b, "at-once", lameduck.WithDepartureWindow(0))
		}
		atOnce.report(b, spread)
		b.Log("\n" + table(spread, spread, atOnce))
	})
}

// An outcome is what one shutdown of A measured.
type outcome struct {
	wiring  string
	clients int // on A, the late ones included
	late    int
	// reconnects are when clients connected to B, departures when they
	// saw A send them away, in order.
	reconnects, departures []time.Time
	// abnormal counts, by kind, the clients that A did not send away as
	// their protocol says: a websocket closed otherwise than with 1012
	// (1006 without a close frame), an event stream cut short or ended
	// without a retry, a gRPC stream ended otherwise than UNAVAILABLE.
	abnormal map[string]int
	// unserved counts the clients that A did not serve (no message).
	unserved     int
	lost, gaps   int64
	resumeFailed int // sent away cleanly, but did not follow on B
	lateFailed   int // late clients that were not served, sent away and resumed without a gap
	lateInDelay  bool
	cut          int
	departed     lameduck.DepartureReport
	// stall is the longest that a 10 ms ticker of the benchmark's process
	// fired late from the signal to A's exit: the machine's and the
	// runtime's noise, which delays A's turns and the clients alike, and
	// bunches what it delays.
	stall   time.Duration
	sigterm time.Time
	exited  time.Time
	runErr  error
	log     string // A's log from the signal on
}

// rate is the average number of reconnects in span, from the first to
// the last.
func (o *outcome) rate(span time.Duration) float64 {
	if len(o.reconnects) < 2 {
		return 0
	}
	all := o.reconnects[len(o.reconnects)-1].Sub(o.reconnects[0])
	return float64(len(o.reconnects)) * float64(span) / float64(all)
}

func (o *outcome) abnormalTotal() int {
	n := 0
	for _, k := range o.abnormal {
		n += k
	}
	return n
}

// exitAfterLast is how long after the last client saw its departure A's
// Run returned.
func (o *outcome) exitAfterLast() time.Duration {
	if len(o.departures) == 0 {
		return 0
	}
	return o.exited.Sub(o.departures[len(o.departures)-1])
}

// report reports the outcome's metrics, the peaks against the spread's
// average rates, and logs A's stopping line.
func (o *outcome) report(b *testing.B, spread *outcome) {
	peak := mostWithin(o.reconnects, 100*time.Millisecond)
	b.ReportMetric(float64(peak), "peak-reconnects/100ms")
	b.ReportMetric(float64(peak)/spread.rate(100*time.Millisecond), "peak/spread-avg")
	b.ReportMetric(float64(mostWithin(o.reconnects, time.Second))/spread.rate(time.Second), "peak-1s/spread-avg")
	b.ReportMetric(float64(o.stall.Microseconds())/1000, "stall-ms")
	b.ReportMetric(float64(o.abnormalTotal()), "abnormal-closures")
	b.ReportMetric(float64(o.lost), "lost-messages")
	b.ReportMetric(float64(o.cut), "cut-at-deadline")
	b.ReportMetric(float64(o.lateFailed), "late-failed")
	b.ReportMetric(float64(o.exitAfterLast().Microseconds())/1000, "exit-after-last-ms")
	b.ReportMetric(o.exited.Sub(o.sigterm).Seconds(), "exit-after-SIGTERM-s")
	b.ReportMetric(0, "ns/op")
	for _, line := range strings.Split(o.log, "\n") {
		if strings.Contains(line, "lameduck: stopping") {
			b.Logf("%s: A's %s", o.wiring, line[strings.Index(line, "msg="):])
		}
	}
	if o.runErr != nil {
		b.Logf("%s: A's Run: %v", o.wiring, o.runErr)
	}
	if !o.lateInDelay {
		b.Logf("%s: the late clients did not all connect before A's drain began: the machine is too slow for the benchmark's timing", o.wiring)
	}
}

// table writes the outcomes, one a line, in Markdown: b.Log keeps only
// ten lines of a benchmark's output.
func table(spread *outcome, outcomes ...*outcome) string {
	var s strings.Builder
	fmt.Fprintf(&s, "| %d clients on A (%d late) | A exited after SIGTERM | after the last departure | most reconnects in any 100 ms (x the spread's average) | in any 1 s (x) | longest stall | abnormal closures: websocket, event stream, gRPC | messages lost | cut at the deadline | late clients failed | not served by A, not resumed on B |\n",
		spread.clients, spread.late)
	s.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, o := range outcomes {
		exit := fmt.Sprintf("%.2f s", o.exited.Sub(o.sigterm).Seconds())
		if o.runErr != nil {
			exit += ", Run failed"
		}
		p100, p1s := mostWithin(o.reconnects, 100*time.Millisecond), mostWithin(o.reconnects, time.Second)
		fmt.Fprintf(&s, "| %s | %s | %d ms | **%d** (%.1fx of %.1f) | %d (%.2fx of %.0f) | %d ms | %d, %d, %d | %d | %d | %d of %d | %d, %d |\n",
			o.wiring, exit, o.exitAfterLast().Milliseconds(),
			p100, float64(p100)/spread.rate(100*time.Millisecond), spread.rate(100*time.Millisecond),
			p1s, float64(p1s)/spread.rate(time.Second), spread.rate(time.Second),
			o.stall.Milliseconds(),
			o.abnormal["websocket"], o.abnormal["event stream"], o.abnormal["gRPC stream"],
			o.lost, o.cut, o.lateFailed, o.late, o.unserved, o.resumeFailed)
	}
	return s.String()
}

// shutdownOnce runs A, with opts, and B, puts the load on A, sends A its
// SIGTERM, and measures A's shutdown.
func shutdownOnce(b *testing.B, wiring string, opts ...lameduck.Option) *outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 2*await.Timeout)
	defer cancel()
	a := startInstance(b, "A", append([]lameduck.Option{lameduck.WithDrainDelay(benchDelay)}, opts...)...)
	defer a.stop(b)
	// B has no delay: its shutdown, once its clients are done, is not
	// measured.
	bi := startInstance(b, "B", lameduck.WithDrainDelay(0))
	defer bi.stop(b)
	pool := newGRPCPool(b, a.grpc.Addr().String(), bi.grpc.Addr().String())
	defer pool.close()

	type load struct {
		kind    string
		session session
		a, b    string
		n       int
	}
	loads := []load{
		{"websocket", coderSession, a.http.Addr().String(), bi.http.Addr().String(), benchWS},
		{"event stream", sseSession, a.http.Addr().String(), bi.http.Addr().String(), benchSSE},
		{"gRPC stream", pool.session, a.grpc.Addr().String(), bi.grpc.Addr().String(), benchGRPC},
	}
	total := benchWS + benchSSE + benchGRPC + benchLate*len(loads)
	trips := make(chan benchTrip, total)
	ready := make(chan struct{}, total)
	follow := func(l load, late bool) {
		f := &follower{kind: l.kind, session: l.session}
		onA, onB := f.follow(ctx, l.a, l.b, benchResume, ready)
		trips <- benchTrip{trip: trip{f, onA, onB}, late: late}
	}
	started := 0
	for _, l := range loads {
		for range l.n {
			if started >= benchDialing {
				await.Recv(b, ready, "a client's first messages from A")
			}
			go follow(l, false)
			started++
		}
	}
	for range min(started, benchDialing) {
		await.Recv(b, ready, "a client's first messages from A")
	}

	o := &outcome{wiring: wiring, clients: total, late: benchLate * len(loads), abnormal: map[string]int{}}
	logFrom := a.log.Len()
	stalls := watchStalls()
	o.sigterm = time.Now()
	a.signals <- syscall.SIGTERM
	time.Sleep(benchDelay / 2)
	for _, l := range loads {
		for range benchLate {
			go follow(l, true)
		}
	}
	for range benchLate * len(loads) {
		await.Recv(b, ready, "a late client's first messages from A")
	}
	o.lateInDelay = a.drainBegan().IsZero()

	for range total {
		tr := await.Recv(b, trips, "a client's trip from A to B")
		f := tr.f
		o.lost += f.lost
		o.gaps += int64(len(f.gaps))
		failed := len(f.gaps) > 0
		switch {
		case tr.onA.byClient || f.next == 1:
			o.unserved++ // it never had a message, or gave up on A (it never does)
			failed = true
		case !tr.onA.left():
			o.abnormal[f.kind]++
			o.departures = append(o.departures, tr.onA.at)
			failed = true
		default:
			o.departures = append(o.departures, tr.onA.at)
			o.reconnects = append(o.reconnects, f.resumed)
			if !tr.onB.byClient {
				o.resumeFailed++
				failed = true
			}
		}
		if tr.late && failed {
			o.lateFailed++
		}
	}
	o.runErr = a.wait(b)
	o.exited = a.exited
	o.stall = stalls()
	o.cut = a.stopping().Cut.Total()
	o.departed = a.stopping().Departures
	o.log = a.log.String()[logFrom:]
	slices.SortFunc(o.reconnects, time.Time.Compare)
	slices.SortFunc(o.departures, time.Time.Compare)
	return o
}

// watchStalls measures, until the function it returns is called, how late
// a 10 ms ticker fires, and that function returns the longest delay.
func watchStalls() func() time.Duration {
	const tick = 10 * time.Millisecond
	stop, longest := make(chan struct{}), make(chan time.Duration)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		var most time.Duration
		last := time.Now()
		for {
			select {
			case <-t.C:
				now := time.Now()
				most = max(most, now.Sub(last)-tick)
				last = now
			case <-stop:
				longest <- most
				return
			}
		}
	}()
	return func() time.Duration {
		close(stop)
		return <-longest
	}
}

// A benchTrip is a follower's trip, and whether it arrived late, during
// the drain delay.
type benchTrip struct {
	trip
	late bool
}

// mostWithin returns the most times, in order, within any span.
func mostWithin(times []time.Time, span time.Duration) int {
	most, from := 0, 0
	for i, t := range times {
		for t.Sub(times[from]) >= span {
			from++
		}
		most = max(most, i-from+1)
	}
	return most
}

// An instance is one instance of the service, running in the test
// process: a Coordinator running the example's HTTP server and a gRPC
// server of the same sequence, signaled through a channel.
type instance struct {
	ld      *lameduck.Coordinator
	http    *httpserver.Server
	grpc    *grpcserver.Server
	signals chan os.Signal
	log     *lockedBuffer
	done    chan struct{} // closed once Run has returned
	exited  time.Time     // when Run returned; set before done is closed
	err     error         // Run's; set before done is closed

	mu        sync.Mutex
	draining  time.Time
	stopEvent lameduck.Event // PhaseStopping's
}

func startInstance(b *testing.B, name string, opts ...lameduck.Option) *instance {
	b.Helper()
	in := &instance{signals: make(chan os.Signal, 2), log: &lockedBuffer{}, done: make(chan struct{})}
	serving := make(chan struct{})
	ld, err := lameduck.New(append([]lameduck.Option{
		lameduck.WithSignals(), lameduck.WithSignalChannel(in.signals),
		lameduck.WithGracePeriod(benchGrace),
		lameduck.WithLogger(slog.New(slog.NewTextHandler(in.log, nil))),
	}, opts...)...)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		in.mu.Lock()
		defer in.mu.Unlock()
		switch e.Phase {
		case lameduck.PhaseServing:
			close(serving)
		case lameduck.PhaseDraining:
			in.draining = time.Now()
		case lameduck.PhaseStopping:
			in.stopEvent = e
		}
	})
	in.ld = ld
	in.http = realtime.NewServer(ld, "127.0.0.1:0", benchInterval)
	in.grpc = grpcserver.New(ld, "127.0.0.1:0")
	testpb.RegisterTestServiceServer(in.grpc, sequence{interval: benchInterval})
	ld.Register(in.http)
	ld.Register(in.grpc)
	ld.MarkReady()
	go func() {
		err := ld.Run(context.Background())
		in.exited, in.err = time.Now(), err
		close(in.done)
	}()
	select {
	case <-serving:
	case <-in.done:
		b.Fatalf("%s: Run: %v", name, in.err)
	}
	return in
}

func (in *instance) drainBegan() time.Time {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.draining
}

func (in *instance) stopping() lameduck.Event {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stopEvent
}

// wait waits for Run to return, and returns its error.
func (in *instance) wait(b *testing.B) error {
	b.Helper()
	await.Recv(b, in.done, "an instance's Run to return")
	return in.err
}

// stop shuts the instance down, if it is still running: a first signal,
// then, if it has not returned within the time a drain of nothing takes, a
// second one, which cuts what is left.
func (in *instance) stop(b *testing.B) {
	b.Helper()
	for range 2 {
		select {
		case <-in.done:
			return
		case in.signals <- syscall.SIGTERM:
		default:
		}
		select {
		case <-in.done:
			return
		case <-time.After(time.Second):
		}
	}
	in.wait(b)
}

// A lockedBuffer is a log that Run writes and the benchmark reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// sequence serves the numbered messages as gRPC server streams:
// StreamingOutputCall sends message N as a payload whose body is "N",
// one every interval, from the number in the request's payload (1 if
// there is none). It ends only with its context, which at its turn to
// leave grpcserver ends and turns into UNAVAILABLE: a handler written with
// no thought of departures.
type sequence struct {
	testpb.UnimplementedTestServiceServer
	interval time.Duration
}

func (s sequence) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	n := int64(1)
	if body := req.GetPayload().GetBody(); len(body) > 0 {
		var err error
		if n, err = strconv.ParseInt(string(body), 10, 64); err != nil {
			return status.Errorf(codes.InvalidArgument, "%.20q is not a message number", body)
		}
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for ; ; n++ {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: strconv.AppendInt(nil, n, 10)}}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-t.C:
		}
	}
}

// A grpcPool holds the clients' connections to each instance, benchConns
// each, over which their streams are spread.
type grpcPool struct {
	conns   []*grpc.ClientConn
	clients map[string][]testpb.TestServiceClient
	next    atomic.Uint64
}

func newGRPCPool(b *testing.B, addrs ...string) *grpcPool {
	b.Helper()
	p := &grpcPool{clients: map[string][]testpb.TestServiceClient{}}
	for _, addr := range addrs {
		for range benchConns {
			cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			p.conns = append(p.conns, cc)
			p.clients[addr] = append(p.clients[addr], testpb.NewTestServiceClient(cc))
		}
	}
	return p
}

func (p *grpcPool) close() {
	for _, cc := range p.conns {
		cc.Close()
	}
}

// session is a gRPC stream client, a session of the sequence on one of
// the connections to addr.
func (p *grpcPool) session(ctx context.Context, addr string, last int64, got func(int64) bool) ending {
	clients := p.clients[addr]
	client := clients[p.next.Add(1)%uint64(len(clients))]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
		Payload: &testpb.Payload{Body: strconv.AppendInt(nil, last+1, 10)},
	})
	if err != nil {
		return ending{at: time.Now(), rpc: true, retry: -1, err: fmt.Errorf("gRPC stream: %w", err)}
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ending{at: time.Now(), rpc: true, retry: -1} // OK: the stream's end, not a cue to reconnect
		}
		if err != nil {
			st := status.Convert(err)
			return ending{at: time.Now(), rpc: true, retry: -1, code: int(st.Code()), reason: st.Message()}
		}
		n, err := strconv.ParseInt(string(resp.GetPayload().GetBody()), 10, 64)
		if err != nil {
			return ending{at: time.Now(), rpc: true, retry: -1, err: fmt.Errorf("message %q: %w", resp.GetPayload().GetBody(), err)}
		}
		if !got(n) {
			return ending{at: time.Now(), rpc: true, byClient: true}
		}
	}
}
