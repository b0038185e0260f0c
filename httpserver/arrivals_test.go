package httpserver_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
)

// get makes one request with client and reads the response.
func get(t *testing.T, client *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	return resp
}

// What counts as an arrival: a connection accepted during the drain delay,
// whatever its protocol; not one opened before the signal.
func TestConnectionsAcceptedDuringTheDelayAreArrivals(t *testing.T) {
	p := start(t, config{delay: 5 * time.Second, handler: okHandler, ready: true})
	url := "http://" + p.addr + "/"
	before := dialRaw(t, p.addr)
	_, _, err := before.get("/")
	require.NoError(t, err)
	p.sigterm(t)

	resp, _, err := before.get("/")
	require.NoError(t, err, "a keep-alive connection from before the signal is served")
	assert.True(t, resp.Close, "and asked to leave")
	assert.True(t, before.closedByPeer())

	h1 := &http.Client{Transport: &http.Transport{}, Timeout: waitTimeout}
	defer h1.CloseIdleConnections()
	resp = get(t, h1, url)
	assert.True(t, resp.Close, "a connection opened during the delay is asked to leave after its first response")
	h2c := h2cClient()
	defer h2c.CloseIdleConnections()
	get(t, h2c, url)

	p.clock.Advance(time.Second)
	raw := dialRaw(t, p.addr)
	_, _, err = raw.get("/")
	require.NoError(t, err)
	assert.True(t, raw.closedByPeer())

	p.clock.Advance(4 * time.Second)
	ev := p.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 3, ev.Delay.Arrivals, "HTTP/1.1, h2c and a raw HTTP/1.1 connection arrived during the delay")
	assert.Equal(t, time.Second, ev.Delay.LastArrival)
	assert.Equal(t, p.srv.String(), ev.Delay.LastArrivalServer)
	require.NoError(t, p.wait(t))
}

// With the adaptive delay on a real clock, a burst of new connections
// holds the delay, and it ends once they are gone and the quiet period has
// passed, long before the maximum.
func TestAdaptiveDelayEndsOnceTheArrivalsStop(t *testing.T) {
	// A quiet period far longer than a loopback request, even on a
	// loaded machine.
	const quiet, maximum = time.Second, 20 * time.Second
	signals := make(chan os.Signal, 1)
	events := make(chan lameduck.Event, 16)
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithSignalChannel(signals), lameduck.WithLogger(discard),
		lameduck.WithGracePeriod(gracePeriod), lameduck.WithAdaptiveDrainDelay(0, quiet, maximum))
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) { events <- e })
	srv := httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: okHandler, ErrorLog: log.New(io.Discard, "", 0)})
	ld.Register(srv)
	ld.MarkReady()
	done := make(chan error, 1)
	go func() { done <- ld.Run(context.Background()) }()
	awaitPhase := func(phase lameduck.Phase) lameduck.Event {
		t.Helper()
		for {
			select {
			case e := <-events:
				if e.Phase == phase {
					return e
				}
			case <-time.After(waitTimeout):
				t.Fatalf("phase %v never entered", phase)
			}
		}
	}
	awaitPhase(lameduck.PhaseServing)
	signalled := time.Now() // before Run sees it: LastArrival counts from later
	signals <- os.Interrupt
	awaitPhase(lameduck.PhaseLameDuck)

	client := &http.Client{Transport: &http.Transport{}, Timeout: waitTimeout}
	defer client.CloseIdleConnections()
	const requests = 20
	for range requests {
		// Each response asks its connection to leave: each request is a
		// new connection, as through a load balancer still routing here.
		resp := get(t, client, "http://"+srv.Addr().String()+"/")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		select {
		case <-ld.Entered(lameduck.PhaseDraining):
			t.Fatal("the delay ended while connections kept arriving")
		default:
		}
	}
	lastRequest := time.Since(signalled)
	ev := awaitPhase(lameduck.PhaseDraining)
	assert.Equal(t, requests, ev.Delay.Arrivals)
	assert.GreaterOrEqual(t, ev.Elapsed, quiet, "the quiet period passed")
	assert.LessOrEqual(t, ev.Delay.LastArrival, lastRequest, "the last arrival is the last request's connection")
	assert.Less(t, ev.Elapsed, maximum/2, "over long before the maximum")
	require.NoError(t, await.Recv(t, done, "Run to return"))
}

// Probes say nothing about routing: a connection that carries only probe
// requests, to the Coordinator's handlers or from the kubelet, is no
// arrival; one whose later request is not a probe is, from that request.
func TestProbesAreNotArrivals(t *testing.T) {
	p := start(t, config{delay: 5 * time.Second, handler: okHandler, ready: true})
	base := "http://" + p.addr
	p.sigterm(t)
	p.clock.AwaitTimer(t, 5*time.Second)

	h1 := &http.Client{Transport: &http.Transport{}, Timeout: waitTimeout}
	defer h1.CloseIdleConnections()
	for range 3 {
		resp := get(t, h1, base+"/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.True(t, resp.Close, "a probe's connection is asked to leave like any other")
	}
	req, err := http.NewRequest(http.MethodGet, base+"/", nil)
	require.NoError(t, err)
	req.Header.Set("User-Agent", "kube-probe/1.31")
	resp, err := h1.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	p.clock.Advance(time.Second)
	h2c := h2cClient()
	defer h2c.CloseIdleConnections()
	get(t, h2c, base+"/readyz")
	p.clock.Advance(time.Second)
	get(t, h2c, base+"/") // on the same connection, if the GOAWAY has not closed it yet

	p.clock.Advance(3 * time.Second)
	ev := p.await(t, lameduck.PhaseDraining)
	assert.Equal(t, 1, ev.Delay.Arrivals, "only the h2c connection carried a request that is not a probe")
	assert.Equal(t, 2*time.Second, ev.Delay.LastArrival, "counted from that request, not from its connection")
	require.NoError(t, p.wait(t))
}
