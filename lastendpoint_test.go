package lameduck_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/kube/kubetest"
)

// The hold: after the signal, readiness stays on while no other endpoint of
// a Service that lists the pod is ready, since kube-proxy then routes to
// the pod only while its readiness probe passes (KEP-1669).

var (
	// fallbackEP is the pod once deleted while its probe passes: not
	// ready, serving, terminating.
	fallbackEP = ep{Addr: podIP, Serving: true, Terminating: true}
	// startingEP is a replacement with an address, whose probe has not
	// passed yet.
	startingEP = ep{Addr: otherIP}
)

// reach is how long after the signal the hold and the delay may last
// together, with the default grace period and reserves and the delay's
// maximum: the drain keeps DrainKept of what the budget leaves it.
const reach = adaptiveMax + (lameduck.DefaultGracePeriod - adaptiveMax - lameduck.DefaultHookTimeout - lameduck.DefaultSafetyMargin) -
	lameduck.DrainKept

// startHeld starts a Coordinator with the adaptive delay of delay_test.go,
// watching api, and sends it SIGTERM; it does not wait for the lame duck.
func startHeld(t *testing.T, api *kubetest.API) (*harness, *fakeServer, *syncLog) {
	t.Helper()
	var log syncLog
	h := newHarness(t, kubernetesAPI(api), lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax),
		lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	s := newFakeServer("web", h.log)
	h.ld.Register(s)
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	api.AwaitWatch(t)
	return h, s, &log
}

// stillHeld fails the test unless the process is still ready, serving
// as before the signal.
func stillHeld(t *testing.T, h *harness, why string) {
	t.Helper()
	code, body := probe(t, h.ld.ReadinessHandler(), http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusOK, code, "readiness, while %s: %s", why, body)
	assert.NoError(t, h.ld.CheckReadiness(context.Background()))
	select {
	case <-h.ld.Entered(lameduck.PhaseLameDuck):
		t.Fatalf("the lame duck began, but %s", why)
	default:
	}
	assert.NotContains(t, h.log.all(), "web lame duck", "keep-alive clients are not told to leave while %s", why)
}

// lameDuckBegins waits for the lame duck and checks that readiness is off.
func lameDuckBegins(t *testing.T, h *harness) lameduck.Event {
	t.Helper()
	ev := h.phases.await(t, lameduck.PhaseLameDuck)
	code, _ := probe(t, h.ld.ReadinessHandler(), http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, h.log.all(), "web lame duck")
	return ev
}

func TestTheLastEndpointStaysReadyUntilAnotherIsReady(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, startingEP))
	h, _, log := startHeld(t, api)
	h.clock.AwaitTimer(t, reach) // a replacement is starting: wait for it, up to the reach
	h.clock.Advance(7 * time.Second)
	stillHeld(t, h, "the replacement is not ready")
	st := h.ld.Status()
	assert.True(t, st.Ready)
	assert.Equal(t, 7*time.Second, st.Delay.LastEndpointElapsed, "Status reports the hold as it grows")

	api.Push("MODIFIED", endpointSlice("web-abc", "web", fallbackEP, otherReadyEP))
	lameDuckBegins(t, h)
	h.clock.AwaitTimer(t, lameduck.EndpointsAllowance) // the delay counts from the replacement's readiness
	h.clock.Advance(lameduck.EndpointsAllowance - time.Millisecond)
	stillDelaying(t, h, "kube-proxy is given its allowance from the moment the replacement is ready")
	h.clock.Advance(time.Millisecond)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.EndpointsAllowance, ev.Elapsed)
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	assert.Equal(t, 7*time.Second, ev.Delay.LastEndpointElapsed)
	assert.Equal(t, 7*time.Second, ev.Delay.Unrouted)
	require.NoError(t, h.wait(t))
	assert.Equal(t, []string{"web listen", "web lame duck", "web drain", "web close"}, h.log.all())
	for _, part := range []string{
		`staying ready after the signal: the last endpoint of its Services`, "services=[web]", "replacement_starting=true",
		`readiness off after staying ready as the last endpoint" why="another endpoint is ready" last_endpoint_held=7s`,
		"last_endpoint_held=7s", "drain_delay_ended=endpoints",
	} {
		assert.Contains(t, log.String(), part)
	}
}

// Behind a proxy that routes by the slices with a lag, such as Traefik,
// connections go on arriving past the allowance: they hold the delay after
// a hold as they do without one.
func TestArrivalsHoldTheDelayAfterTheHold(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, startingEP))
	h, s, _ := startHeld(t, api)
	h.clock.AwaitTimer(t, reach)
	h.clock.Advance(4 * time.Second)
	api.Push("MODIFIED", endpointSlice("web-abc", "web", fallbackEP, otherReadyEP))
	lameDuckBegins(t, h)
	h.clock.AwaitTimer(t, lameduck.EndpointsAllowance)
	// The proxy still sends new connections here, one every half quiet
	// period, the last 1 s past the allowance: each arrives before the one
	// before it could have ended the delay.
	step := adaptiveQuiet / 2
	for in := step; in <= lameduck.EndpointsAllowance+time.Second; in += step {
		h.clock.Advance(step)
		s.arrive()
	}
	stillDelaying(t, h, "a connection just arrived")
	h.clock.Pass(t, adaptiveQuiet)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.EndpointsAllowance+time.Second+adaptiveQuiet, ev.Elapsed)
	assert.Equal(t, lameduck.DelayQuiet, ev.Delay.Ended)
	assert.Equal(t, 4*time.Second, ev.Delay.LastEndpointElapsed)
	assert.Equal(t, 4*time.Second+lameduck.EndpointsAllowance+time.Second, ev.Delay.LastArrival, "from the signal")
	require.NoError(t, h.wait(t))
}

// With no replacement coming (the Deployment scaled to zero or deleted),
// the hold is short: it ends when no replacement has appeared in the
// slices ReplacementWait after the signal, or at once when the slices
// stop listing the pod.
func TestTheHoldEndsWhenNoReplacementComes(t *testing.T) {
	t.Run("no other endpoint appears", func(t *testing.T) {
		api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP))
		h, _, log := startHeld(t, api)
		h.clock.AwaitTimer(t, lameduck.ReplacementWait)
		h.clock.Advance(lameduck.ReplacementWait - time.Millisecond)
		stillHeld(t, h, "a replacement may still appear")
		h.clock.Advance(time.Millisecond)
		lameDuckBegins(t, h)
		// The probe's 503 makes the endpoint stop serving.
		api.Push("MODIFIED", endpointSlice("web-abc", "web", terminatingEP))
		h.clock.Pass(t, lameduck.EndpointsAllowance)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.EndpointsAllowance, ev.Elapsed)
		assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
		assert.Equal(t, lameduck.ReplacementWait, ev.Delay.LastEndpointElapsed)
		require.NoError(t, h.wait(t))
		assert.Contains(t, log.String(), `why="no replacement appeared"`)
		assert.Contains(t, log.String(), "replacement_starting=false")
	})
	t.Run("the other endpoints are terminating too", func(t *testing.T) {
		others := ep{Addr: otherIP, Serving: true, Terminating: true}
		api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, others))
		h, _, _ := startHeld(t, api)
		h.clock.Pass(t, lameduck.ReplacementWait)
		ev := lameDuckBegins(t, h)
		assert.Equal(t, lameduck.ReplacementWait, ev.Elapsed, "the serving phase lasted the hold")
		h.clock.Pass(t, adaptiveMax) // the slice still says serving: the delay waits for it, as without a hold
		ev = h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DelayMax, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
	})
	t.Run("the slice is deleted", func(t *testing.T) {
		api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, startingEP))
		h, _, log := startHeld(t, api)
		h.clock.AwaitTimer(t, reach)
		h.clock.Advance(time.Second)
		stillHeld(t, h, "the replacement is starting")
		api.Push("DELETED", endpointSlice("web-abc", "web"))
		lameDuckBegins(t, h)
		h.clock.Pass(t, lameduck.EndpointsAllowance)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended, "a slice gone no longer routes here")
		assert.Equal(t, time.Second, ev.Delay.LastEndpointElapsed)
		require.NoError(t, h.wait(t))
		assert.Contains(t, log.String(), "last_endpoint_held=1s")
	})
}

// A replacement that never turns ready holds the pod until the reach, and
// no longer: the drain, the hooks and the safety margin keep their time.
func TestTheHoldEndsWithinTheBudget(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, startingEP))
	h, _, log := startHeld(t, api)
	h.clock.AwaitTimer(t, reach)
	h.clock.Advance(reach - time.Millisecond)
	stillHeld(t, h, "the reach is not reached")
	h.clock.Advance(time.Millisecond)
	lameDuckBegins(t, h)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, time.Duration(0), ev.Elapsed, "the hold took what the delay could have had")
	assert.Equal(t, reach, ev.Delay.LastEndpointElapsed)
	require.NoError(t, h.wait(t))
	assert.Contains(t, log.String(), "the grace period allows no more: raise terminationGracePeriodSeconds")
}

// Where the pod is not the last endpoint, as in a rolling update that
// starts a new pod first, nothing is held.
func TestNoHoldWhileAnotherEndpointIsReady(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, otherReadyEP))
	h, _, log := startHeld(t, api)
	lameDuckBegins(t, h)
	h.clock.Pass(t, lameduck.EndpointsAllowance)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Zero(t, ev.Delay.LastEndpointElapsed)
	require.NoError(t, h.wait(t))
	assert.False(t, strings.Contains(log.String(), "last_endpoint_held"), log.String())
	assert.False(t, strings.Contains(log.String(), "staying ready"), log.String())
	assert.Contains(t, log.String(), fmt.Sprintf("last_endpoint_reach=%v", reach), "the serving line says how long a replacement may take")
}

// A second signal ends the hold, as it cuts the delay.
func TestASecondSignalEndsTheHold(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", fallbackEP, startingEP))
	h, _, _ := startHeld(t, api)
	h.clock.AwaitTimer(t, reach)
	h.clock.Advance(2 * time.Second)
	h.signals <- syscall.SIGTERM
	h.phases.await(t, lameduck.PhaseLameDuck)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.DelayCut, ev.Delay.Ended)
	assert.Equal(t, 2*time.Second, ev.Delay.LastEndpointElapsed)
	require.NoError(t, h.wait(t))
}
