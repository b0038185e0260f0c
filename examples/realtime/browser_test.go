package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/await"
)

// chromium finds a Chromium to run headless. Without one the browser test
// is skipped, except in CI, which installs it (scripts/install-chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: CI installs it with scripts/install-chromium")
	}
	t.Skip("no chromium on PATH (Debian: apt-get install chromium, or scripts/install-chromium): the browser test needs one")
	return ""
}

// A hop is a request that the load balancer passed on.
type hop struct {
	path, query, lastEventID string
	backend                  string // the address that served it
	at                       time.Time
	// For an event stream: what it said, and when it ended.
	body  bytes.Buffer
	ended time.Time
}

// A balancer is the load balancer in front of A and B, as a Service is in
// front of a Deployment's pods: a connection goes to A as long as A
// accepts, to B once it does not. It records every request it passes on.
type balancer struct {
	a, b string
	mu   sync.Mutex
	hops []*hop
}

func (lb *balancer) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	if c, err := d.DialContext(ctx, network, lb.a); err == nil {
		return c, nil
	}
	return d.DialContext(ctx, network, lb.b)
}

func (lb *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	h := &hop{path: req.URL.Path, query: req.URL.RawQuery, lastEventID: req.Header.Get("Last-Event-ID"), at: time.Now()}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(c httptrace.GotConnInfo) { h.backend = c.Conn.RemoteAddr().String() },
	}))
	resp, err := (&http.Transport{DialContext: lb.dial, DisableKeepAlives: true}).RoundTrip(req)
	lb.mu.Lock()
	lb.hops = append(lb.hops, h)
	lb.mu.Unlock()
	if err == nil && h.path == "/events" {
		resp.Body = &recordedBody{ReadCloser: resp.Body, lb: lb, h: h}
	}
	return resp, err
}

// recordedBody keeps an event stream's bytes, and when it ended.
type recordedBody struct {
	io.ReadCloser
	lb *balancer
	h  *hop
}

func (r *recordedBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.lb.mu.Lock()
	r.h.body.Write(p[:n])
	if err != nil && r.h.ended.IsZero() {
		r.h.ended = time.Now()
	}
	r.lb.mu.Unlock()
	return n, err
}

// browserReport is what the page posts: the numbers it got on each
// connection, and how they ended.
type browserReport struct {
	WS       []int64
	WSCloses []struct {
		Code   int
		Reason string
	}
	ES []struct {
		ID, Data int64
	}
	ESErrors, ESOpens []float64
}

// TestBrowserResumesAcrossSIGTERM runs a headless Chromium whose page holds
// a WebSocket and an EventSource, through a load balancer, on instance A
// across A's SIGTERM: the WebSocket is closed with 1012 and the page
// reconnects; EventSource reconnects by itself, after the retry time A's
// stream ended with, with Last-Event-ID; both go on on instance B without
// missing a number.
func TestBrowserResumesAcrossSIGTERM(t *testing.T) {
	browser := chromium(t)
	page, err := os.ReadFile("testdata/page.html")
	require.NoError(t, err)
	a := start(t, "-drain-delay", "500ms", "-grace-period", "10s", "-interval", "50ms")
	b := start(t, "-grace-period", "10s", "-interval", "50ms")

	lb := &balancer{a: a.addr, b: b.addr}
	ready, reports := make(chan struct{}, 1), make(chan browserReport, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { w.Write(page) })
	mux.HandleFunc("POST /ready", func(w http.ResponseWriter, r *http.Request) {
		select {
		case ready <- struct{}{}:
		default:
		}
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var rep browserReport
		if assert.NoError(t, json.NewDecoder(r.Body).Decode(&rep)) {
			select {
			case reports <- rep:
			default:
			}
		}
	})
	proxy := &httputil.ReverseProxy{
		// The Host header stays the page's, as behind a load balancer:
		// websocket.Accept checks the Origin against it.
		Rewrite:   func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "backend" },
		Transport: lb,
	}
	mux.Handle("GET /ws", proxy)
	mux.Handle("GET /events", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close) // after the browser's end, which ends its connections

	var out bytes.Buffer
	cmd := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--no-proxy-server", "--user-data-dir="+t.TempDir(), srv.URL+"/")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to end its helper processes with it
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("chromium's output:\n%s", out.String())
		}
	})

	await.Recv(t, ready, "the page to connect")
	a.sigterm(t)
	rep := await.Recv(t, reports, "the page's report")
	exit := a.wait(t)
	lb.mu.Lock()
	defer lb.mu.Unlock()

	// The WebSocket.
	require.NotEmpty(t, rep.WSCloses, "the WebSocket was closed")
	assert.Equal(t, 1012, rep.WSCloses[0].Code, "the WebSocket closes with 1012, service restart")
	assert.Contains(t, rep.WSCloses[0].Reason, "resume with ?from=")
	for i, n := range rep.WS {
		require.Equal(t, int64(i+1), n, "the WebSocket's numbers follow each other, across the move")
	}
	// EventSource.
	for i, e := range rep.ES {
		require.Equal(t, int64(i+1), e.ID, "the event ids follow each other, across the move")
		require.Equal(t, e.ID, e.Data)
	}
	require.NotEmpty(t, rep.ESErrors, "the event stream ended")
	assert.Len(t, rep.ESOpens, 2, "EventSource reconnected once")

	// What the load balancer saw.
	var ws, events []*hop
	for _, h := range lb.hops {
		if h.path == "/ws" {
			ws = append(ws, h)
		} else {
			events = append(events, h)
		}
	}
	require.Len(t, ws, 2, "the page opened a WebSocket, then another")
	assert.Equal(t, []string{a.addr, b.addr}, []string{ws[0].backend, ws[1].backend}, "the second WebSocket went to B")
	assert.Equal(t, "from=1", ws[0].query)
	assert.Regexp(t, `^from=\d+$`, ws[1].query)
	require.Len(t, events, 2, "EventSource opened a stream, then another")
	assert.Equal(t, []string{a.addr, b.addr}, []string{events[0].backend, events[1].backend}, "the second stream went to B")
	assert.Empty(t, events[0].lastEventID)
	retry := regexp.MustCompile(`(?m)^retry: (\d+)$`).FindStringSubmatch(events[0].body.String())
	require.NotNil(t, retry, "A's stream ended with a retry field:\n%s", events[0].body.String())
	ms, _ := strconv.Atoi(retry[1])
	lastOnA := regexp.MustCompile(`(?m)^id: (\d+)$`).FindAllStringSubmatch(events[0].body.String(), -1)
	assert.Equal(t, lastOnA[len(lastOnA)-1][1], events[1].lastEventID, "EventSource resumed with the last id it got from A")
	waited := events[1].at.Sub(events[0].ended)
	t.Logf("WebSocket: %d numbers, closed with %d %q, resumed with %s; EventSource: %d ids, A's stream ended with retry: %d, reconnected %v later with Last-Event-ID: %s; A exited %d, %v after its event stream ended",
		len(rep.WS), rep.WSCloses[0].Code, rep.WSCloses[0].Reason, ws[1].query, len(rep.ES), ms, waited.Round(time.Millisecond), events[1].lastEventID,
		exit, a.exitedAt.Sub(events[0].ended).Round(time.Millisecond))
	// Timers are not exact: a little slack.
	assert.Greater(t, waited, time.Duration(ms)*time.Millisecond-20*time.Millisecond, "EventSource waited for the retry time before it reconnected")

	assert.Equal(t, 0, exit)
	assert.Contains(t, a.logText(), "departures.told=2 departures.left=0")
	assert.Contains(t, a.logText(), "cut=nothing")
}
