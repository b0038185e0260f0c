package grpcserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on an event, so that a bug fails a test
// instead of hanging the suite.
const waitTimeout = 10 * time.Second

// testServiceName is the full name of grpc.testing.TestService.
const testServiceName = "grpc.testing.TestService"

// drainTime is how long the Coordinator lets the drain last: from the end
// of the delay to the drain deadline, which leaves the hook timeout and the
// safety margin before the end of the grace period.
func drainTime(gracePeriod, delay time.Duration) time.Duration {
	return gracePeriod - lameduck.DefaultSafetyMargin - lameduck.DefaultHookTimeout - delay
}

// harness is a Coordinator on a fake clock, driven by fake signals, with a
// grpcserver.Server on a free loopback port serving testService.
type harness struct {
	ld      *lameduck.Coordinator
	srv     *grpcserver.Server
	svc     *testService
	clock   *fakeclock.Clock // nil on the real clock
	signals chan os.Signal
	events  chan lameduck.Event
	done    chan error // Run's result

	mu      sync.Mutex
	entered map[lameduck.Phase]time.Time // when each phase was observed
}

func newHarness(t *testing.T, opts ...lameduck.Option) *harness {
	t.Helper()
	return newHarnessWith(t, nil, opts...)
}

// newHarnessWith is newHarness with options for the grpc.Servers.
func newHarnessWith(t *testing.T, serverOpts []grpc.ServerOption, opts ...lameduck.Option) *harness {
	t.Helper()
	svc := newTestService()
	h := newHarnessFor(t, svc, fakeclock.New(), serverOpts, opts...)
	h.svc = svc
	return h
}

// newHarnessFor is a harness whose server serves svc, on clock, or on the
// real clock if clock is nil.
func newHarnessFor(t *testing.T, svc testpb.TestServiceServer, clock *fakeclock.Clock, serverOpts []grpc.ServerOption, opts ...lameduck.Option) *harness {
	t.Helper()
	h := &harness{
		clock:   clock,
		signals: make(chan os.Signal, 2),
		events:  make(chan lameduck.Event, 16),
		entered: make(map[lameduck.Phase]time.Time),
	}
	base := []lameduck.Option{
		lameduck.WithSignals(), lameduck.WithSignalChannel(h.signals),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	}
	if clock != nil {
		base = append(base, clock.Option())
	}
	ld, err := lameduck.New(append(base, opts...)...)
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) {
		h.mu.Lock()
		h.entered[e.Phase] = time.Now()
		h.mu.Unlock()
		h.events <- e
	})
	h.ld = ld
	h.srv = grpcserver.New(ld, "127.0.0.1:0", serverOpts...)
	testpb.RegisterTestServiceServer(h.srv, svc)
	ld.Register(h.srv)
	return h
}

// enteredAt returns when the harness observed the Coordinator entering
// phase, on the real clock; zero if it has not.
func (h *harness) enteredAt(phase lameduck.Phase) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.entered[phase]
}

// start runs the Coordinator and waits until it serves. If the test ends
// without Run having returned, a second signal cuts everything.
func (h *harness) start(t *testing.T) {
	t.Helper()
	h.done = make(chan error, 1)
	go func() { h.done <- h.ld.Run(context.Background()) }()
	h.await(t, lameduck.PhaseServing)
	t.Cleanup(func() {
		select {
		case <-h.done:
			return
		default:
		}
		for range 2 {
			select {
			case h.signals <- syscall.SIGINT:
			default:
			}
		}
		await.Recv(t, h.done, "Run to return after a second signal")
	})
}

// await waits for the Coordinator to enter phase, and returns its event.
func (h *harness) await(t *testing.T, phase lameduck.Phase) lameduck.Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case e := <-h.events:
			if e.Phase == phase {
				return e
			}
		case <-timeout:
			t.Fatalf("phase %v never entered", phase)
		}
	}
}

// signal sends SIGTERM and waits for the lame-duck phase.
func (h *harness) signal(t *testing.T) {
	t.Helper()
	h.signals <- syscall.SIGTERM
	h.await(t, lameduck.PhaseLameDuck)
}

// wait returns what Run returned.
func (h *harness) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
		return nil
	}
}

// returned reports whether Run has returned, without waiting.
func (h *harness) returned() bool {
	select {
	case err := <-h.done:
		h.done <- err
		return true
	default:
		return false
	}
}

// dial returns a client connection to the harness's server.
func (h *harness) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	return dial(t, h.srv.Addr().String())
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// awaitReady waits for cc to report READY, which it does a moment after its
// first RPC succeeded, so that a test can then wait for it to leave READY.
func awaitReady(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
		require.True(t, cc.WaitForStateChange(ctx(t), st), "the connection never turned READY")
	}
}

// ctx returns a context that bounds one test's RPCs.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return c
}

// testService implements grpc.testing.TestService for the tests:
//   - UnaryCall answers with the client's address as the server sees it
//     (in ServerId), which tells connections apart;
//   - StreamingOutputCall sends one message per ResponseParameters, each
//     once the test sends on gate;
//   - FullDuplexCall reads until its stream ends, like a stream that
//     ignores the drain: it never looks at its context, so that its turn
//     to leave, which ends the context, does not end it either;
//   - CacheableUnaryCall ignores its context and returns only once the
//     test closes stuck.
type testService struct {
	testpb.UnimplementedTestServiceServer
	gate    chan struct{}
	started chan struct{} // a value per streaming or stuck call started
	stuck   chan struct{}
}

func newTestService() *testService {
	return &testService{gate: make(chan struct{}), started: make(chan struct{}, 16), stuck: make(chan struct{})}
}

func (s *testService) CacheableUnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.started <- struct{}{}
	<-s.stuck
	return &testpb.SimpleResponse{}, nil
}

func (s *testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	p, _ := peer.FromContext(ctx)
	return &testpb.SimpleResponse{
		ServerId: p.Addr.String(),
		Payload:  &testpb.Payload{Body: make([]byte, req.GetResponseSize())},
	}, nil
}

func (s *testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	s.started <- struct{}{}
	for i, p := range req.GetResponseParameters() {
		select {
		case <-s.gate:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		body := make([]byte, p.GetSize())
		if len(body) > 0 {
			body[0] = byte(i)
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	s.started <- struct{}{}
	for {
		// Close's grpc.Server.Stop makes Recv fail.
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// awaitStarted waits for a streaming or stuck call to reach its handler.
func (s *testService) awaitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(waitTimeout):
		t.Fatal("the streaming call never reached its handler")
	}
}

// release lets a StreamingOutputCall send its next message.
func (s *testService) release(t *testing.T) {
	t.Helper()
	select {
	case s.gate <- struct{}{}:
	case <-time.After(waitTimeout):
		t.Fatal("no stream waits to send")
	}
}

// watch opens a health Watch for service and returns a function that
// receives the next status, or the error that ended the stream.
func watch(t *testing.T, cc *grpc.ClientConn, service string) func() (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx(t), &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err)
	return func() (healthpb.HealthCheckResponse_ServingStatus, error) {
		resp, err := stream.Recv()
		if err != nil {
			return -1, err
		}
		return resp.Status, nil
	}
}

// check returns the status Check answers for service.
func check(t *testing.T, cc *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx(t), &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err)
	return resp.Status
}

// isEOF reports whether err is the clean end of a stream.
func isEOF(err error) bool { return errors.Is(err, io.EOF) }
