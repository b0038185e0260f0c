package grpcserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

// leavingMessage is the message of the UNAVAILABLE status that a stream
// ends with at its turn.
const leavingMessage = "lameduck: server shutting down; reconnect"

// streamService serves the streams of the departure tests. Every message
// it sends carries its name, so that a client can tell which server its
// stream landed on.
//   - StreamingOutputCall sends a message every tick until its context
//     ends, then returns what end returns: a handler written with no
//     thought of departures, which ends on its context alone; given a
//     ResponseStatus, it sends one message and fails with that status;
//   - FullDuplexCall sends a message every tick until its turn to leave,
//     then returns nil: a handler that selects on lameduck.Leaving;
//   - UnaryCall and StreamingInputCall say whether their context carries
//     a turn to leave, in ServerId and AggregatedPayloadSize (1: it does).
type streamService struct {
	testpb.UnimplementedTestServiceServer
	name string
	tick time.Duration
	// end returns what StreamingOutputCall returns once its context has
	// ended; nil for the context's error.
	end func(ctx context.Context) error
}

func (s *streamService) message() *testpb.StreamingOutputCallResponse {
	return &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(s.name)}}
}

func (s *streamService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	ctx := stream.Context()
	if st := req.GetResponseStatus(); st != nil {
		if err := stream.Send(s.message()); err != nil {
			return err
		}
		return status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	ticker := time.NewTicker(s.tick)
	defer ticker.Stop()
	for {
		if err := stream.Send(s.message()); err != nil {
			return err
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			if s.end != nil {
				return s.end(ctx)
			}
			return ctx.Err()
		}
	}
}

func (s *streamService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	ticker := time.NewTicker(s.tick)
	defer ticker.Stop()
	for {
		// A client that goes away makes Send fail.
		if err := stream.Send(s.message()); err != nil {
			return err
		}
		select {
		case <-ticker.C:
		case <-lameduck.Leaving(stream.Context()):
			return nil
		}
	}
}

func (s *streamService) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{ServerId: fmt.Sprint(lameduck.Leaving(ctx) != nil)}, nil
}

func (s *streamService) StreamingInputCall(stream testpb.TestService_StreamingInputCallServer) error {
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	var departs int32
	if lameduck.Leaving(stream.Context()) != nil {
		departs = 1
	}
	return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: departs})
}

// streamEnd is how a client saw its stream end.
type streamEnd struct {
	server string // where the stream's messages came from
	err    error  // io.EOF for a stream that ended OK
	at     time.Time
}

// openStream opens a StreamingOutputCall on client and waits for its
// first message; its end is sent on ends.
func openStream(t *testing.T, client testpb.TestServiceClient, ends chan<- streamEnd) {
	t.Helper()
	stream, err := client.StreamingOutputCall(ctx(t), &testpb.StreamingOutputCallRequest{})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err, "the stream's first message")
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ends <- streamEnd{server: string(first.GetPayload().GetBody()), err: err, at: time.Now()}
				return
			}
		}
	}()
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

func TestStreamsLeaveSpreadOverTheWindowWithUnavailable(t *testing.T) {
	const (
		early, late = 40, 10 // streams opened before the signal, and during the delay
		n           = early + late
		// Long enough for the late streams to open during it on a busy
		// machine.
		delay = time.Second
		// 50 streams, 10 ms apart: the pace at which the Coordinator
		// spreads few streams, so they fill the window.
		window = 500 * time.Millisecond
	)
	h := newHarnessFor(t, &streamService{name: "A", tick: 10 * time.Millisecond}, nil, nil,
		lameduck.WithDrainDelay(delay), lameduck.WithDepartureWindow(window))
	h.ld.MarkReady()
	h.start(t)
	ends := make(chan streamEnd, n)
	for range early / 10 {
		client := testpb.NewTestServiceClient(h.dial(t))
		for range 10 {
			openStream(t, client, ends)
		}
	}

	signalAt := time.Now()
	h.signal(t)
	for range late / 5 {
		client := testpb.NewTestServiceClient(h.dial(t))
		for range 5 {
			openStream(t, client, ends)
		}
	}
	require.True(t, h.enteredAt(lameduck.PhaseDraining).IsZero(), "the late streams must open during the delay; the machine is too slow for this test")

	var at []time.Time
	got := map[codes.Code]int{}
	for range n {
		end := await.Recv(t, ends, "every stream to end")
		at = append(at, end.at)
		st := status.Convert(end.err)
		got[st.Code()]++
		if st.Code() == codes.Unavailable {
			assert.Equal(t, leavingMessage, st.Message())
		}
	}
	require.NoError(t, h.wait(t), "nothing is cut")
	assert.Equal(t, map[codes.Code]int{codes.Unavailable: n}, got, "every stream, early or late, ends with UNAVAILABLE, none CANCELLED")

	stopping := h.await(t, lameduck.PhaseStopping)
	assert.Zero(t, stopping.Cut.Total(), "nothing is cut")
	assert.Equal(t, n, stopping.Departures.Told, "every stream is told to leave at its turn")
	assert.Zero(t, stopping.Departures.Left)
	stoppedAt := h.enteredAt(lameduck.PhaseStopped)
	drainDeadline := signalAt.Add(delay + drainTime(lameduck.DefaultGracePeriod, delay))
	assert.True(t, stoppedAt.Before(drainDeadline), "Run stops once the last stream has gone, long before the drain deadline")

	slices.SortFunc(at, time.Time.Compare)
	drainingAt := h.enteredAt(lameduck.PhaseDraining)

	assert.True(t, at[0].After(drainingAt), "no stream ends before the drain: the delay lets routing move first")
	assert.Greater(t, at[n-1].Sub(at[0]), window/2, "the ends are spread over the window, not at once")
	// Evenly spread, five end in each tenth of the window; all at once,
	// all of them would. Half of them leaves room for a machine that
	// other tests stall for a while.
	assert.LessOrEqual(t, mostWithin(at, window/10), n/2, "the most streams ending within a tenth of the window")
}

func TestAStreamSentAwayReconnectsToAnotherServer(t *testing.T) {
	a := newHarnessFor(t, &streamService{name: "A", tick: 5 * time.Millisecond}, nil, nil,
		lameduck.WithDrainDelay(100*time.Millisecond), lameduck.WithDepartureWindow(100*time.Millisecond))
	b := newHarnessFor(t, &streamService{name: "B", tick: 5 * time.Millisecond}, nil, nil,
		lameduck.WithDrainDelay(0), lameduck.WithDepartureWindow(0))
	a.ld.MarkReady()
	b.ld.MarkReady()
	a.start(t)
	b.start(t)
	// Both addresses, A first, as a client that resolves a Service's
	// pods (or a headless Service) gets them: pick_first tries A first.
	r := manual.NewBuilderWithScheme("lameduck")
	r.InitialState(resolver.State{Addresses: []resolver.Address{
		{Addr: a.srv.Addr().String()}, {Addr: b.srv.Addr().String()},
	}})
	client := testpb.NewTestServiceClient(dial(t, r.Scheme()+":///pods", grpc.WithResolvers(r)))
	ends := make(chan streamEnd, 2)
	openStream(t, client, ends)

	a.signal(t)
	end := await.Recv(t, ends, "the stream on A to end")
	require.Equal(t, "A", end.server)
	require.Equal(t, codes.Unavailable, status.Code(end.err), "%v", end.err)

	// What a client does on UNAVAILABLE: open the stream again.
	openStream(t, client, ends)
	require.NoError(t, a.wait(t))
	b.signal(t)
	end = await.Recv(t, ends, "the stream on B to end")
	assert.Equal(t, "B", end.server, "the stream opened again lands on the other server")
	require.NoError(t, b.wait(t))
	_, err := net.Dial("tcp", a.srv.Addr().String())
	assert.Error(t, err, "A's port is closed")
}

// departing runs a harness on a fake clock whose server serves svc, and
// returns it ready to serve, with a client.
func departing(t *testing.T, svc *streamService) (*harness, testpb.TestServiceClient) {
	t.Helper()
	h := newHarnessFor(t, svc, fakeclock.New(), nil, lameduck.WithDrainDelay(time.Second))
	h.ld.MarkReady()
	h.start(t)
	return h, testpb.NewTestServiceClient(h.dial(t))
}

// giveTurns ends the harness's drain delay and lets every turn come.
func (h *harness) giveTurns(t *testing.T) {
	t.Helper()
	h.clock.Pass(t, time.Second)
	h.await(t, lameduck.PhaseDraining)
	// A second is past the turns of up to a hundred streams, 10 ms apart.
	h.clock.Advance(time.Second)
}

func TestAHandlerThatReturnsAtItsTurnEndsItsStreamOK(t *testing.T) {
	h, client := departing(t, &streamService{name: "A", tick: time.Millisecond})
	stream, err := client.FullDuplexCall(ctx(t))
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()

	h.signal(t)
	h.giveTurns(t)
	err = await.Recv(t, ended, "the stream to end")
	assert.True(t, isEOF(err), "a handler that returns nil at its turn ends its stream OK, got %v", err)
	require.NoError(t, h.wait(t))
	assert.Equal(t, 1, h.await(t, lameduck.PhaseStopping).Departures.Told)
}

func TestAnErrorReturnedAfterTheTurnReachesTheClientAsUnavailable(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(ctx context.Context) error
		code codes.Code
		msg  string
	}{
		{"the context's error", func(ctx context.Context) error { return ctx.Err() }, codes.Unavailable, leavingMessage},
		{"a status made from it", func(ctx context.Context) error { return status.FromContextError(ctx.Err()).Err() }, codes.Unavailable, leavingMessage},
		{"an error wrapping the cause", func(ctx context.Context) error {
			return fmt.Errorf("reading the feed: %w", context.Cause(ctx))
		}, codes.Unavailable, leavingMessage},
		{"any other status", func(context.Context) error { return status.Error(codes.Internal, "the feed failed") }, codes.Unavailable, leavingMessage},
		{"an UNAVAILABLE of its own", func(context.Context) error { return status.Error(codes.Unavailable, "moving") }, codes.Unavailable, "moving"},
		{"nil", func(context.Context) error { return nil }, codes.OK, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			causes := make(chan error, 1)
			svc := &streamService{name: "A", tick: time.Millisecond, end: func(ctx context.Context) error {
				causes <- context.Cause(ctx)
				return tt.end(ctx)
			}}
			h, client := departing(t, svc)
			ends := make(chan streamEnd, 1)
			openStream(t, client, ends)

			h.signal(t)
			h.giveTurns(t)
			end := await.Recv(t, ends, "the stream to end")
			if tt.code == codes.OK {
				assert.True(t, isEOF(end.err), "%v", end.err)
			} else {
				st := status.Convert(end.err)
				assert.Equal(t, tt.code, st.Code())
				assert.Equal(t, tt.msg, st.Message())
			}
			require.NoError(t, h.wait(t))
			cause := await.Recv(t, causes, "the handler's end")
			assert.ErrorContains(t, cause, "turn to leave", "the context's cause says why it ended")
			assert.False(t, errors.Is(cause, context.Canceled))
		})
	}
}

func TestAnErrorReturnedBeforeTheTurnIsKept(t *testing.T) {
	h, client := departing(t, &streamService{name: "A", tick: time.Millisecond})
	ends := make(chan streamEnd, 2)
	openStream(t, client, ends)

	h.signal(t)
	// A stream that fails by itself during the delay: before its turn,
	// its status is its own, and it counts as having left by itself.
	failing, err := client.StreamingOutputCall(ctx(t), &testpb.StreamingOutputCallRequest{
		ResponseStatus: &testpb.EchoStatus{Code: int32(codes.InvalidArgument), Message: "no such cursor"},
	})
	require.NoError(t, err)
	for err == nil {
		_, err = failing.Recv()
	}
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Equal(t, "no such cursor", status.Convert(err).Message())

	h.giveTurns(t)
	end := await.Recv(t, ends, "the stream to end")
	assert.Equal(t, codes.Unavailable, status.Code(end.err))
	require.NoError(t, h.wait(t))
	stopping := h.await(t, lameduck.PhaseStopping)
	assert.Equal(t, 1, stopping.Departures.Told)
	assert.Equal(t, 1, stopping.Departures.Left, "the stream that failed during the shutdown")
}

func TestOnlyRPCsInWhichTheServerStreamsTakeTurns(t *testing.T) {
	h, client := departing(t, &streamService{name: "A", tick: time.Millisecond})
	resp, err := client.UnaryCall(ctx(t), &testpb.SimpleRequest{})
	require.NoError(t, err)
	assert.Equal(t, "false", resp.ServerId, "a unary RPC's context carries no turn")

	// A client stream, a health Watch and a server stream, open across
	// the drain.
	upload, err := client.StreamingInputCall(ctx(t))
	require.NoError(t, err)
	require.NoError(t, upload.Send(&testpb.StreamingInputCallRequest{}))
	next := watch(t, h.dial(t), "")
	_, err = next()
	require.NoError(t, err)
	ends := make(chan streamEnd, 1)
	openStream(t, client, ends)

	h.signal(t)
	h.giveTurns(t)
	end := await.Recv(t, ends, "the server stream to end")
	assert.Equal(t, codes.Unavailable, status.Code(end.err), "the server stream leaves at its turn")
	for {
		if _, err := next(); err != nil {
			assert.True(t, isEOF(err), "the health Watch ends OK as the drain begins, got %v", err)
			break
		}
	}
	require.NoError(t, upload.Send(&testpb.StreamingInputCallRequest{}), "the client stream is still served in the drain")
	got, err := upload.CloseAndRecv()
	require.NoError(t, err, "and finishes OK")
	assert.Equal(t, int32(0), got.AggregatedPayloadSize, "its context carries no turn")

	require.NoError(t, h.wait(t))
	stopping := h.await(t, lameduck.PhaseStopping)
	assert.Equal(t, 1, stopping.Departures.Told, "the server stream alone took a turn")
	assert.Zero(t, stopping.Cut.Total())
}
