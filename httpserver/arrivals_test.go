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
	assert.Equal(t, 3, ev.Arrivals, "HTTP/1.1, h2c and a raw HTTP/1.1 connection arrived during the delay")
	assert.Equal(t, time.Second, ev.LastArrival)
	assert.Equal(t, p.srv.String(), ev.LastArrivalServer)
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
		lameduck.WithGracePeriod(gracePeriod), lameduck.WithAdaptiveDrainDelay(0, quiet, maximum),
		lameduck.WithObserver(func(e lameduck.Event) { events <- e }))
	require.NoError(t, err)
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
		case <-ld.Draining():
			t.Fatal("the delay ended while connections kept arriving")
		default:
		}
	}
	lastRequest := time.Since(signalled)
	ev := awaitPhase(lameduck.PhaseDraining)
	assert.Equal(t, requests, ev.Arrivals)
	assert.GreaterOrEqual(t, ev.Elapsed, quiet, "the quiet period passed")
	assert.LessOrEqual(t, ev.LastArrival, lastRequest, "the last arrival is the last request's connection")
	assert.Less(t, ev.Elapsed, maximum/2, "over long before the maximum")
	require.NoError(t, await.Recv(t, done, "Run to return"))
}
