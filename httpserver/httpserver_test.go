package httpserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/inflight"
	"github.com/lameduck/lameduck/internal/await"
)

func TestKeepAliveConnectionIsToldToLeave(t *testing.T) {
	p := start(t, config{delay: 5 * time.Second, handler: okHandler, ready: true})
	c := dialRaw(t, p.addr)
	resp, body, err := c.get("/")
	require.NoError(t, err)
	assert.Equal(t, "ok", body)
	assert.False(t, resp.Close, "keep-alive before the shutdown")

	p.sigterm(t)
	resp, body, err = c.get("/")
	require.NoError(t, err, "the keep-alive connection is still served during the delay")
	assert.Equal(t, "ok", body)
	assert.True(t, resp.Close, "the response carries Connection: close")
	assert.True(t, c.closedByPeer(), "the server ends the connection after that response")

	fresh := dialRaw(t, p.addr)
	resp, body, err = fresh.get("/")
	require.NoError(t, err, "new connections are accepted during the delay")
	assert.Equal(t, "ok", body)
	assert.True(t, resp.Close)

	p.endDelay(t, 5*time.Second)
	require.NoError(t, p.wait(t))
}

// A response whose header was decided before the signal carries no
// "Connection: close", and its client may send the next request right
// behind it, without looking whether the server ended the connection, as
// load generators do: the connection stays open for that request, which
// is served and asked to leave.
func TestRequestRightBehindAResponseBegunBeforeTheSignalIsServed(t *testing.T) {
	began := make(chan struct{}, 1)
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/", okHandler)
	mux.HandleFunc("/straddling", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok") // decides the header
		began <- struct{}{}
		<-release
	})
	p := start(t, config{delay: 5 * time.Second, handler: mux, ready: true})
	c := dialRaw(t, p.addr)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, body, err := c.get("/straddling")
		got <- result{resp, body, err}
	}()
	await.Recv(t, began, "the response to begin")
	p.sigterm(t)
	close(release)
	r := await.Recv(t, got, "the response")
	require.NoError(t, r.err)
	assert.Equal(t, "ok", r.body)
	assert.False(t, r.resp.Close, "its header was decided before the signal")

	resp, body, err := c.get("/")
	require.NoError(t, err, "the request sent right behind it is served")
	assert.Equal(t, "ok", body)
	assert.True(t, resp.Close)
	assert.True(t, c.closedByPeer())

	p.endDelay(t, 5*time.Second)
	require.NoError(t, p.wait(t))
}

func TestReadinessTurnsOffWhileServingGoesOn(t *testing.T) {
	p := start(t, config{delay: 5 * time.Second, handler: okHandler, ready: true})
	client := &http.Client{Timeout: waitTimeout}
	get := func(path string) int {
		resp, err := client.Get("http://" + p.addr + path)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get("/readyz"))
	p.sigterm(t)
	assert.Equal(t, http.StatusServiceUnavailable, get("/readyz"))
	assert.Equal(t, http.StatusOK, get("/"))
	p.endDelay(t, 5*time.Second)
	require.NoError(t, p.wait(t))
	client.CloseIdleConnections()
}

func TestIdleConnectionsAreClosedWhenTheDrainBegins(t *testing.T) {
	p := start(t, config{delay: time.Second, handler: okHandler, ready: true})
	var idle []*rawConn
	for range 20 {
		c := dialRaw(t, p.addr)
		_, _, err := c.get("/")
		require.NoError(t, err)
		idle = append(idle, c)
	}
	never := dialRaw(t, p.addr) // connected, never sent a request
	p.sigterm(t)
	p.endDelay(t, time.Second)
	require.NoError(t, p.wait(t), "the drain does not wait for idle connections")
	for _, c := range idle {
		assert.True(t, c.closedByPeer())
	}
	assert.True(t, never.closedByPeer())
}

func TestRequestArrivingWhenTheDrainBeginsIsServed(t *testing.T) {
	p := start(t, config{delay: time.Second, handler: okHandler, ready: true})
	c := dialRaw(t, p.addr)
	_, _, err := c.get("/")
	require.NoError(t, err)
	// Half a request: the server reads it before the drain begins (the
	// signal and the delay take several round trips), so the connection is
	// not idle and must not be closed.
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n")
	require.NoError(t, err)
	p.sigterm(t)
	p.endDelay(t, time.Second)
	_, err = io.WriteString(c, "\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(c.r, nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "ok", string(body))
	assert.True(t, resp.Close)
	require.NoError(t, p.wait(t))
}

// blocking is a handler that signals when a request arrives and answers
// when the test says so.
type blocking struct {
	arrived chan struct{}
	release chan struct{}
}

func newBlocking() *blocking {
	return &blocking{arrived: make(chan struct{}, 10), release: make(chan struct{})}
}

func (b *blocking) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.arrived <- struct{}{}
	<-b.release
	io.WriteString(w, strings.Repeat("x", 100_000))
}

func (b *blocking) awaitArrival(t *testing.T) {
	t.Helper()
	select {
	case <-b.arrived:
	case <-time.After(waitTimeout):
		t.Fatal("the request never reached the handler")
	}
}

func TestSlowRequestInFlightAcrossTheSignalFinishesWhole(t *testing.T) {
	h := newBlocking()
	p := start(t, config{delay: 2 * time.Second, handler: h, ready: true})
	c := dialRaw(t, p.addr)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, body, err := c.get("/")
		got <- result{resp, body, err}
	}()
	h.awaitArrival(t)
	p.sigterm(t)
	p.endDelay(t, 2*time.Second)
	select {
	case err := <-p.done:
		t.Fatalf("Run returned with a request in flight: %v", err)
	default:
	}
	close(h.release)
	r := await.Recv(t, got, "the answer to the request in flight")
	require.NoError(t, r.err)
	assert.Len(t, r.body, 100_000)
	assert.True(t, r.resp.Close, "the response written after the signal tells the client to leave")
	require.NoError(t, p.wait(t))
}

// connRecorder follows the server's connections through ConnState.
type connRecorder struct {
	mu     sync.Mutex
	closed map[string]chan struct{} // by remote address
}

func newConnRecorder() *connRecorder { return &connRecorder{closed: make(map[string]chan struct{})} }

func (r *connRecorder) chanLocked(addr string) chan struct{} {
	ch, ok := r.closed[addr]
	if !ok {
		ch = make(chan struct{})
		r.closed[addr] = ch
	}
	return ch
}

func (r *connRecorder) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.chanLocked(c.RemoteAddr().String()))
}

func (r *connRecorder) awaitClosed(t *testing.T, clientAddr string) {
	t.Helper()
	r.mu.Lock()
	ch := r.chanLocked(clientAddr)
	r.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("connection from %s never closed", clientAddr)
	}
}

// tracedGet sends a GET with client and reports the local address of the
// connection it used and whether it was reused.
func tracedGet(t *testing.T, client *http.Client, url string) (resp *http.Response, local string, reused bool) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		local, reused = info.Conn.LocalAddr().String(), info.Reused
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err = client.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "ok", string(body))
	return resp, local, reused
}

// http2Setup is a way to speak HTTP/2 to the server: h2c, or over TLS.
type http2Setup struct {
	name      string
	serverTLS *tls.Config // for the server; nil for h2c
	client    func() *http.Client
	scheme    string
}

func http2Setups(t *testing.T) []http2Setup {
	serverTLS, clientTLS := tlsConfig(t)
	return []http2Setup{
		{"h2c", nil, h2cClient, "http"},
		{"tls", serverTLS, func() *http.Client {
			return &http.Client{Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}}
		}, "https"},
	}
}

func TestHTTP2ConnectionsGetAGracefulGoAway(t *testing.T) {
	for _, tt := range http2Setups(t) {
		t.Run(tt.name, func(t *testing.T) {
			rec := newConnRecorder()
			p := start(t, config{delay: 5 * time.Second, handler: okHandler, ready: true, tls: tt.serverTLS, connState: rec.connState})
			client := tt.client()
			defer client.CloseIdleConnections()
			url := tt.scheme + "://" + p.addr + "/"

			resp, first, _ := tracedGet(t, client, url)
			assert.Equal(t, 2, resp.ProtoMajor)
			// The open connection, idle, gets its GOAWAY at the signal, and
			// ends once the client has processed it.
			p.sigterm(t)
			rec.awaitClosed(t, first)
			_, during, reused := tracedGet(t, client, url)
			assert.False(t, reused, "the next request goes through a new connection")
			assert.NotEqual(t, first, during)
			// A connection opened during the delay is served, and told to
			// leave after its first response.
			rec.awaitClosed(t, during)
			_, after, reused := tracedGet(t, client, url)
			assert.False(t, reused)
			assert.NotEqual(t, during, after)

			p.endDelay(t, 5*time.Second)
			require.NoError(t, p.wait(t))
		})
	}
}

func TestHTTP1ClientsLeaveDuringTheDelay(t *testing.T) {
	p := start(t, config{delay: 5 * time.Second, handler: okHandler, ready: true})
	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()
	url := "http://" + p.addr + "/"
	_, first, _ := tracedGet(t, client, url)
	p.sigterm(t)
	resp, during, reused := tracedGet(t, client, url)
	assert.True(t, reused)
	assert.Equal(t, first, during)
	assert.Equal(t, 1, resp.ProtoMajor)
	assert.True(t, resp.Close)
	_, after, reused := tracedGet(t, client, url)
	assert.False(t, reused)
	assert.NotEqual(t, first, after)
	p.endDelay(t, 5*time.Second)
	require.NoError(t, p.wait(t))
}

func TestStreamsAndHijackedConnectionsAreToldToFinish(t *testing.T) {
	var ld *lameduck.Coordinator
	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-ld.Entered(lameduck.PhaseDraining):
				io.WriteString(w, "event: bye\ndata: reconnect elsewhere\n\n")
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		io.WriteString(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		<-ld.Entered(lameduck.PhaseDraining)
		io.WriteString(rw, "bye\n")
		rw.Flush()
	})
	p := start(t, config{delay: time.Second, handler: mux, ready: true})
	ld = p.ld

	sse := dialRaw(t, p.addr)
	fmt.Fprintf(sse, "GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
	sseResp, err := http.ReadResponse(sse.r, nil)
	require.NoError(t, err)
	events := bufio.NewReader(sseResp.Body)
	line, err := events.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "data: 0\n", line)

	ws := dialRaw(t, p.addr)
	fmt.Fprintf(ws, "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	wsResp, err := http.ReadResponse(ws.r, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusSwitchingProtocols, wsResp.StatusCode)

	p.sigterm(t)
	p.endDelay(t, time.Second)
	rest, err := io.ReadAll(events)
	require.NoError(t, err, "the stream ends cleanly, chunked encoding complete")
	assert.True(t, strings.HasSuffix(string(rest), "event: bye\ndata: reconnect elsewhere\n\n"))
	bye, err := ws.r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "bye\n", bye)
	require.NoError(t, p.wait(t))
}

func TestWhatIgnoresTheDrainIsCutAtTheDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	steady := make(chan string, 10) // each handler says when it is settled in
	mux := http.NewServeMux()
	mux.HandleFunc("/stuck", func(w http.ResponseWriter, r *http.Request) {
		steady <- r.URL.Path
		<-r.Context().Done() // ends when the deadline cancels request contexts
	})
	mux.HandleFunc("/ignores-context", func(w http.ResponseWriter, r *http.Request) {
		steady <- r.URL.Path
		<-release
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		steady <- r.URL.Path
		<-r.Context().Done()
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		steady <- r.URL.Path
		io.Copy(io.Discard, c) // until the server closes it
		c.Close()
	})
	p := start(t, config{delay: time.Second, ready: true, hookTime: time.Second, handler: mux})

	paths := []string{"/stuck", "/ignores-context", "/stream", "/ws"}
	conns := make([]*rawConn, len(paths))
	for i, path := range paths {
		conns[i] = dialRaw(t, p.addr)
		fmt.Fprintf(conns[i], "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path)
		assert.Equal(t, path, await.Recv(t, steady, path+" to settle in"))
	}
	p.sigterm(t)
	p.endDelay(t, time.Second)
	p.endDrain(t)
	err := p.wait(t)
	require.ErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, err.Error(), "2 requests, 1 stream, 1 connection cut")
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err := io.ReadAll(c)
		assert.NoError(t, err, "the server closed the connection")
	}
}

func TestBusyPortFailsRunAtOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithLogger(discard))
	require.NoError(t, err)
	ld.Register(httpserver.New(&http.Server{Addr: taken.Addr().String()}))
	ld.MarkReady()
	err = ld.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), taken.Addr().String())
	assert.Contains(t, err.Error(), "address already in use")
}

func TestUserHooksAreKept(t *testing.T) {
	var states sync.Map
	type ctxKey struct{}
	srv := &http.Server{
		Addr:        "127.0.0.1:0",
		ConnState:   func(c net.Conn, s http.ConnState) { states.Store(s, true) },
		BaseContext: func(net.Listener) context.Context { return context.WithValue(context.Background(), ctxKey{}, "base") },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Context().Value(ctxKey{}).(string))
		}),
	}
	s := httpserver.New(srv)
	require.NoError(t, s.Listen())
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	c := dialRaw(t, s.Addr().String())
	_, body, err := c.get("/")
	require.NoError(t, err)
	assert.Equal(t, "base", body)
	_, ok := states.Load(http.StateActive)
	assert.True(t, ok, "the user's ConnState hook still runs")
	s.LameDuck(func() {})
	require.NoError(t, s.Drain(context.Background()))
	assert.Equal(t, inflight.Counts{}, s.Close())
	require.NoError(t, await.Recv(t, served, "Serve to return"))
}

func TestMethodsAreSafeInAnyOrder(t *testing.T) {
	s := httpserver.New(&http.Server{Addr: "127.0.0.1:0"})
	assert.Nil(t, s.Addr())
	s.LameDuck(func() {})
	assert.Equal(t, inflight.Counts{}, s.Close())
	assert.Equal(t, inflight.Counts{}, s.Close())
	require.NoError(t, s.Drain(context.Background()))
	assert.Error(t, s.Listen(), "no Listen after Close")
	assert.Error(t, s.Serve())
	assert.PanicsWithValue(t, "httpserver: New: the *http.Server is nil", func() { httpserver.New(nil) })
}

func TestIdleHTTP2ConnectionsAreToldToLeaveWhenTheDrainBegins(t *testing.T) {
	for _, tt := range http2Setups(t) {
		t.Run(tt.name, func(t *testing.T) {
			rec := newConnRecorder()
			p := start(t, config{delay: time.Second, handler: okHandler, ready: true, tls: tt.serverTLS, connState: rec.connState})
			client := tt.client()
			defer client.CloseIdleConnections()
			resp, local, _ := tracedGet(t, client, tt.scheme+"://"+p.addr+"/")
			assert.Equal(t, 2, resp.ProtoMajor)
			// The connection stays idle through the delay: no response
			// could tell it to leave, so the drain does, with a GOAWAY.
			p.sigterm(t)
			p.endDelay(t, time.Second)
			require.NoError(t, p.wait(t), "the drain ends without waiting for the deadline")
			rec.awaitClosed(t, local)
		})
	}
}

func TestConnectionsQueuedWhenTheDrainBeginsAreServed(t *testing.T) {
	// The first connection's StateNew hook holds net/http's accept loop,
	// so that the next ones wait in the kernel's accept queue when the
	// drain begins, as connections routed here just before it may.
	holding := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	p := start(t, config{delay: time.Second, handler: okHandler, ready: true, connState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			once.Do(func() { close(holding); <-release })
		}
	}})
	conns := []*rawConn{dialRaw(t, p.addr)}
	await.Recv(t, holding, "the first connection's StateNew")
	for range 5 {
		conns = append(conns, dialRaw(t, p.addr))
	}
	for _, c := range conns {
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
		require.NoError(t, err)
	}
	p.sigterm(t)
	p.endDelay(t, time.Second)
	close(release)
	for i, c := range conns {
		resp, err := http.ReadResponse(c.r, nil)
		require.NoError(t, err, "connection %d", i)
		body, _ := io.ReadAll(resp.Body)
		assert.Equal(t, "ok", string(body))
		assert.True(t, resp.Close)
	}
	require.NoError(t, p.wait(t))
}
