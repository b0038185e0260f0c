package httpserver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

// scraper is a keep-alive HTTP client, as Prometheus and the kubelet are,
// that counts the connections it opens.
type scraper struct {
	client *http.Client
	dials  atomic.Int32
}

func newScraper() *scraper {
	return &scraper{client: &http.Client{Timeout: waitTimeout, Transport: &http.Transport{}}}
}

func (s *scraper) get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	trace := &httptrace.ClientTrace{ConnectStart: func(string, string) { s.dials.Add(1) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := s.client.Do(req)
	require.NoError(t, err, "GET %s", url)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body), resp.Header
}

func TestAdminAnswersThroughTheDrain(t *testing.T) {
	const delay = 5 * time.Second
	clock := fakeclock.New()
	signals := make(chan os.Signal, 2)
	events := make(chan lameduck.Event, 100)
	sc := newScraper()
	defer sc.client.CloseIdleConnections()
	var adminURL string
	stoppedScrape := make(chan string, 1)
	ld, err := lameduck.New(
		lameduck.WithSignals(), lameduck.WithSignalChannel(signals), clock.Option(),
		lameduck.WithLogger(discard), lameduck.WithDrainDelay(delay),
	)
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseStopped {
			// Run has entered its last phase and not returned yet:
			// the admin server still answers.
			_, body, _ := sc.get(t, adminURL+"/metrics")
			stoppedScrape <- body
		}
		events <- e
	})
	awaitPhase := func(phase lameduck.Phase) {
		t.Helper()
		timeout := time.After(waitTimeout)
		for {
			select {
			case e := <-events:
				if e.Phase == phase {
					return
				}
			case <-timeout:
				t.Fatalf("phase %v never entered", phase)
			}
		}
	}

	started, release := make(chan struct{}), make(chan struct{})
	app := httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})})
	ld.Register(app)
	admin := httpserver.Admin(ld, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := ld.Status()
		fmt.Fprintf(w, "phase=%s in_flight=%d", st.Phase, st.Servers[0].InFlight.Requests)
	}))
	hookRunning, hookDone := make(chan struct{}), make(chan struct{})
	ld.OnShutdown("", func(context.Context) error {
		close(hookRunning)
		<-hookDone
		return nil
	})
	ld.MarkReady()
	done := make(chan error, 1)
	go func() { done <- ld.Run(context.Background()) }()
	awaitPhase(lameduck.PhaseServing)
	adminURL = "http://" + admin.Addr().String()

	type answer struct {
		code int
		body string
	}
	probe := func(path string) answer {
		t.Helper()
		code, body, h := sc.get(t, adminURL+path)
		assert.Empty(t, h.Get("Connection"), "the admin server never asks its clients to leave")
		return answer{code, body}
	}
	assert.Equal(t, answer{200, "phase=serving in_flight=0"}, probe("/metrics"))
	assert.Equal(t, answer{200, "ok"}, probe("/readyz"))
	assert.Equal(t, answer{404, "404 page not found\n"}, probe("/"))

	appResult := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + app.Addr().String())
		if err != nil {
			appResult <- answer{0, err.Error()}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		appResult <- answer{resp.StatusCode, string(body)}
	}()
	await.Recv(t, started, "the request to reach the handler")
	assert.Equal(t, answer{200, "phase=serving in_flight=1"}, probe("/metrics"))

	signals <- os.Interrupt
	awaitPhase(lameduck.PhaseLameDuck)
	assert.Equal(t, answer{200, "phase=lame duck in_flight=1"}, probe("/metrics"))
	assert.Equal(t, answer{503, "shutting down"}, probe("/readyz"))
	assert.Equal(t, answer{200, "ok"}, probe("/livez"))

	clock.Pass(t, delay)
	awaitPhase(lameduck.PhaseDraining)
	assert.Equal(t, answer{200, "phase=draining in_flight=1"}, probe("/metrics"))
	assert.Equal(t, answer{503, "shutting down"}, probe("/readyz"), "the kubelet's probes get an answer during the drain")

	close(release)
	assert.Equal(t, answer{200, "done"}, await.Recv(t, appResult, "the answer to the request"))
	await.Recv(t, hookRunning, "the hook to run")
	assert.Equal(t, answer{200, "phase=stopping in_flight=0"}, probe("/metrics"))
	close(hookDone)
	assert.Equal(t, "phase=stopped in_flight=0", await.Recv(t, stoppedScrape, "the scrape in PhaseStopped"))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	assert.Equal(t, int32(1), sc.dials.Load(), "one keep-alive connection served every scrape, from serving to stopped")

	_, err = net.DialTimeout("tcp", admin.Addr().String(), waitTimeout)
	assert.Error(t, err, "the admin server is closed once Run has returned")
}

func TestAdminWithoutMetricsServesOnlyProbes(t *testing.T) {
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithLogger(discard))
	require.NoError(t, err)
	admin := httpserver.Admin(ld, "127.0.0.1:0", nil)
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan struct{})
	ld.Go("", func(context.Context) error { close(serving); return nil })
	done := make(chan error, 1)
	go func() { done <- ld.Run(ctx) }()
	await.Recv(t, serving, "Run to serve")
	sc := newScraper()
	defer sc.client.CloseIdleConnections()
	base := "http://" + admin.Addr().String()
	code, body, _ := sc.get(t, base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "starting", body)
	code, _, _ = sc.get(t, base+"/livez")
	assert.Equal(t, http.StatusOK, code)
	code, _, _ = sc.get(t, base+"/metrics")
	assert.Equal(t, http.StatusNotFound, code)
	cancel()
	require.NoError(t, await.Recv(t, done, "Run to return"))

	assert.PanicsWithValue(t, "httpserver: Admin: the coordinator is nil; create one with lameduck.New",
		func() { httpserver.Admin(nil, ":0", nil) })
}

// With WithFinalScrape, the scrape that reads the final status gets its
// whole answer: the admin server finishes it before it closes.
func TestTheFinalScrapeIsAnsweredInFull(t *testing.T) {
	signals := make(chan os.Signal, 1)
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithSignalChannel(signals), lameduck.WithLogger(discard),
		lameduck.WithDrainDelay(0), lameduck.WithFinalScrape())
	require.NoError(t, err)
	ld.Register(httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: okHandler}))
	const size = 4 << 20 // more than the socket buffers hold: the client must read while the server writes
	admin := httpserver.Admin(ld, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := ld.Status()
		defer ld.MarkExported(st)
		fmt.Fprintf(w, "phase=%s\n", st.Phase)
		w.(http.Flusher).Flush()
		chunk := make([]byte, 64<<10)
		for written := 0; written < size; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	ld.MarkReady()
	done := make(chan error, 1)
	go func() { done <- ld.Run(context.Background()) }()
	await.Recv(t, ld.Entered(lameduck.PhaseServing), "Run to serve")
	signals <- os.Interrupt
	await.Recv(t, ld.Entered(lameduck.PhaseStopped), "the shutdown to be over")

	sc := newScraper()
	defer sc.client.CloseIdleConnections()
	code, body, _ := sc.get(t, "http://"+admin.Addr().String()+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, strings.HasPrefix(body, "phase=stopped\n"), "the final status")
	assert.Len(t, body, len("phase=stopped\n")+size, "the whole answer, not cut by the close")
	require.NoError(t, await.Recv(t, done, "Run to return once the final status was read"))
}
