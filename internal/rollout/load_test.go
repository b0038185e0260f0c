package rollout_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// runLoad runs load against addr until at least n requests have been
// counted and returns the counts.
func runLoad(t *testing.T, cfg rollout.LoadConfig, n int64) rollout.Counts {
	t.Helper()
	l, err := rollout.StartLoad(t.Context(), cfg)
	require.NoError(t, err)
	assert.Eventually(t, func() bool { return l.Completed() >= n }, 10*time.Second, time.Millisecond)
	c := l.Stop()
	assert.Equal(t, c, l.Stop(), "Stop is idempotent")
	return c
}

func h2cServer(t *testing.T) string {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protocols,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor != 2 {
				http.Error(w, "want HTTP/2", http.StatusHTTPVersionNotSupported)
				return
			}
			io.WriteString(w, "ok")
		}),
	}
	return serveOnLoopback(t, func(ln net.Listener) { srv.Serve(ln) }, func() { srv.Close() })
}

// serveOnLoopback runs serve on a fresh loopback listener until the test
// ends, then stops it and waits for serve to return; it returns the address.
func serveOnLoopback(t *testing.T, serve func(net.Listener), stop func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(ln)
	}()
	t.Cleanup(func() {
		stop()
		await.Recv(t, done, "serve to return")
	})
	return ln.Addr().String()
}

func TestLoadH2CThroughProxy(t *testing.T) {
	p := newProxy(t, h2cServer(t))
	c := runLoad(t, rollout.LoadConfig{Kind: rollout.LoadH2C, Addr: p.Addr(), Conns: 3}, 300)
	assert.GreaterOrEqual(t, c.Requests, int64(300))
	assert.Zero(t, c.Failed(), "samples: %q", c.Samples)
	assert.LessOrEqual(t, p.Stats().Conns, int64(3), "one connection per transport")
}

func TestLoadHTTP1ThroughProxy(t *testing.T) {
	srv := newScriptServer(t, respond(nil, okResponse, okResponse, okResponse, okResponse,
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
	p := newProxy(t, srv.addr())
	c := runLoad(t, rollout.LoadConfig{Addr: p.Addr(), Conns: 4}, 200)
	assert.GreaterOrEqual(t, c.Requests, int64(200))
	assert.Zero(t, c.Failed(), "samples: %q", c.Samples)
	assert.Greater(t, p.Stats().Conns, int64(4), "Connection: close makes clients reconnect through the proxy")
}

// builtinLoads are the loads of this package; package grpcload tests the
// gRPC load the same way.
var builtinLoads = []rollout.LoadKind{rollout.LoadHTTP1, rollout.LoadH2C}

// With no endpoint, every protocol's client must see its requests refused:
// nothing may be hidden by a retry, and nothing may be misread as a reset of
// a connection that had carried requests.
func TestLoadClassifiesRefused(t *testing.T) {
	for _, kind := range builtinLoads {
		t.Run(string(kind), func(t *testing.T) {
			p := newProxy(t)
			c := runLoad(t, rollout.LoadConfig{Kind: kind, Addr: p.Addr(), Conns: 2}, 20)
			assert.Equal(t, c.Requests, c.Failed())
			assert.Equal(t, c.Requests, c.Failures[record.KindRefused], "samples: %q", c.Samples)
		})
	}
}

func TestStartLoadRejectsBadConfig(t *testing.T) {
	_, err := rollout.StartLoad(t.Context(), rollout.LoadConfig{Kind: "h3", Addr: "127.0.0.1:1"})
	assert.ErrorContains(t, err, "unknown load")
	_, err = rollout.StartLoad(t.Context(), rollout.LoadConfig{Addr: "10.0.0.1:80"})
	assert.ErrorContains(t, err, "loopback")
	_, err = rollout.StartLoad(t.Context(), rollout.LoadConfig{Addr: "127.0.0.1:1", Path: "x"})
	assert.ErrorContains(t, err, "must start with /")
	// Nothing in this package's tests imports grpcload.
	_, err = rollout.StartLoad(t.Context(), rollout.LoadConfig{Kind: rollout.LoadGRPC, Addr: "127.0.0.1:1"})
	assert.ErrorContains(t, err, "set LoadConfig.Client to grpcload.Load()")
}

// Fresh clients open a new connection through the load balancer for every
// request, whatever the protocol, and fail nothing doing so.
func TestFreshClientsOpenANewConnectionForEveryRequest(t *testing.T) {
	servers := map[rollout.LoadKind]func(*testing.T) string{
		rollout.LoadH2C: h2cServer,
		rollout.LoadHTTP1: func(t *testing.T) string { // keeps every connection alive
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
			return serveOnLoopback(t, func(ln net.Listener) { srv.Serve(ln) }, func() { srv.Close() })
		},
	}
	for _, kind := range builtinLoads {
		t.Run(string(kind), func(t *testing.T) {
			p := newProxy(t, servers[kind](t))
			const conns = 1
			l, err := rollout.StartLoad(t.Context(), rollout.LoadConfig{Kind: kind, Addr: p.Addr(), Conns: conns, Fresh: 2})
			require.NoError(t, err)
			// The servers keep connections alive: only fresh clients make
			// more than one.
			assert.Eventually(t, func() bool { return p.Stats().Conns >= conns+20 }, 10*time.Second, time.Millisecond,
				"fresh clients keep opening connections")
			c := l.Stop()
			assert.Zero(t, c.Failed(), "samples: %q", c.Samples)
		})
	}
}
