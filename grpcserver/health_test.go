package grpcserver_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
)

// switchCheck is a readiness check whose result the test sets.
type switchCheck struct {
	failing atomic.Bool
	calls   atomic.Int32
}

func (c *switchCheck) check(context.Context) error {
	c.calls.Add(1)
	if c.failing.Load() {
		return errors.New("connection refused")
	}
	return nil
}

// The kubelet's gRPC probe and grpc-health-probe call Check on the overall
// service ""; grpc-health-probe -watch, meshes and grpc-go's client-side
// health checking keep a Watch open.
func TestHealthReflectsReadinessChecks(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(time.Second))
	db := &switchCheck{}
	h.ld.AddCheck(lameduck.Check{Name: "db", Func: db.check})
	h.ld.MarkReady()
	h.start(t)
	cc := h.dial(t)
	services := []string{"", testServiceName}
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
	expectWatches(serving, "while the check passes")
	for _, svc := range services {
		assert.Equal(t, serving, check(t, cc, svc), "while the check passes, service %q", svc)
	}

	// No Check call in between: the Watch streams learn it from the checks
	// run while they are open.
	db.failing.Store(true)
	expectWatches(notServing, "once the check fails")
	for _, svc := range services {
		assert.Equal(t, notServing, check(t, cc, svc), "while the check fails, service %q", svc)
	}
	_, err := healthpb.NewHealthClient(cc).Check(ctx(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err), "an unknown service stays unknown")
	list, err := healthpb.NewHealthClient(cc).List(ctx(t), &healthpb.HealthListRequest{})
	require.NoError(t, err)
	assert.Equal(t, notServing, list.Statuses[""].Status, "List answers as Check does")

	db.failing.Store(false)
	expectWatches(serving, "once the check recovers")
	assert.Equal(t, serving, check(t, cc, ""))

	h.signal(t)
	expectWatches(notServing, "from the first moment of the shutdown")
	h.clock.Pass(t, time.Second)
	for i, next := range watches {
		_, err := next()
		assert.True(t, isEOF(err), "Watch of %q ends cleanly when the drain begins, got %v", services[i], err)
	}
	require.NoError(t, h.wait(t))
}

func TestHealthWatchNeverShowsServingWhileACheckFails(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(time.Second))
	db := &switchCheck{}
	db.failing.Store(true)
	h.ld.AddCheck(lameduck.Check{Name: "db", Func: db.check})
	h.start(t)
	cc := h.dial(t)
	next := watch(t, cc, "")
	got, err := next()
	require.NoError(t, err)
	assert.Equal(t, notServing, got, "before MarkReady")

	h.ld.MarkReady()
	assert.Equal(t, notServing, check(t, cc, ""), "ready, but the check fails")
	h.signal(t)
	h.clock.Pass(t, time.Second)
	require.NoError(t, h.wait(t))
	_, err = next()
	assert.True(t, isEOF(err), "the Watch ends at the drain without ever having said SERVING, got %v", err)
}

func TestHealthFloodNeverStacksCheckCalls(t *testing.T) {
	const checks, watches = 40, 10
	// The first check call is held until every health RPC has reached the
	// server, so that they find it running.
	arrived := make(chan struct{}, checks+watches)
	h := newHarnessWith(t, []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			arrived <- struct{}{}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			arrived <- struct{}{}
			return handler(srv, ss)
		}),
	}, lameduck.WithDrainDelay(time.Second))
	var calls, running, maxRunning atomic.Int32
	h.ld.AddCheck(lameduck.Check{Name: "db", Func: func(context.Context) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
		}
		if calls.Add(1) == 1 {
			for range checks + watches {
				<-arrived
			}
		}
		return nil
	}})
	h.ld.MarkReady()
	h.start(t)
	cc := h.dial(t)
	client := healthpb.NewHealthClient(cc)

	var wg sync.WaitGroup
	statuses := make(chan healthpb.HealthCheckResponse_ServingStatus, checks+watches)
	for i := range checks + watches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i < checks {
				resp, err := client.Check(ctx(t), &healthpb.HealthCheckRequest{})
				if assert.NoError(t, err) {
					statuses <- resp.Status
				}
				return
			}
			ctx, cancel := context.WithCancel(ctx(t))
			defer cancel()
			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
			if !assert.NoError(t, err) {
				return
			}
			resp, err := stream.Recv()
			if assert.NoError(t, err) {
				statuses <- resp.Status
			}
		}()
	}
	await.Wait(t, &wg, "the health calls")
	close(statuses)
	for st := range statuses {
		assert.Equal(t, serving, st)
	}
	assert.Equal(t, int32(1), maxRunning.Load(), "a check runs at most once at a time, however many health calls ask")
	assert.Less(t, calls.Load(), int32((checks+watches)/2), "health calls share check calls")
	h.signal(t)
	h.clock.Pass(t, time.Second)
	require.NoError(t, h.wait(t))
}
