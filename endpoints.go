package lameduck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lameduck/lameduck/internal/testhook"
)

// Evidence from the cluster, for the adaptive drain delay. In Kubernetes
// the control plane says when a pod stops receiving traffic: moments after
// the pod is deleted, the EndpointSlices that list its address mark it not
// ready (and terminating), and kube-proxy and ingress controllers act on
// that change. During the lame-duck phase the Coordinator watches the
// EndpointSlices of its namespace, through the Kubernetes API with the
// pod's service account, and takes the moment every slice that lists the
// pod's address stops routing to it, plus endpointsAllowance for
// kube-proxy to apply the change, as the evidence that routing has caught
// up. Only the standard library is needed: the API speaks JSON over HTTPS.

// endpointsAllowance is how long after the EndpointSlices stop routing to
// the pod the drain delay still lasts, for kube-proxy to rewrite its rules
// (and ingress controllers their upstreams) and for the connections the
// node still sends here once they are gone. kube-proxy applies a change at
// most once per --iptables-min-sync-period, 1 s by default, after its last
// sync: measured on a real node, the rule left 0.1-1.1 s after the slice
// changed. Yet connections still arrive after that, up to 3 s after the
// rule was gone: with pods that left 1.5 s after the change, gRPC clients
// that open a connection per call failed there, 1 to 6 in each run of
// 130,000 calls; with 3 s, 0 to 1.
const endpointsAllowance = 3 * time.Second

// kubeAPI is where the Kubernetes API is and who the pod is in it.
type kubeAPI struct {
	base      string       // such as https://10.96.0.1:443
	client    *http.Client // trusts the cluster's CA
	token     func() (string, error)
	namespace string
	addrs     []netip.Addr // the pod's addresses
}

// The service account's files, as the kubelet mounts them in every pod.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// apiTimeout bounds connecting to the API and waiting for its answer's
// header, so that an unreachable API server falls back in time.
const apiTimeout = 2 * time.Second

// inCluster returns the Kubernetes API of the pod's service account, or nil
// and no error outside Kubernetes (no KUBERNETES_SERVICE_HOST).
func inCluster() (*kubeAPI, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, nil
	}
	ns, err := os.ReadFile(filepath.Join(serviceAccountDir, "namespace"))
	if err != nil {
		return nil, fmt.Errorf("reading the pod's namespace: %w; mount the service account token (automountServiceAccountToken: true)", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's CA: %w; mount the service account token (automountServiceAccountToken: true)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s/ca.crt holds no PEM certificate", serviceAccountDir)
	}
	addrs, err := podAddrs()
	if err != nil {
		return nil, err
	}
	return &kubeAPI{
		base:      "https://" + net.JoinHostPort(host, port),
		client:    apiClient(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		namespace: strings.TrimSpace(string(ns)),
		addrs:     addrs,
		// Projected tokens are rotated: read the file for every request.
		token: func() (string, error) {
			b, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
			return strings.TrimSpace(string(b)), err
		},
	}, nil
}

// apiClient is the HTTP client of the watch: quick to give up on an API
// server that does not answer, never on a watch that streams.
func apiClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:       tlsConfig,
		DialContext:           (&net.Dialer{Timeout: apiTimeout}).DialContext,
		TLSHandshakeTimeout:   apiTimeout,
		ResponseHeaderTimeout: apiTimeout,
		ForceAttemptHTTP2:     true,
	}}
}

// podAddrs returns the pod's addresses: POD_IP (and POD_IPS, for dual
// stack) when the downward API sets them, or else every address of the
// pod's interfaces but loopback.
func podAddrs() ([]netip.Addr, error) {
	var addrs []netip.Addr
	for _, env := range []string{"POD_IP", "POD_IPS"} {
		for _, s := range strings.Split(os.Getenv(env), ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%s is %q, not an IP address; set it from the downward API (fieldRef: status.podIP)", env, s)
			}
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("finding the pod's address: %w; set POD_IP from the downward API (fieldRef: status.podIP)", err)
	}
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			addrs = append(addrs, p.Addr().Unmap())
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("the pod has no address but loopback; set POD_IP from the downward API (fieldRef: status.podIP)")
	}
	return addrs, nil
}

// routing is what the EndpointSlices say of the pod.
type routing int

const (
	routingUnknown routing = iota // the first answer has not come
	routingHere                   // a slice routes to the pod
	routingGone                   // every slice that listed the pod has stopped routing to it
	routingNone                   // no evidence: the watch failed, or no slice lists the pod
)

// endpointsWatch follows the EndpointSlices of the pod's namespace for
// the drain delay.
type endpointsWatch struct {
	api   *kubeAPI
	clock testhook.Clock
	log   *slog.Logger
	wake  chan struct{} // set by start

	// While the process serves, one request checks that the API answers
	// and opens the connection the watch will use: the watch then starts
	// at the signal without a TLS handshake, and a refusal is said at
	// start-up. warmed is closed once it is over; refused is set if the
	// API refused for good (401, 403). Guarded by mu.
	warmed    chan struct{}
	refused   bool
	stopWarm  context.CancelFunc
	warmGroup sync.WaitGroup

	slices map[string]slice // by name; only the watch goroutine uses it
	listed bool             // a slice has listed the pod since the watch began

	mu    sync.Mutex
	state routing
	since time.Time // when state became routingGone
	// last is what the slices say of the pod as the last endpoint of its
	// Services, and alone names the Services that have no other ready
	// endpoint. Guarded by mu.
	last  lastness
	alone []string
}

// slice is what the watch keeps of an EndpointSlice.
type slice struct {
	service   string // the Service it belongs to, or "" for none
	endpoints []endpoint
}

type endpoint struct {
	mine                        bool // lists one of the pod's addresses
	ready, serving, terminating bool
}

// read returns what the slices say, and since when they have stopped
// routing to the pod.
func (w *endpointsWatch) read() (routing, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.since
}

func (w *endpointsWatch) set(r routing) {
	w.mu.Lock()
	changed := w.state != r
	if changed && r == routingGone {
		w.since = w.clock.Now()
	}
	w.state = r
	w.mu.Unlock()
	if changed {
		poke(w.wake)
	}
}

// lastEndpoint returns what the slices say of the pod as the last
// endpoint of its Services, and the Services that have no other ready
// endpoint.
func (w *endpointsWatch) lastEndpoint() (lastness, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.alone
}

func (w *endpointsWatch) setLast(l lastness, alone []string) {
	w.mu.Lock()
	changed := w.last != l
	w.last, w.alone = l, alone
	w.mu.Unlock()
	if changed {
		poke(w.wake)
	}
}

// fail gives up on the evidence from the cluster, saying why, once.
func (w *endpointsWatch) fail(err error) {
	w.log.Warn("lameduck: cannot watch the EndpointSlices; the adaptive drain delay falls back to its minimum",
		slog.Any("error", err))
	w.setLast(lastNot, nil)
	w.set(routingNone)
}

// prepareEndpoints returns the watch of an adaptive drain delay in
// Kubernetes, and starts checking the API, or nil without an adaptive
// delay or outside Kubernetes. A configuration that cannot work, such as a
// pod without its service account, is logged now. Call close when Run
// returns.
func prepareEndpoints(c *Coordinator) *endpointsWatch {
	cfg := c.opts.delay
	if !cfg.adaptive || cfg.max == 0 {
		return nil
	}
	api, err := cfg.kube, error(nil)
	if api == nil {
		api, err = inCluster()
	}
	if api == nil && err == nil {
		return nil
	}
	w := &endpointsWatch{api: api, clock: c.clock, log: c.log, warmed: make(chan struct{}), stopWarm: func() {}}
	if err != nil {
		w.fail(err)
		w.refused = true
		close(w.warmed)
		return w
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stopWarm = cancel
	w.warmGroup.Add(1)
	go func() {
		defer w.warmGroup.Done()
		defer close(w.warmed)
		resp, err := w.get(ctx, w.url(url.Values{"limit": {"1"}}))
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) //nolint:errcheck // the connection is kept if the body was read
			resp.Body.Close()
			return
		}
		var se *statusError
		if errors.As(err, &se) && (se.code == http.StatusForbidden || se.code == http.StatusUnauthorized) {
			w.fail(err)
			w.mu.Lock()
			w.refused = true
			w.mu.Unlock()
		}
		// Otherwise the watch tries again at the signal, and says why if
		// it fails then.
	}()
	return w
}

// attrs describe the watch for the serving line: how long after the
// signal the hold as the last endpoint and the delay may last together,
// which is how long a replacement may take to be ready for no connection
// to fail. A nil w, none.
func (w *endpointsWatch) attrs(c *Coordinator) []slog.Attr {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	refused := w.refused
	w.mu.Unlock()
	if refused {
		return nil
	}
	return []slog.Attr{slog.Duration("last_endpoint_reach", c.opts.lastEndpointReach())}
}

// start readies the watch to run, poking wake on every change, and reports
// whether it should: not if the API refused it while the process served.
// A check still in progress is abandoned: the watch asks anew.
func (w *endpointsWatch) start(wake chan struct{}) bool {
	w.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wake = wake
	if w.refused {
		w.state, w.last = routingNone, lastNot
		return false
	}
	return true
}

// close ends the check of the API, if it still runs. A nil w is none.
func (w *endpointsWatch) close() {
	if w == nil {
		return
	}
	w.stopWarm()
	w.warmGroup.Wait()
}

// How often a dropped watch is resumed before the watch gives up.
const (
	watchRetries = 5
	watchBackoff = 100 * time.Millisecond
)

// run watches until ctx ends.
func (w *endpointsWatch) run(ctx context.Context) {
	w.slices = make(map[string]slice)
	failures := 0
	rv := ""
	for ctx.Err() == nil {
		var err error
		if rv == "" {
			rv, err = w.list(ctx)
		} else {
			rv, err = w.watch(ctx, rv)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			failures = 0
			continue
		case errors.Is(err, errGone):
			rv = "" // the resource version is too old: list again
			continue
		}
		var se *statusError
		if state, _ := w.read(); state == routingUnknown || errors.As(err, &se) || failures == watchRetries {
			// Forbidden, unauthorized, unreachable: no evidence to
			// wait for. A dropped watch is resumed a few times.
			w.fail(err)
			return
		}
		failures++
		t := time.NewTimer(watchBackoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// errGone is the API's answer to a watch from a resource version it no
// longer has.
var errGone = errors.New("resource version gone")

// statusError is an answer of the API other than success.
type statusError struct {
	code int
	msg  string
	ns   string
}

func (e *statusError) Error() string {
	what := fmt.Sprintf("the Kubernetes API answered %d %s", e.code, http.StatusText(e.code))
	if e.msg != "" {
		what += ": " + e.msg
	}
	switch e.code {
	case http.StatusForbidden:
		what += fmt.Sprintf("; grant the pod's service account get, list and watch on endpointslices (apiGroup discovery.k8s.io) in namespace %q with a Role and a RoleBinding, as examples/kubernetes does", e.ns)
	case http.StatusUnauthorized:
		what += "; the service account token was refused: mount a current one (automountServiceAccountToken: true)"
	}
	return what
}

func (w *endpointsWatch) url(query url.Values) string {
	return w.api.base + "/apis/discovery.k8s.io/v1/namespaces/" + url.PathEscape(w.api.namespace) + "/endpointslices?" + query.Encode()
}

func (w *endpointsWatch) get(ctx context.Context, u string) (*http.Response, error) {
	token, err := w.api.token()
	if err != nil {
		return nil, fmt.Errorf("reading the service account token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := w.api.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the Kubernetes API at %s: %w", w.api.base, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var st apiStatus
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st) //nolint:errcheck // the code says enough without it
	if resp.StatusCode == http.StatusGone {
		return nil, errGone
	}
	return nil, &statusError{code: resp.StatusCode, msg: st.Message, ns: w.api.namespace}
}

// list reads every slice, and returns the resource version to watch from.
func (w *endpointsWatch) list(ctx context.Context) (string, error) {
	resp, err := w.get(ctx, w.url(url.Values{}))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []endpointSlice `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return "", fmt.Errorf("reading the EndpointSlices: %w", err)
	}
	clear(w.slices)
	for _, s := range list.Items {
		w.slices[s.Metadata.Name] = w.parse(s)
	}
	w.update()
	return list.Metadata.ResourceVersion, nil
}

// watch follows the changes after resource version rv until the API ends
// the watch, and returns the last version seen.
func (w *endpointsWatch) watch(ctx context.Context, rv string) (string, error) {
	resp, err := w.get(ctx, w.url(url.Values{"watch": {"1"}, "resourceVersion": {rv}, "allowWatchBookmarks": {"true"}}))
	if err != nil {
		return rv, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() == nil {
				return rv, nil // the API ends watches now and then: resume
			}
			return rv, fmt.Errorf("watching the EndpointSlices: %w", err)
		}
		if ev.Type == "ERROR" {
			var st apiStatus
			json.Unmarshal(ev.Object, &st) //nolint:errcheck // the code says enough without it
			if st.Code == http.StatusGone {
				return rv, errGone
			}
			return rv, &statusError{code: st.Code, msg: st.Message, ns: w.api.namespace}
		}
		var s endpointSlice
		if err := json.Unmarshal(ev.Object, &s); err != nil {
			return rv, fmt.Errorf("reading an EndpointSlice: %w", err)
		}
		if s.Metadata.ResourceVersion != "" {
			rv = s.Metadata.ResourceVersion
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			w.slices[s.Metadata.Name] = w.parse(s)
		case "DELETED":
			delete(w.slices, s.Metadata.Name)
		default: // BOOKMARK: only the resource version
			continue
		}
		w.update()
	}
}

// apiStatus is the API's account of a failure.
type apiStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// endpointSlice is the part of a discovery.k8s.io/v1 EndpointSlice the
// watch reads.
type endpointSlice struct {
	Metadata struct {
		Name            string            `json:"name"`
		ResourceVersion string            `json:"resourceVersion"`
		Labels          map[string]string `json:"labels"`
	} `json:"metadata"`
	Endpoints []struct {
		Addresses  []string `json:"addresses"`
		Conditions struct {
			Ready       *bool `json:"ready"`
			Serving     *bool `json:"serving"`
			Terminating *bool `json:"terminating"`
		} `json:"conditions"`
	} `json:"endpoints"`
}

func (w *endpointsWatch) parse(s endpointSlice) slice {
	sl := slice{service: s.Metadata.Labels["kubernetes.io/service-name"]}
	if sl.service == "" {
		sl.service = "slice " + s.Metadata.Name
	}
	for _, e := range s.Endpoints {
		c := e.Conditions
		// As the API defines them: ready unset means ready, serving
		// unset means as ready, terminating unset means not.
		ready := c.Ready == nil || *c.Ready
		ep := endpoint{ready: ready, serving: ready, terminating: c.Terminating != nil && *c.Terminating}
		if c.Serving != nil {
			ep.serving = *c.Serving
		}
		for _, a := range e.Addresses {
			if addr, err := netip.ParseAddr(a); err == nil && w.isMine(addr.Unmap()) {
				ep.mine = true
			}
		}
		sl.endpoints = append(sl.endpoints, ep)
	}
	return sl
}

func (w *endpointsWatch) isMine(a netip.Addr) bool {
	for _, m := range w.api.addrs {
		if a == m {
			return true
		}
	}
	return false
}

// update works out what the slices say of the pod.
func (w *endpointsWatch) update() {
	alone, replacing := lastOf(w.slices)
	switch {
	case len(alone) == 0:
		w.setLast(lastNot, nil)
	case replacing:
		w.setLast(lastReplacing, alone)
	default:
		w.setLast(lastAlone, alone)
	}
	listed, routed := route(w.slices)
	w.listed = w.listed || listed
	switch {
	case routed:
		w.set(routingHere)
	case w.listed:
		// Not ready anywhere, or gone from the slices that listed it.
		w.set(routingGone)
	default:
		// No slice lists the pod: no Service routes to it, or its
		// address is not the one the slices know.
		if state, _ := w.read(); state == routingUnknown {
			w.log.Warn("lameduck: no EndpointSlice lists the pod's address; the adaptive drain delay falls back to its minimum",
				slog.String("namespace", w.api.namespace), slog.Any("addresses", w.api.addrs),
				slog.String("fix", "if a Service selects this pod, set POD_IP from the downward API (fieldRef: status.podIP)"))
		}
		w.set(routingNone)
	}
}

// route reports whether any of slices lists the pod, and whether any
// routes to it. A Service routes to the pod while its endpoint is ready,
// or, as kube-proxy falls back to when the Service has no ready endpoint
// left, serving and terminating.
func route(slices map[string]slice) (listed, routed bool) {
	type service struct{ anyReady, mineReady, mineFallback, listed bool }
	services := make(map[string]*service)
	for _, s := range slices {
		sv := services[s.service]
		if sv == nil {
			sv = new(service)
			services[s.service] = sv
		}
		for _, e := range s.endpoints {
			sv.anyReady = sv.anyReady || e.ready
			if e.mine {
				sv.listed = true
				sv.mineReady = sv.mineReady || e.ready
				sv.mineFallback = sv.mineFallback || (e.serving && e.terminating)
			}
		}
	}
	for _, sv := range services {
		listed = listed || sv.listed
		routed = routed || sv.mineReady || (sv.mineFallback && !sv.anyReady)
	}
	return listed, routed
}

// lastness is what the EndpointSlices say of the pod as the last endpoint
// of its Services. Since Kubernetes 1.26 (KEP-1669,
// ProxyTerminatingEndpoints, GA in 1.28) kube-proxy routes a Service's
// connections to its ready endpoints, and, only when it has none, to the
// endpoints that are terminating but still serving, which is what their
// readiness probe says. A terminating pod that is the last endpoint of a
// Service and turns its readiness off leaves the Service with no endpoint:
// kube-proxy then rejects every new connection until a replacement is
// ready.
type lastness int

const (
	lastUnknown   lastness = iota // the first answer has not come
	lastNot                       // every Service that lists the pod has another ready endpoint, or there is no evidence
	lastReplacing                 // a Service that lists the pod has no other ready endpoint, and another is starting
	lastAlone                     // a Service that lists the pod has no other ready endpoint, and none is starting
)

// lastOf returns the Services that list the pod and have no other ready
// endpoint, sorted, and whether each of them has another endpoint that is
// starting: not ready and not terminating, as a replacement is from the
// moment it has an address until its readiness probe passes.
func lastOf(all map[string]slice) (alone []string, replacing bool) {
	type service struct{ listed, otherReady, otherStarting bool }
	services := make(map[string]*service)
	for _, s := range all {
		sv := services[s.service]
		if sv == nil {
			sv = new(service)
			services[s.service] = sv
		}
		for _, e := range s.endpoints {
			switch {
			case e.mine:
				sv.listed = true
			case e.ready:
				sv.otherReady = true
			case !e.terminating:
				sv.otherStarting = true
			}
		}
	}
	replacing = true
	for name, sv := range services {
		if sv.listed && !sv.otherReady {
			alone = append(alone, name)
			replacing = replacing && sv.otherStarting
		}
	}
	slices.Sort(alone)
	return alone, replacing && len(alone) > 0
}
