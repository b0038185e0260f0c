package kube_test

import (
	"context"
	"net/http"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/kube"
	"github.com/lameduck/lameduck/internal/kube/kubetest"
)

// The pod's address in these tests, and another pod's.
var (
	podIP   = netip.MustParseAddr("10.244.0.7")
	otherIP = netip.MustParseAddr("10.244.0.8")
)

var (
	readyEP       = kubetest.Endpoint{Addr: podIP, Ready: true, Serving: true}
	terminatingEP = kubetest.Endpoint{Addr: podIP, Terminating: true}
	fallbackEP    = kubetest.Endpoint{Addr: podIP, Serving: true, Terminating: true}
	otherReadyEP  = kubetest.Endpoint{Addr: otherIP, Ready: true, Serving: true}
	startingEP    = kubetest.Endpoint{Addr: otherIP}
)

// watching is a Watch running in the background.
type watching struct {
	snapshots chan kube.Snapshot
	done      chan error
	cancel    context.CancelFunc
}

// startWatch runs c.Watch until the test ends.
func startWatch(t *testing.T, c *kube.Client) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{snapshots: make(chan kube.Snapshot, 100), done: make(chan error, 1), cancel: cancel}
	go func() { w.done <- c.Watch(ctx, func(s kube.Snapshot) { w.snapshots <- s }) }()
	t.Cleanup(func() {
		cancel()
		await.Recv(t, w.done, "Watch's return")
	})
	return w
}

func (w *watching) next(t *testing.T) kube.Snapshot {
	t.Helper()
	return await.Recv(t, w.snapshots, "a snapshot")
}

func TestWatchReportsWhatTheSlicesSay(t *testing.T) {
	api := kubetest.New(t, kubetest.Slice("web-abc", "web", readyEP, otherReadyEP))
	w := startWatch(t, api.Client(podIP))
	assert.Equal(t, kube.Snapshot{Listed: true, Routed: true}, w.next(t), "listed ready, and another ready")
	api.AwaitWatch(t)
	api.Push("MODIFIED", kubetest.Slice("web-abc", "web", terminatingEP, otherReadyEP))
	assert.Equal(t, kube.Snapshot{Listed: true}, w.next(t), "the slices stopped routing to the pod")
	api.Push("MODIFIED", kubetest.Slice("web-abc", "web", fallbackEP, startingEP))
	assert.Equal(t, kube.Snapshot{Listed: true, Routed: true, Alone: []string{"web"}, Replacing: true}, w.next(t),
		"the last endpoint, a replacement starting")
	api.Push("DELETED", kubetest.Slice("web-abc", "web"))
	assert.Equal(t, kube.Snapshot{Listed: true}, w.next(t), "a pod listed once and no longer was removed")
	api.Push("ADDED", kubetest.Slice("web-def", "web", otherReadyEP))
	assert.Equal(t, kube.Snapshot{Listed: true}, w.next(t))
	assert.False(t, api.BadToken(), "every request carries the service account's token")
}

func TestAPodNoSliceListsIsNotListed(t *testing.T) {
	api := kubetest.New(t, kubetest.Slice("shop-xyz", "shop", otherReadyEP))
	w := startWatch(t, api.Client(podIP))
	assert.Equal(t, kube.Snapshot{}, w.next(t))
}

func TestADroppedWatchIsResumed(t *testing.T) {
	api := kubetest.New(t, kubetest.Slice("web-abc", "web", readyEP, otherReadyEP))
	w := startWatch(t, api.Client(podIP))
	assert.True(t, w.next(t).Routed)
	api.AwaitWatch(t)
	api.Drop()
	api.AwaitWatch(t)
	api.Push("MODIFIED", kubetest.Slice("web-abc", "web", terminatingEP, otherReadyEP))
	assert.Equal(t, kube.Snapshot{Listed: true}, w.next(t), "the change after the drop is seen: the slices stopped routing")
	n := api.Counts()
	assert.Equal(t, 1, n.Lists, "resumed from the resource version, not listed again")
	assert.GreaterOrEqual(t, n.Watches, 2)
}

func TestAnExpiredResourceVersionIsListedAgain(t *testing.T) {
	api := kubetest.New(t, kubetest.Slice("web-abc", "web", readyEP, otherReadyEP))
	w := startWatch(t, api.Client(podIP))
	assert.True(t, w.next(t).Routed)
	api.AwaitWatch(t)
	// The change is missed, and the watch told its version is gone.
	api.Set(kubetest.Slice("web-abc", "web", terminatingEP, otherReadyEP))
	api.Expire()
	assert.Equal(t, kube.Snapshot{Listed: true}, w.next(t), "the list again sees the change")
	assert.Equal(t, 2, api.Counts().Lists)
}

// Watch and Check give up on an API that refuses the service account or
// cannot be reached, and say what to change.
func TestTheAPIRefusesOrIsUnreachable(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(api *kubetest.API)
		refused bool
		want    []string
	}{
		{"forbidden", func(api *kubetest.API) { api.Refuse(http.StatusForbidden) }, true, []string{"403 Forbidden",
			"grant the pod's service account get, list and watch on endpointslices (apiGroup discovery.k8s.io)", `namespace "shop"`}},
		{"unauthorized", func(api *kubetest.API) { api.Refuse(http.StatusUnauthorized) }, true,
			[]string{"401 Unauthorized", "service account token was refused"}},
		{"unreachable", func(api *kubetest.API) { api.Close() }, false, []string{"reaching the Kubernetes API at http://127.0.0.1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := kubetest.New(t)
			tt.setup(api)
			c := api.Client(podIP)
			err := c.Check(context.Background())
			require.Error(t, err)
			assert.Equal(t, tt.refused, kube.Refused(err))
			err = c.Watch(context.Background(), func(kube.Snapshot) { t.Error("a snapshot without an answer") })
			require.Error(t, err, "Watch gives up before its first snapshot")
			for _, part := range tt.want {
				assert.Contains(t, err.Error(), part)
			}
		})
	}
}
