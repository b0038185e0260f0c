// Package kubetest serves a fake Kubernetes API for tests: the
// EndpointSlices of namespace [Namespace], listed and watched as the API
// does, changed by the test as it goes.
package kubetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"

	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/kube"
)

// The namespace the fake API serves, and the token it expects.
const (
	Namespace = "shop"
	Token     = "the-token"
)

// An Endpoint is an endpoint of a fake EndpointSlice.
type Endpoint struct {
	Addr                        netip.Addr
	Ready, Serving, Terminating bool
}

// Slice returns an EndpointSlice of service, as the API serves it.
func Slice(name, service string, eps ...Endpoint) map[string]any {
	var endpoints []map[string]any
	for _, e := range eps {
		endpoints = append(endpoints, map[string]any{
			"addresses":  []string{e.Addr.String()},
			"conditions": map[string]bool{"ready": e.Ready, "serving": e.Serving, "terminating": e.Terminating},
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

// An API serves the EndpointSlices of [Namespace] as the Kubernetes API
// does: a list, then watches that stream what the test pushes.
type API struct {
	srv      *httptest.Server
	events   chan any      // a watch event, or dropWatch{} to end the watch
	watching chan struct{} // a value as each watch begins
	checked  chan struct{} // a value as each check is answered

	mu       sync.Mutex
	slices   map[string]map[string]any
	rv       int
	status   int // non-zero: every request is answered with it
	counts   Counts
	badToken bool
}

// Counts are the requests an API has answered.
type Counts struct {
	Checks  int // lists of one item, as a client's Check
	Lists   int
	Watches int
}

// dropWatch, pushed, ends the watch in progress.
type dropWatch struct{}

// New starts an API that serves slices, and closes it when tb ends.
func New(tb testing.TB, slices ...map[string]any) *API {
	tb.Helper()
	api := &API{events: make(chan any, 100), watching: make(chan struct{}, 100), checked: make(chan struct{}, 100),
		slices: make(map[string]map[string]any)}
	for _, s := range slices {
		api.slices[name(s)] = s
	}
	api.srv = httptest.NewServer(http.HandlerFunc(api.serve))
	// Watches still open, as when a failed test left its Coordinator
	// running, would hold Close forever: they are ended first.
	tb.Cleanup(func() {
		api.srv.CloseClientConnections()
		api.srv.Close()
	})
	return api
}

// Client returns a client of the API, as a pod with addrs.
func (api *API) Client(addrs ...netip.Addr) *kube.Client {
	return &kube.Client{Base: api.URL(), HTTP: api.srv.Client(), Namespace: Namespace, Addrs: addrs,
		Token: func() (string, error) { return Token, nil }}
}

// URL is the API's base URL.
func (api *API) URL() string { return api.srv.URL }

// Refuse makes the API answer every request with status, as an API
// server that refuses the service account does.
func (api *API) Refuse(status int) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.status = status
}

// Close stops the API: it becomes unreachable.
func (api *API) Close() { api.srv.Close() }

// Set changes a slice without telling the watch, as a change the watch
// missed.
func (api *API) Set(s map[string]any) {
	api.mu.Lock()
	defer api.mu.Unlock()
	api.slices[name(s)] = s
}

// Push changes a slice (typ is ADDED, MODIFIED or DELETED) and streams the
// change to the watch.
func (api *API) Push(typ string, s map[string]any) {
	api.mu.Lock()
	api.rv++
	s["metadata"].(map[string]any)["resourceVersion"] = fmt.Sprint(api.rv)
	if typ == "DELETED" {
		delete(api.slices, name(s))
	} else {
		api.slices[name(s)] = s
	}
	api.mu.Unlock()
	api.events <- map[string]any{"type": typ, "object": s}
}

// Drop ends the watch in progress, as an API server does now and then.
func (api *API) Drop() { api.events <- dropWatch{} }

// Expire tells the watch in progress that its resource version is gone
// (410), as an API server does to a watch that fell behind.
func (api *API) Expire() {
	api.events <- map[string]any{"type": "ERROR", "object": map[string]any{"kind": "Status", "code": 410, "message": "too old resource version"}}
}

// AwaitWatch waits until a watch has begun, and so the list before it
// has been read.
func (api *API) AwaitWatch(tb testing.TB) {
	tb.Helper()
	await.Recv(tb, api.watching, "a watch of the EndpointSlices")
}

// AwaitCheck waits until a check has been answered.
func (api *API) AwaitCheck(tb testing.TB) {
	tb.Helper()
	await.Recv(tb, api.checked, "the check of the API")
}

// Counts returns the requests answered so far.
func (api *API) Counts() Counts {
	api.mu.Lock()
	defer api.mu.Unlock()
	return api.counts
}

// BadToken reports whether a request came without the bearer [Token].
func (api *API) BadToken() bool {
	api.mu.Lock()
	defer api.mu.Unlock()
	return api.badToken
}

func name(s map[string]any) string { return s["metadata"].(map[string]any)["name"].(string) }

func (api *API) serve(w http.ResponseWriter, r *http.Request) {
	api.mu.Lock()
	status := api.status
	if r.URL.Query().Get("limit") != "" {
		api.counts.Checks++
		defer func() { api.checked <- struct{}{} }()
	}
	api.badToken = api.badToken || r.Header.Get("Authorization") != "Bearer "+Token
	api.mu.Unlock()
	if r.URL.Path != "/apis/discovery.k8s.io/v1/namespaces/"+Namespace+"/endpointslices" {
		http.NotFound(w, r)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "code": status, //nolint:errcheck // the client sees a cut answer
			"message": `endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:shop:default" cannot list resource "endpointslices"`})
		return
	}
	if r.URL.Query().Get("watch") == "" {
		api.list(w, r.URL.Query().Get("limit") != "")
		return
	}
	api.mu.Lock()
	api.counts.Watches++
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
			enc.Encode(ev) //nolint:errcheck // the client sees a cut stream
			w.(http.Flusher).Flush()
		}
	}
}

func (api *API) list(w http.ResponseWriter, check bool) {
	api.mu.Lock()
	defer api.mu.Unlock()
	if !check {
		api.counts.Lists++
	}
	items := make([]map[string]any, 0, len(api.slices))
	for _, s := range api.slices {
		items = append(items, s)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{ //nolint:errcheck // the client sees a cut answer
		"kind": "EndpointSliceList", "metadata": map[string]any{"resourceVersion": fmt.Sprint(api.rv)}, "items": items,
	})
}
