package grpcserver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

func TestHealthFollowsTheCoordinator(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.start(t)
	cc := h.dial(t)
	services := []string{"", testServiceName, "grpc.health.v1.Health"}

	for _, svc := range services {
		assert.Equal(t, notServing, check(t, cc, svc), "before MarkReady, service %q", svc)
	}
	_, err := healthpb.NewHealthClient(cc).Check(ctx(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err))
	var watches []func() (healthpb.HealthCheckResponse_ServingStatus, error)
	for _, svc := range services {
		watches = append(watches, watch(t, cc, svc))
	}
	expectWatches := func(want healthpb.HealthCheckResponse_ServingStatus, when string) {
		t.Helper()
		for i, next := range watches {
			got, err := next()
			require.NoError(t, err, "%s, Watch of %q", when, services[i])
			assert.Equal(t, want, got, "%s, Watch of %q", when, services[i])
		}
	}
	expectWatches(notServing, "before MarkReady")

	h.ld.MarkReady()
	expectWatches(serving, "after MarkReady")
	for _, svc := range services {
		assert.Equal(t, serving, check(t, cc, svc), "after MarkReady, service %q", svc)
	}

	h.signal(t)
	expectWatches(notServing, "from the first moment of the shutdown")
	for _, svc := range services {
		assert.Equal(t, notServing, check(t, cc, svc), "during the delay, service %q", svc)
	}

	h.clock.Pass(t, 5*time.Second)
	h.await(t, lameduck.PhaseDraining)
	for i, next := range watches {
		_, err := next()
		assert.True(t, isEOF(err), "Watch of %q ends cleanly when the drain begins, got %v", services[i], err)
	}
	require.NoError(t, h.wait(t))
}

func TestUnaryRPCsAreServedThroughTheDelay(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	before := testpb.NewTestServiceClient(h.dial(t))
	_, err := before.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)

	h.signal(t)
	for i := range 20 {
		_, err := before.EmptyCall(ctx(t), &testpb.Empty{})
		require.NoError(t, err, "RPC %d on a connection opened before the signal", i)
	}
	fresh := testpb.NewTestServiceClient(h.dial(t))
	_, err = fresh.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err, "new connections are accepted during the delay")
	assert.False(t, h.returned())

	addr := h.srv.Addr().String()
	h.clock.Pass(t, 5*time.Second)
	h.await(t, lameduck.PhaseDraining)
	require.NoError(t, h.wait(t))

	_, err = net.Dial("tcp", addr)
	require.Error(t, err, "the port is closed after the drain")
}

func TestClientKeepingItsConnectionMovesToANewOneAfterTheGOAWAY(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	cc := h.dial(t)
	client := testpb.NewTestServiceClient(cc)
	clientAddr := func() string {
		t.Helper()
		resp, err := client.UnaryCall(ctx(t), &testpb.SimpleRequest{ResponseSize: 10})
		require.NoError(t, err)
		assert.Len(t, resp.GetPayload().GetBody(), 10)
		return resp.GetServerId()
	}
	first := clientAddr()
	awaitReady(t, cc)

	h.signal(t)
	// The GOAWAY takes the connection out of READY; the client reconnects
	// for its next RPC.
	require.True(t, cc.WaitForStateChange(ctx(t), connectivity.Ready), "the connection never received a GOAWAY")
	second := clientAddr()
	assert.NotEqual(t, first, second, "the RPC after the GOAWAY arrives on a new connection")
	assert.Equal(t, second, clientAddr(), "the new connection is not sent away again during the delay")

	h.clock.Pass(t, 5*time.Second)
	require.NoError(t, h.wait(t))
}

// Connections keep arriving during the delay, and some arrive at the very
// moment new connections switch to another grpc.Server: none may fail.
func TestNewConnectionsAcrossTheSignalAreAllServed(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	addr := h.srv.Addr().String()

	const clients, afterSignal = 8, 15
	var warm, finished sync.WaitGroup
	signalled := make(chan struct{})
	var calls, failures atomic.Int64
	errs := make(chan error, clients*afterSignal)
	call := func() {
		cc := dial(t, addr)
		defer cc.Close()
		_, err := testpb.NewTestServiceClient(cc).EmptyCall(ctx(t), &testpb.Empty{})
		calls.Add(1)
		if err != nil {
			failures.Add(1)
			select {
			case errs <- err:
			default:
			}
		}
	}
	for range clients {
		warm.Add(1)
		finished.Add(1)
		go func() {
			defer finished.Done()
			call()
			warm.Done()
			for {
				select {
				case <-signalled:
					for range afterSignal {
						call()
					}
					return
				default:
					call()
				}
			}
		}()
	}
	await.Wait(t, &warm, "each client's first call")
	h.signal(t)
	close(signalled)
	await.Wait(t, &finished, "the clients' calls after the signal")
	close(errs)
	for err := range errs {
		t.Errorf("RPC failed: %v", err)
	}
	assert.Zero(t, failures.Load(), "of %d RPCs, each on a new connection", calls.Load())

	h.clock.Pass(t, 5*time.Second)
	require.NoError(t, h.wait(t))
}

func TestServerStreamOpenAcrossTheSignalFinishesWhole(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	client := testpb.NewTestServiceClient(h.dial(t))
	stream, err := client.StreamingOutputCall(ctx(t), &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 2}, {Size: 3}},
	})
	require.NoError(t, err)
	h.svc.awaitStarted(t)
	recv := func(size int) {
		t.Helper()
		resp, err := stream.Recv()
		require.NoError(t, err)
		assert.Len(t, resp.GetPayload().GetBody(), size)
	}
	h.svc.release(t)
	recv(1)

	h.signal(t)
	h.svc.release(t)
	recv(2)
	// The fake clock stands still in the drain: the stream's turn to
	// leave never comes, and it finishes on its own.
	h.clock.Pass(t, 5*time.Second)
	h.await(t, lameduck.PhaseDraining)
	assert.False(t, h.returned(), "Run waits for the stream")
	h.svc.release(t)
	recv(3)
	_, err = stream.Recv()
	assert.True(t, isEOF(err), "the stream ends with OK, got %v", err)
	require.NoError(t, h.wait(t))
}

func TestOpenHealthWatchDoesNotDelayTheExit(t *testing.T) {
	for _, ready := range []bool{true, false} {
		t.Run(fmt.Sprintf("ready=%v", ready), func(t *testing.T) {
			h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
			if ready {
				h.ld.MarkReady()
			}
			h.start(t)
			next := watch(t, h.dial(t), "")
			want := notServing
			if ready {
				want = serving
			}
			got, err := next()
			require.NoError(t, err)
			require.Equal(t, want, got)

			h.signal(t)
			if ready {
				got, err := next()
				require.NoError(t, err)
				assert.Equal(t, notServing, got, "the Watch sees the shutdown")
				h.clock.Pass(t, 5*time.Second) // a process that was never ready skips the delay
			}
			// With the fake clock standing still, the deadline never comes:
			// Run returns because the Watch ended.
			require.NoError(t, h.wait(t))
			_, err = next()
			assert.True(t, isEOF(err), "the Watch ends cleanly, got %v", err)
		})
	}
}

func TestStreamThatNeverEndsIsCutAtTheDeadline(t *testing.T) {
	h := newHarness(t, lameduck.WithGracePeriod(10*time.Second), lameduck.WithDrainDelay(time.Second),
		lameduck.WithHookTimeout(3*time.Second), lameduck.WithSafetyMargin(2*time.Second))
	h.ld.MarkReady()
	h.start(t)
	stream, err := testpb.NewTestServiceClient(h.dial(t)).FullDuplexCall(ctx(t))
	require.NoError(t, err)
	h.svc.awaitStarted(t)

	h.signal(t)
	h.clock.Pass(t, time.Second)
	h.await(t, lameduck.PhaseDraining)
	assert.False(t, h.returned(), "GracefulStop waits for the stream")
	h.clock.Pass(t, drainTime(10*time.Second, time.Second))
	ev := h.await(t, lameduck.PhaseStopping)
	assert.Equal(t, inflight.Counts{Streams: 1}, ev.Cut)
	err = h.wait(t)
	require.ErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, err.Error(), "the drain deadline passed: 1 stream cut")
	_, err = stream.Recv()
	require.Error(t, err)
	assert.Contains(t, []codes.Code{codes.Unavailable, codes.Canceled}, status.Code(err), "the client learns that its stream was cut: %v", err)
}

// grpc-go's GracefulStop and Stop wait for a connection's HTTP/2 handshake
// for up to ConnectionTimeout, 120 s by default: a client that connects and
// says nothing must hold neither the drain nor Close.
func TestSilentConnectionHoldsNeitherTheDrainNorClose(t *testing.T) {
	for _, step := range []string{"drain", "close"} {
		t.Run(step, func(t *testing.T) {
			ld, err := lameduck.New()
			require.NoError(t, err)
			s := grpcserver.New(ld, "127.0.0.1:0")
			require.NoError(t, s.Listen())
			served := make(chan error, 1)
			go func() { served <- s.Serve() }()
			silent, err := net.Dial("tcp", s.Addr().String())
			require.NoError(t, err)
			defer silent.Close()
			// The server speaks first: its SETTINGS frame says that grpc-go
			// now waits for the client's preface.
			require.NoError(t, silent.SetReadDeadline(time.Now().Add(waitTimeout)))
			_, err = silent.Read(make([]byte, 9))
			require.NoError(t, err)

			s.LameDuck(func() {})
			if step == "drain" {
				require.NoError(t, s.Drain(ctx(t)), "the silent connection is closed after a grace period")
			}
			assert.Equal(t, inflight.Counts{}, s.Close())
			select {
			case err := <-served:
				require.NoError(t, err)
			case <-time.After(waitTimeout):
				t.Fatal("Serve did not return")
			}
			_, err = io.ReadAll(silent)
			assert.NoError(t, err, "the server closed the silent connection")
		})
	}
}

// A handler that ignores its context is cut at the deadline and Run
// returns, even though grpc-go's Stop, called while GracefulStop waits for
// that handler, blocks until it returns (grpc-go#9393).
func TestHandlerIgnoringItsContextDoesNotHoldRun(t *testing.T) {
	h := newHarness(t, lameduck.WithGracePeriod(10*time.Second), lameduck.WithDrainDelay(time.Second),
		lameduck.WithHookTimeout(3*time.Second), lameduck.WithSafetyMargin(2*time.Second))
	defer close(h.svc.stuck) // after Run returned: the handler returns at last
	h.ld.MarkReady()
	h.start(t)
	callCtx, cancelCall := context.WithCancel(ctx(t))
	called := make(chan error, 1)
	go func() {
		_, err := testpb.NewTestServiceClient(h.dial(t)).CacheableUnaryCall(callCtx, &testpb.SimpleRequest{})
		called <- err
	}()
	h.svc.awaitStarted(t)

	h.signal(t)
	h.clock.Pass(t, time.Second)
	h.await(t, lameduck.PhaseDraining)
	// The client gives up: its connection closes, and GracefulStop is left
	// waiting for the handler alone.
	cancelCall()
	assert.Equal(t, codes.Canceled, status.Code(await.Recv(t, called, "the canceled call to return")))
	h.clock.Pass(t, drainTime(10*time.Second, time.Second))
	err := h.wait(t)
	require.ErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, err.Error(), "1 request cut")
}

func TestBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	addr := busy.Addr().String()

	h := newHarness(t)
	s := grpcserver.New(h.ld, addr)
	h.ld.Register(s)
	h.ld.MarkReady()
	err = h.ld.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("lameduck: starting grpc %s: listen tcp %s: bind: address already in use", addr, addr))
	assert.Nil(t, s.Addr())

	// After a failed Listen, every method is still safe.
	require.Error(t, s.Serve())
	s.LameDuck(func() {})
	require.NoError(t, s.Drain(context.Background()))
	assert.Equal(t, inflight.Counts{}, s.Close())
}

func TestMethodsAreSafeInAnyOrder(t *testing.T) {
	orders := [][]string{
		{"close", "lame duck", "drain", "serve"},
		{"lame duck", "serve", "drain", "close"},
		{"lame duck", "close", "serve"},
		{"drain", "lame duck", "serve", "close"},
		{"serve", "close", "drain", "lame duck"},
		{"serve", "drain", "close", "close"},
		{"serve", "lame duck", "lame duck", "close"},
	}
	for _, order := range orders {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			ld, err := lameduck.New()
			require.NoError(t, err)
			s := grpcserver.New(ld, "127.0.0.1:0")
			testpb.RegisterTestServiceServer(s, newTestService())
			require.NoError(t, s.Listen())
			served := make(chan error, 1)
			for _, step := range order {
				switch step {
				case "serve":
					go func() { served <- s.Serve() }()
				case "lame duck":
					s.LameDuck(func() {})
				case "drain":
					require.NoError(t, s.Drain(ctx(t)))
				case "close":
					assert.Equal(t, inflight.Counts{}, s.Close())
				}
			}
			s.Close()
			select {
			case err := <-served:
				assert.NoError(t, err, "Serve returns nil once stopped")
			case <-time.After(waitTimeout):
				t.Fatal("Serve did not return")
			}
		})
	}
}

func TestOptionsAndServicesApplyThroughTheDelay(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	var intercepted atomic.Int64
	s := grpcserver.New(h.ld, "127.0.0.1:0", grpc.UnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			intercepted.Add(1)
			return handler(ctx, req)
		}))
	testpb.RegisterTestServiceServer(s, newTestService())
	reflection.Register(s)
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t)
	cc := dial(t, s.Addr().String())
	client := testpb.NewTestServiceClient(cc)
	listServices := func() []string {
		t.Helper()
		stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx(t))
		require.NoError(t, err)
		require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
		}))
		resp, err := stream.Recv()
		require.NoError(t, err)
		require.NoError(t, stream.CloseSend())
		var names []string
		for _, svc := range resp.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		return names
	}
	want := []string{testServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

	_, err := client.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)
	assert.ElementsMatch(t, want, listServices())
	assert.Equal(t, int64(1), intercepted.Load())
	awaitReady(t, cc)

	h.signal(t)
	require.True(t, cc.WaitForStateChange(ctx(t), connectivity.Ready), "the connection never received a GOAWAY")
	_, err = client.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)
	assert.ElementsMatch(t, want, listServices(), "the grpc.Server of the delay has the same services")
	assert.Equal(t, int64(2), intercepted.Load(), "and the same options")
	assert.Equal(t, notServing, check(t, cc, "grpc.reflection.v1.ServerReflection"), "every registered service is NOT_SERVING")

	h.clock.Pass(t, 5*time.Second)
	require.NoError(t, h.wait(t))
}

func TestString(t *testing.T) {
	ld, err := lameduck.New()
	require.NoError(t, err)
	assert.Equal(t, "grpc :9090", grpcserver.New(ld, ":9090").String())
	assert.Equal(t, "grpc :0", grpcserver.New(ld, "").String())

	s := grpcserver.New(ld, "127.0.0.1:0")
	assert.Equal(t, "grpc 127.0.0.1:0", s.String())
	require.NoError(t, s.Listen())
	defer s.Close()
	assert.Equal(t, "grpc "+s.Addr().String(), s.String(), "the bound port, once listening")
}

func TestMisusePanics(t *testing.T) {
	assert.PanicsWithValue(t, "grpcserver: New: the coordinator is nil; create one with lameduck.New", func() {
		grpcserver.New(nil, ":9090")
	})
	ld, err := lameduck.New()
	require.NoError(t, err)
	s := grpcserver.New(ld, "127.0.0.1:0")
	require.NoError(t, s.Listen())
	defer s.Close()
	assert.PanicsWithValue(t, "grpcserver: RegisterService called after the server started; register every service before calling Coordinator.Run", func() {
		testpb.RegisterTestServiceServer(s, newTestService())
	})
}
