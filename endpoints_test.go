package lameduck_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
)

// The pod's address in these tests, and another pod's.
var (
	podIP   = netip.MustParseAddr("10.244.0.7")
	otherIP = netip.MustParseAddr("10.244.0.8")
)

// allowance is how long the delay lasts once the slices stop routing to
// the pod, as endpoints.go sets it.
const allowance = 3 * time.Second

// ep is an endpoint of a fake EndpointSlice.
type ep struct {
	addr                        netip.Addr
	ready, serving, terminating bool
}

var (
	readyEP       = ep{addr: podIP, ready: true, serving: true}
	terminatingEP = ep{addr: podIP, terminating: true}
	otherReadyEP  = ep{addr: otherIP, ready: true, serving: true}
)

// endpointSlice is an EndpointSlice of service, as the API serves it.
func endpointSlice(name, service string, eps ...ep) map[string]any {
	var endpoints []map[string]any
	for _, e := range eps {
		endpoints = append(endpoints, map[string]any{
			"addresses":  []string{e.addr.String()},
			"conditions": map[string]bool{"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
		})
	}
	return map[string]any{
		"apiVersion":  "discovery.k8s.io/v1",
		"kind":        "EndpointSlice",
		"metadata":    map[string]any{"name": name, "labels": map[string]string{"kubernetes.io/service-name": service}},
		"addressType": "IPv4",
		"endpoints":   endpoints,
	}
}

// fakeAPI serves the EndpointSlices of namespace "shop" as the Kubernetes
// API does: a list, then watches that stream what the test pushes.
type fakeAPI struct {
	srv      *httptest.Server
	events   chan any      // a watch event, or dropWatch{} to end the watch
	watching chan struct{} // a value as each watch begins
	requests chan struct{} // a value as each check is answered

	mu       sync.Mutex
	slices   map[string]map[string]any
	rv       int
	status   int // non-zero: every request is answered with it
	checks   int // lists of one item, as the Coordinator's check while it serves
	lists    int
	watches  int
	badToken bool
}

// dropWatch, pushed, ends the watch in progress, as an API server does now
// and then.
type dropWatch struct{}

func newFakeAPI(t *testing.T, slices ...map[string]any) *fakeAPI {
	t.Helper()
	api := &fakeAPI{events: make(chan any, 100), watching: make(chan struct{}, 100), requests: make(chan struct{}, 100), slices: make(map[string]map[string]any)}
	for _, s := range slices {
		api.slices[s["metadata"].(map[string]any)["name"].(string)] = s
	}
	api.srv = httptest.NewServer(http.HandlerFunc(api.serve))
	t.Cleanup(api.srv.Close)
	return api
}

func (api *fakeAPI) option() lameduck.Option {
	return lameduck.WithKubernetesAPI(api.srv.URL, api.srv.Client(), "shop", podIP)
}

func (api *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	api.mu.Lock()
	status := api.status
	if r.URL.Query().Get("limit") != "" {
		api.checks++
		defer func() { api.requests <- struct{}{} }()
	}
	api.badToken = api.badToken || r.Header.Get("Authorization") != "Bearer the-token"
	api.mu.Unlock()
	if r.URL.Path != "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices" {
		http.NotFound(w, r)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "code": status, "message": `endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:shop:default" cannot list resource "endpointslices"`})
		return
	}
	if r.URL.Query().Get("watch") == "" {
		api.list(w, r.URL.Query().Get("limit") != "")
		return
	}
	api.mu.Lock()
	api.watches++
	api.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	api.watching <- struct{}{}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-api.events:
			if _, ok := ev.(dropWatch); ok {
				return
			}
			enc.Encode(ev)
			w.(http.Flusher).Flush()
		}
	}
}

func (api *fakeAPI) list(w http.ResponseWriter, check bool) {
	api.mu.Lock()
	defer api.mu.Unlock()
	if !check {
		api.lists++
	}
	items := make([]map[string]any, 0, len(api.slices))
	for _, s := range api.slices {
		items = append(items, s)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"kind": "EndpointSliceList", "metadata": map[string]any{"resourceVersion": fmt.Sprint(api.rv)}, "items": items,
	})
}

// push changes a slice and streams the change to the watch.
func (api *fakeAPI) push(typ string, s map[string]any) {
	api.mu.Lock()
	api.rv++
	s["metadata"].(map[string]any)["resourceVersion"] = fmt.Sprint(api.rv)
	name := s["metadata"].(map[string]any)["name"].(string)
	if typ == "DELETED" {
		delete(api.slices, name)
	} else {
		api.slices[name] = s
	}
	api.mu.Unlock()
	api.events <- map[string]any{"type": typ, "object": s}
}

// awaitWatch waits until a watch has begun, and so the list before it
// has been read.
func (api *fakeAPI) awaitWatch(t *testing.T) {
	t.Helper()
	select {
	case <-api.watching:
	case <-time.After(waitTimeout):
		t.Fatal("the Coordinator never watched the EndpointSlices")
	}
}

func (api *fakeAPI) counts() (lists, watches int) {
	api.mu.Lock()
	defer api.mu.Unlock()
	return api.lists, api.watches
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
func startWatching(t *testing.T, api *fakeAPI) (*harness, *fakeServer, *syncLog) {
	t.Helper()
	var log syncLog
	h, s := startAdaptive(t, api.option(), lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	return h, s, &log
}

func TestDelayEndsOnceTheEndpointSlicesStopRouting(t *testing.T) {
	api := newFakeAPI(t, endpointSlice("web-abc", "web", readyEP, otherReadyEP))
	h, _, log := startWatching(t, api)
	api.awaitWatch(t)
	h.clock.AwaitTimer(t, adaptiveMax) // routed here: the cluster's word is awaited
	h.clock.Advance(2 * adaptiveMin)
	stillDelaying(t, h, "the slices still route to the pod, past the minimum")

	api.push("MODIFIED", endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h.clock.AwaitTimer(t, allowance)
	h.clock.Advance(allowance - time.Millisecond)
	stillDelaying(t, h, "kube-proxy is given its allowance")
	h.clock.Advance(time.Millisecond)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 2*adaptiveMin+allowance, ev.Elapsed)
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	assert.Equal(t, 2*adaptiveMin, ev.Delay.Unrouted, "seen unrouted 2s after the signal")
	require.NoError(t, h.wait(t))
	assert.Contains(t, log.String(), "drain_delay_ended=endpoints")
	assert.Contains(t, log.String(), "endpoints_unrouted=2s")
	assert.False(t, api.badToken, "every request carries the service account's token")
}

func TestDelayEndsOnTheClustersWordBeforeTheMinimum(t *testing.T) {
	// Removed from the slice before the signal reached the process, as
	// happens when the endpoint controller is quick.
	api := newFakeAPI(t, endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h, _, _ := startWatching(t, api)
	h.clock.Pass(t, allowance)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, allowance, ev.Elapsed, "the minimum is for when the cluster says nothing")
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
}

func TestArrivalsHoldTheDelayPastTheClustersWord(t *testing.T) {
	api := newFakeAPI(t, endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h, s, _ := startWatching(t, api)
	h.clock.AwaitTimer(t, allowance)
	h.clock.Advance(allowance - 100*time.Millisecond)
	s.arrive() // something routes here still, whatever the slices say
	h.clock.Pass(t, adaptiveQuiet)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, allowance-100*time.Millisecond+adaptiveQuiet, ev.Elapsed)
	assert.Equal(t, lameduck.DelayQuiet, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
}

func TestASliceThatNeverChangesHoldsTheDelayToItsMaximum(t *testing.T) {
	api := newFakeAPI(t, endpointSlice("web-abc", "web", readyEP, otherReadyEP))
	h, _, _ := startWatching(t, api)
	h.clock.Pass(t, adaptiveMax)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, adaptiveMax, ev.Elapsed)
	assert.Equal(t, lameduck.DelayMax, ev.Delay.Ended)
	assert.Zero(t, ev.Delay.Unrouted)
	require.NoError(t, h.wait(t))
}

func TestADroppedWatchIsResumed(t *testing.T) {
	api := newFakeAPI(t, endpointSlice("web-abc", "web", readyEP, otherReadyEP))
	h, _, _ := startWatching(t, api)
	api.awaitWatch(t)
	api.events <- dropWatch{}
	api.awaitWatch(t)
	api.push("MODIFIED", endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
	h.clock.Pass(t, allowance)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
	lists, watches := api.counts()
	assert.Equal(t, 1, lists, "resumed from the resource version, not listed again")
	assert.GreaterOrEqual(t, watches, 2)
}

func TestAnExpiredResourceVersionIsListedAgain(t *testing.T) {
	api := newFakeAPI(t, endpointSlice("web-abc", "web", readyEP, otherReadyEP))
	h, _, _ := startWatching(t, api)
	api.awaitWatch(t)
	// The change is missed, and the watch told its version is gone.
	api.mu.Lock()
	api.slices["web-abc"] = endpointSlice("web-abc", "web", terminatingEP, otherReadyEP)
	api.mu.Unlock()
	api.events <- map[string]any{"type": "ERROR", "object": map[string]any{"kind": "Status", "code": 410, "message": "too old resource version"}}
	h.clock.Pass(t, allowance)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
	lists, _ := api.counts()
	assert.Equal(t, 2, lists)
}

func TestWithoutTheClustersWordTheMinimumHolds(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(api *fakeAPI) lameduck.Option
		log   []string
	}{
		{"forbidden", func(api *fakeAPI) lameduck.Option {
			api.status = http.StatusForbidden
			return api.option()
		}, []string{"cannot watch the EndpointSlices; the adaptive drain delay falls back to its minimum", "403 Forbidden",
			"grant the pod's service account get, list and watch on endpointslices (apiGroup discovery.k8s.io)", `namespace \"shop\"`}},
		{"unauthorized", func(api *fakeAPI) lameduck.Option {
			api.status = http.StatusUnauthorized
			return api.option()
		}, []string{"cannot watch the EndpointSlices", "401 Unauthorized", "service account token was refused"}},
		{"unreachable", func(api *fakeAPI) lameduck.Option {
			api.srv.Close()
			return api.option()
		}, []string{"cannot watch the EndpointSlices", "reaching the Kubernetes API at http://127.0.0.1"}},
		{"no slice lists the pod", func(api *fakeAPI) lameduck.Option {
			api.slices["shop-xyz"] = endpointSlice("shop-xyz", "shop", otherReadyEP)
			return api.option()
		}, []string{"no EndpointSlice lists the pod's address", "10.244.0.7", "set POD_IP from the downward API"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
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
	api := newFakeAPI(t, endpointSlice("web-abc", "web", terminatingEP))
	h := newHarness(t, api.option(), lameduck.WithDrainDelay(2*time.Second))
	h.ld.Register(newFakeServer("web", h.log))
	h.ld.MarkReady()
	h.start(t, context.Background())
	h.signals <- syscall.SIGTERM
	h.clock.Pass(t, 2*time.Second)
	ev := h.phases.await(t, lameduck.PhaseDraining)
	assert.Equal(t, lameduck.DelayFixed, ev.Delay.Ended)
	require.NoError(t, h.wait(t))
	lists, watches := api.counts()
	assert.Zero(t, lists+watches)
}

// While the process serves, one request checks the API and opens the
// connection the watch will use; a refusal is said then, once, and the
// delay does not ask again.
func TestTheAPIIsCheckedWhileServing(t *testing.T) {
	t.Run("allowed", func(t *testing.T) {
		api := newFakeAPI(t, endpointSlice("web-abc", "web", terminatingEP, otherReadyEP))
		h := newHarness(t, api.option(), lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax))
		h.ld.Register(newFakeServer("web", h.log))
		h.ld.MarkReady()
		h.start(t, context.Background())
		await.Recv(t, api.requests, "the check of the API")
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, allowance)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DelayEndpoints, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
		assert.Equal(t, 1, api.checks)
	})
	t.Run("forbidden", func(t *testing.T) {
		api := newFakeAPI(t)
		api.status = http.StatusForbidden
		var log syncLog
		h := newHarness(t, api.option(), lameduck.WithAdaptiveDrainDelay(adaptiveMin, adaptiveQuiet, adaptiveMax),
			lameduck.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
		h.ld.Register(newFakeServer("web", h.log))
		h.ld.MarkReady()
		h.start(t, context.Background())
		await.Recv(t, api.requests, "the check of the API")
		require.Eventually(t, func() bool { return strings.Contains(log.String(), "403 Forbidden") }, waitTimeout, time.Millisecond,
			"the refusal is said while the process serves")
		h.signals <- syscall.SIGTERM
		h.clock.Pass(t, adaptiveMin)
		ev := h.phases.await(t, lameduck.PhaseDraining)
		assert.Equal(t, lameduck.DelayMin, ev.Delay.Ended)
		require.NoError(t, h.wait(t))
		lists, watches := api.counts()
		assert.Zero(t, lists+watches, "refused once, not asked again")
		assert.Equal(t, 1, strings.Count(log.String(), "level=WARN"))
	})
}
