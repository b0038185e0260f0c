package grpcserver_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
)

// A connection accepted during the drain delay is an arrival, and is asked
// to leave long before the drain: its client reconnects, which is another
// arrival, and every RPC succeeds.
func TestConnectionsAcceptedDuringTheDelayAreArrivalsAndLeave(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	before := h.dial(t)
	_, err := testpb.NewTestServiceClient(before).EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)
	h.signal(t)

	cc := h.dial(t)
	client := testpb.NewTestServiceClient(cc)
	_, err = client.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err, "a connection opened during the delay is served")
	awaitReady(t, cc)
	// The delay is on the fake clock, which does not move: only the
	// server's GOAWAY can end the connection.
	require.True(t, cc.WaitForStateChange(ctx(t), connectivity.Ready), "the connection was never asked to leave")
	_, err = client.EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err, "the client reconnects and is served")
	awaitReady(t, cc)
	require.True(t, cc.WaitForStateChange(ctx(t), connectivity.Ready), "the second connection was never asked to leave")

	h.clock.Pass(t, 5*time.Second)
	ev := h.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 2, ev.Delay.Arrivals, "two connections arrived during the delay; the one from before the signal is not one")
	assert.Equal(t, h.srv.String(), ev.Delay.LastArrivalServer)
	require.NoError(t, h.wait(t))
}

// Every connection accepted during the delay is moved off by a new
// grpc.Server; the stopped ones are let go, so that a long delay with
// clients arriving all along holds only the grpc.Servers still draining.
func TestRotationsLetStoppedServersGo(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	h.signal(t)
	const clients = 20
	for range clients {
		cc := h.dial(t)
		_, err := testpb.NewTestServiceClient(cc).EmptyCall(ctx(t), &testpb.Empty{})
		require.NoError(t, err)
		awaitReady(t, cc)
		require.True(t, cc.WaitForStateChange(ctx(t), connectivity.Ready), "the connection was never asked to leave")
		require.NoError(t, cc.Close())
	}
	require.Eventually(t, func() bool { return grpcserver.Generations(h.srv) == 1 }, waitTimeout, time.Millisecond,
		"after %d rotations whose clients have all gone, only the current grpc.Server should be left", clients)
	h.clock.Pass(t, 5*time.Second)
	h.await(t, lameduck.PhaseDraining)
	require.NoError(t, h.wait(t))
}

// Health checks and the kubelet's probes say nothing about routing: a
// connection that carries only those is no arrival; one whose later RPC is
// not a probe is, from that RPC.
func TestProbesAreNotArrivals(t *testing.T) {
	h := newHarness(t, lameduck.WithDrainDelay(5*time.Second))
	h.ld.MarkReady()
	h.start(t)
	h.signal(t)
	h.clock.AwaitTimer(t, 5*time.Second)

	health := h.dial(t)
	for range 3 {
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, health, ""))
	}
	kubelet := dial(t, h.srv.Addr().String(), grpc.WithUserAgent("kube-probe/1.31"))
	_, err := testpb.NewTestServiceClient(kubelet).EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)

	h.clock.Advance(time.Second)
	cc := h.dial(t)
	check(t, cc, "")
	h.clock.Advance(time.Second)
	_, err = testpb.NewTestServiceClient(cc).EmptyCall(ctx(t), &testpb.Empty{})
	require.NoError(t, err)

	h.clock.Advance(3 * time.Second)
	ev := h.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 1, ev.Delay.Arrivals, "only one connection carried an RPC that is not a probe")
	assert.Equal(t, 2*time.Second, ev.Delay.LastArrival, "counted from that RPC, not from its connection")
	require.NoError(t, h.wait(t))
}
