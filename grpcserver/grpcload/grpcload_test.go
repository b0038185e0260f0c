package grpcload_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	_ "github.com/lameduck/lameduck/grpcserver/grpcload"
	"github.com/lameduck/lameduck/internal/rollout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type emptyServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (emptyServer) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

// grpcServer serves the test service on loopback until the test ends, and
// returns its address.
func grpcServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, emptyServer{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

// newProxy returns a load balancer that routes to endpoints.
func newProxy(t *testing.T, endpoints ...string) *rollout.Proxy {
	t.Helper()
	p, err := rollout.NewProxy("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	for _, ep := range endpoints {
		p.AddEndpoint(ep)
	}
	return p
}

// runLoad runs load until at least n calls have been counted and returns
// the counts.
func runLoad(t *testing.T, cfg rollout.LoadConfig, n int64) rollout.Counts {
	t.Helper()
	cfg.Kind = rollout.LoadGRPC
	l, err := rollout.StartLoad(t.Context(), cfg)
	require.NoError(t, err)
	assert.Eventually(t, func() bool { return l.Completed() >= n }, 10*time.Second, time.Millisecond)
	return l.Stop()
}

func TestLoadThroughProxy(t *testing.T) {
	p := newProxy(t, grpcServer(t))
	c := runLoad(t, rollout.LoadConfig{Addr: p.Addr(), Conns: 3}, 300)
	assert.GreaterOrEqual(t, c.Requests, int64(300))
	assert.Zero(t, c.Failed(), "samples: %q", c.Samples)
	assert.LessOrEqual(t, p.Stats().Conns, int64(3), "one connection per ClientConn")
}

// With no endpoint, every call must be seen refused: nothing may be hidden
// by a retry, and nothing may be misread as a reset of a connection that
// had carried calls.
func TestLoadClassifiesRefused(t *testing.T) {
	p := newProxy(t)
	c := runLoad(t, rollout.LoadConfig{Addr: p.Addr(), Conns: 2}, 20)
	assert.Equal(t, c.Requests, c.Failed())
	assert.Equal(t, c.Requests, c.Failures[rollout.KindRefused], "samples: %q", c.Samples)
	assert.Equal(t, c.Requests, c.Codes["Unavailable"])
}

// Fresh clients open a new connection through the load balancer for every
// call, and fail nothing doing so.
func TestFreshClientsOpenANewConnectionForEveryCall(t *testing.T) {
	p := newProxy(t, grpcServer(t))
	const conns = 1
	l, err := rollout.StartLoad(t.Context(), rollout.LoadConfig{Kind: rollout.LoadGRPC, Addr: p.Addr(), Conns: conns, Fresh: 2})
	require.NoError(t, err)
	// The server keeps connections alive: only fresh clients make more
	// than one.
	assert.Eventually(t, func() bool { return p.Stats().Conns >= conns+20 }, 10*time.Second, time.Millisecond,
		"fresh clients keep opening connections")
	c := l.Stop()
	assert.Zero(t, c.Failed(), "samples: %q", c.Samples)
}

func TestRegisteredOnce(t *testing.T) {
	require.NoError(t, rollout.CheckLoad(rollout.LoadGRPC))
	assert.Panics(t, func() { rollout.RegisterLoad(rollout.LoadGRPC, nil) })
}
