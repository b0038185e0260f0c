package rollout_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// respond returns a script that answers every request on a connection with
// the given raw responses in turn, then (after the last) does after.
func respond(after func(c *net.TCPConn), responses ...string) func(int, *net.TCPConn) {
	return func(_ int, c *net.TCPConn) {
		br := bufio.NewReader(c)
		for _, r := range responses {
			if !readRequest(br) {
				c.Close()
				return
			}
			if _, err := io.WriteString(c, r); err != nil {
				c.Close()
				return
			}
		}
		if after != nil {
			after(c)
			return
		}
		// Keep the connection open until the client closes it.
		io.Copy(io.Discard, br)
		c.Close()
	}
}

func newClient(t *testing.T, addr string) *rollout.HTTP1Client {
	c := &rollout.HTTP1Client{Addr: addr, Timeout: 5 * time.Second}
	t.Cleanup(func() { c.Close() })
	return c
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

func TestHTTP1ClientParsesAndReusesConnection(t *testing.T) {
	responses := []string{
		okResponse,
		// Chunked, with a chunk extension and a trailer.
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
		// Informational responses come before the final one.
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 301 Moved\r\nLocation: /x\r\ncontent-length: 0\r\n\r\n",
		// A 5xx is a failure, but the connection stays usable.
		"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n",
		okResponse,
	}
	srv := newScriptServer(t, respond(nil, responses...))
	c := newClient(t, srv.addr())
	ctx := t.Context()
	var local net.Addr
	for i, want := range []int{200, 200, 204, 304, 301, 503, 200} {
		status, err := c.Get(ctx)
		assert.Equal(t, want, status, "response %d", i)
		if want == 503 {
			assert.Equal(t, record.Kind5xx, kindOf(t, err))
		} else {
			require.NoError(t, err, "response %d", i)
		}
		if local == nil {
			local = c.LocalAddr()
		}
		assert.Equal(t, local, c.LocalAddr(), "response %d: the keep-alive connection must be reused", i)
	}
	assert.Equal(t, 1, srv.acceptedConns())
}

func TestHTTP1ClientReconnectsAfterConnectionClose(t *testing.T) {
	srv := newScriptServer(t, respond(func(c *net.TCPConn) { c.Close() },
		"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok"))
	c := newClient(t, srv.addr())
	for range 3 {
		status, err := c.Get(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 200, status)
	}
	assert.Equal(t, 3, srv.acceptedConns(), "each Connection: close must lead to a new connection")
}

func TestHTTP1ClientHTTP10BodyToEOF(t *testing.T) {
	srv := newScriptServer(t, respond(func(c *net.TCPConn) { c.Close() },
		"HTTP/1.0 200 OK\r\n\r\nbody until the end"))
	c := newClient(t, srv.addr())
	for range 2 {
		status, err := c.Get(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 200, status)
	}
	assert.Equal(t, 2, srv.acceptedConns())

	srv10 := newScriptServer(t, respond(nil, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", okResponse))
	c = newClient(t, srv10.addr())
	for range 2 {
		_, err := c.Get(t.Context())
		require.NoError(t, err)
	}
	assert.Equal(t, 1, srv10.acceptedConns(), "HTTP/1.0 with keep-alive keeps the connection")
}

func TestHTTP1ClientClassifiesFailures(t *testing.T) {
	tests := []struct {
		name string
		// script handles the connection; the first response on it (if any)
		// is served before the failure under test, which then happens on
		// the second request of a reused connection when reused is set.
		script  func(int, *net.TCPConn)
		reused  bool
		want    record.Kind
		timeout time.Duration
	}{
		{
			name:   "reset of a fresh connection before any byte is refused",
			script: func(_ int, c *net.TCPConn) { readRequest(bufio.NewReader(c)); reset(c) },
			want:   record.KindRefused,
		},
		{
			name:   "reset of a reused connection while waiting",
			script: respond(func(c *net.TCPConn) { readRequest(bufio.NewReader(c)); reset(c) }, okResponse),
			reused: true,
			want:   record.KindReset,
		},
		{
			name: "reset after part of the response",
			script: func(_ int, c *net.TCPConn) {
				readRequest(bufio.NewReader(c))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				reset(c)
			},
			want: record.KindReset,
		},
		{
			name:   "close after reading the request (request dropped)",
			script: func(_ int, c *net.TCPConn) { readRequest(bufio.NewReader(c)); c.Close() },
			want:   record.KindEOF,
		},
		{
			// The server's FIN, and nothing else: a server that closed its
			// socket outright would answer the client's next request with
			// a reset, which the client sees instead of the FIN if it
			// arrives before the client reads (the case above).
			name: "close of a reused keep-alive connection",
			script: respond(func(c *net.TCPConn) {
				c.CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}, okResponse),
			reused: true,
			want:   record.KindEOF,
		},
		{
			name: "close in the middle of the body",
			script: func(_ int, c *net.TCPConn) {
				readRequest(bufio.NewReader(c))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				c.Close()
			},
			want: record.KindEOF,
		},
		{
			name: "close in the middle of a chunked body",
			script: func(_ int, c *net.TCPConn) {
				readRequest(bufio.NewReader(c))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
				c.Close()
			},
			want: record.KindEOF,
		},
		{
			name:   "5xx",
			script: respond(nil, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"),
			want:   record.Kind5xx,
		},
		{
			name:   "unexpected status",
			script: respond(nil, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
			want:   record.KindOther,
		},
		{
			name:   "malformed status line",
			script: respond(nil, "SSH-2.0-OpenSSH\r\n\r\n"),
			want:   record.KindOther,
		},
		{
			name:   "bad content length",
			script: respond(nil, "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
			want:   record.KindOther,
		},
		{
			name:   "bad chunk size",
			script: respond(nil, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
			want:   record.KindOther,
		},
		{
			name:    "no response in time",
			script:  respond(nil), // reads nothing, answers nothing, keeps the connection open
			want:    record.KindTimeout,
			timeout: 100 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScriptServer(t, tt.script)
			c := newClient(t, srv.addr())
			if tt.timeout > 0 {
				c.Timeout = tt.timeout
			}
			if tt.reused {
				_, err := c.Get(t.Context())
				require.NoError(t, err)
			}
			_, err := c.Get(t.Context())
			require.Error(t, err)
			assert.Equal(t, tt.want, kindOf(t, err), "error: %v", err)
			assert.Equal(t, tt.want, rollout.KindOf(err))
		})
	}
}

func TestHTTP1ClientDialRefused(t *testing.T) {
	c := newClient(t, closedPortAddr(t))
	_, err := c.Get(t.Context())
	assert.Equal(t, record.KindRefused, kindOf(t, err))
}

func TestHTTP1ClientCancelIsNotAFailure(t *testing.T) {
	accepted := make(chan struct{})
	srv := newScriptServer(t, func(_ int, c *net.TCPConn) {
		close(accepted)
		io.Copy(io.Discard, c) // never answers
		c.Close()
	})
	c := newClient(t, srv.addr())
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-accepted
		cancel()
	}()
	_, err := c.Get(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, record.KindOther, rollout.KindOf(err), "a cancelled request is no *Failure")
}
