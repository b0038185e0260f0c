package lameduck_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/kube/kubetest"
)

// The pod's address in these tests, and another pod's.
var (
	podIP   = netip.MustParseAddr("10.244.0.7")
	otherIP = netip.MustParseAddr("10.244.0.8")
)

// ep is an endpoint of a fake EndpointSlice.
type ep = kubetest.Endpoint

var (
	readyEP       = ep{Addr: podIP, Ready: true, Serving: true}
	terminatingEP = ep{Addr: podIP, Terminating: true}
	otherReadyEP  = ep{Addr: otherIP, Ready: true, Serving: true}
)

// endpointSlice is an EndpointSlice of service, as the API serves it.
var endpointSlice = kubetest.Slice

// kubernetesAPI makes the Coordinator watch api, as the pod at podIP.
func kubernetesAPI(api *kubetest.API) lameduck.Option {
	return lameduck.WithKubernetesAPI(api, podIP)
}

// syncLog is a text log that tests read while the Coordinator writes it.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startWatching starts a Coordinator with the adaptive delay of
// delay_test.go, watching api, and sends it SIGTERM.
func startWatching(t *testing.T, api *kubetest.API) (*harness, *fakeServer, *syncLog) {
	t.Helper()
	var log syncLog
	h, s := startAdaptive(t, kubernetesAPI(api), lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	return h, s, &log
}

func TestDelayEndsOnceTheEndpointSlicesStopRouting(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", readyEP, otherReadyEP))
	h, _, log := startWatching(t, api)
	api.AwaitWatch(t)
	h.clock.AwaitTimer(t, adaptiveMax) // routed here: the cluster's word is awaited
	h.clock.Advance(2 * adaptiveMin)
	stillDelaying(t, h, "the slices still route to the pod, past the minimum")

	api.Push("MODIFIED", endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h.clock.AwaitTimer(t, lameduck.EndpointsAllowance)
	h.clock.Advance(lameduck.EndpointsAllowance - time.Millisecond)
	stillDelaying(t, h, "kube-proxy is given its allowance")
	h.clock.Advance(time.Millisecond)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 2*adaptiveMin+lameduck.EndpointsAllowance, ev.Elapsed)
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	assert.Equal(t, 2*adaptiveMin, ev.Delay.Unrouted, "seen unrouted 2s after the signal")
	require.NoError(t, h.wait(t))
	assert.Contains(t, log.String(), "drain_delay_ended=endpoints")
	assert.Contains(t, log.String(), "endpoints_unrouted=2s")
}

func TestDelayEndsOnTheClustersWordBeforeTheMinimum(t *testing.T) {
	// Removed from the slice before the signal reached the process, as
	// happens when the endpoint controller is quick.
	api := kubetest.New(t, endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h, _, _ := startWatching(t, api)
	h.clock.Pass(t, lameduck.EndpointsAllowance)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.EndpointsAllowance, ev.Elapsed, "the minimum is for when the cluster says nothing")
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
}

func TestArrivalsHoldTheDelayPastTheClustersWord(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h, s, _ := startWatching(t, api)
	h.clock.AwaitTimer(t, lameduck.EndpointsAllowance)
	h.clock.Advance(lameduck.EndpointsAllowance - 100*time.Millisecond)
	s.arrive() // something routes here still, whatever the slices say
	h.clock.Pass(t, adaptiveQuiet)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.EndpointsAllowance-100*time.Millisecond+adaptiveQuiet, ev.Elapsed)
	assert.Equal(t, lameduck.DelayQuiet, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
}

func TestASliceThatNeverChangesHoldsTheDelayToItsMaximum(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", readyEP, otherReadyEP))
	h, _, _ := startWatching(t, api)
	h.clock.Pass(t, adaptiveMax)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, adaptiveMax, ev.Elapsed)
	assert.Equal(t, lameduck.DelayMax, ev.Delay.Ended)
	assert.Zero(t, ev.Delay.Unrouted)
	require.NoError(t, h.wait(t))
}

func TestWithoutTheClustersWordTheMinimumHolds(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(api *kubetest.API) lameduck.Option
		log   []string
	}{
		{"forbidden", func(api *kubetest.API) lameduck.Option {
			api.Refuse(http.StatusForbidden)
			return kubernetesAPI(api)
		}, []string{"cannot watch the EndpointSlices; the adaptive drain delay falls back to its minimum", "403 Forbidden",
			"grant the pod's service account get, list and watch on endpointslices (apiGroup discovery.k8s.io)", `namespace \"shop\"`}},
		{"unauthorized", func(api *kubetest.API) lameduck.Option {
			api.Refuse(http.StatusUnauthorized)
			return kubernetesAPI(api)
		}, []string{"cannot watch the EndpointSlices", "401 Unauthorized", "service account token was refused"}},
		{"unreachable", func(api *kubetest.API) lameduck.Option {
			api.Close()
			return kubernetesAPI(api)
		}, []string{"cannot watch the EndpointSlices", "reaching the Kubernetes API at http://127.0.0.1"}},
		{"no slice lists the pod", func(api *kubetest.API) lameduck.Option {
			api.Set(endpointSlice("shop-xyz", "shop", otherReadyEP))
			return kubernetesAPI(api)
		}, []string{"no EndpointSlice lists the pod's address", "10.244.0.7", "set POD_IP from the downward API"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := kubetest.New(t)
			var log syncLog
			h, _ := startAdaptive(t, tt.setup(api), lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
			h.clock.Pass(t, adaptiveMin)
			ev := h.phases.await(t, lameduck.PhaseDraining)
			assert.Equal(t, adaptiveMin, ev.Elapsed)
			assert.Equal(t, lameduck.DelayMin, ev.Delay.Ended)
			require.NoError(t, h.wait(t))
			for _, part := range tt.log {
				assert.Contains(t, log.String(), part)
			}
			assert.Equal(t, 1, strings.Count(log.String(), "level=WARN"), "said once:\n%s", log.String())
		})
	}
}

func TestAFixedDelayAsksTheClusterNothing(t *testing.T) {
	api := kubetest.New(t, endpointSlice("web-abc", "web", terminatingEP))
	h := newHarness(t, kubernetesAPI(api), lameduck.WithDrainDelay(2*time.Second))
	h.ld.Register(newFakeServer("web", h.log))
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, 2*time.Second)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.DelayFixed, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
	n := api.Counts()
	assert.Zero(t, n.Lists+n.Watches)
}

// While the process serves, one request checks the API and opens the
// connection the watch will use; a refusal is said then, once, and the
// delay does not ask again.
func TestTheAPIIsCheckedWhileServing(t *testing.T) {
	t.Run("allowed", func(t *testing.T) {
		api := kubetest.New(t, endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
		h := newHarness(t, kubernetesAPI(api), lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax))
		h.ld.Register(newFakeServer("web", h.log))
		h.ld.MarkReady()
		h.start(t, context.Background())
		api.AwaitCheck(t)
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, lameduck.EndpointsAllowance)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
		assert.Equal(t, 1, api.Counts().Checks)
	})
	t.Run("forbidden", func(t *testing.T) {
		api := kubetest.New(t)
		api.Refuse(http.StatusForbidden)
		var log syncLog
		h := newHarness(t, kubernetesAPI(api), lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax),
			lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
		h.ld.Register(newFakeServer("web", h.log))
		h.ld.MarkReady()
		h.start(t, context.Background())
		api.AwaitCheck(t)
		require.Eventually(t, func() bool { return strings.Contains(log.String(), "403 Forbidden") }, waitTimeout, time.Millisecond,
			"the refusal is said while the process serves")
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, adaptiveMin)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DelayMin, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
		n := api.Counts()
		assert.Zero(t, n.Lists+n.Watches, "refused once, not asked again")
		assert.Equal(t, 1, strings.Count(log.String(), "level=WARN"))
	})
}
