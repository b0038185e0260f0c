package httpserver_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
)

// finArrived reports, without waiting, whether the server's end of c has
// reached the client, with nothing unread before it: what a keep-alive
// client sees when it has read a response and looks whether it may send
// the next request on the same connection.
func finArrived(t *testing.T, c *rawConn) bool {
	t.Helper()
	if c.r.Buffered() > 0 {
		return false
	}
	rc, err := c.Conn.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	require.NoError(t, err)
	return n == 0 && rerr == nil
}

// An event stream whose header went out before the signal carried no
// "Connection: close". When it ends after the signal, its HTTP/1
// connection ends with it: the server's FIN comes with the last bytes of
// the response, so the client's reconnect cannot go out on that connection
// and takes a new one, through the load balancer, instead of coming
// straight back to this pod. The client reads the whole response, then the
// end of the connection: no request fails, nothing is reset.
func TestStreamEndingAfterTheSignalTakesItsConnectionAlong(t *testing.T) {
	serverTLS, clientTLS := tlsConfig(t)
	clientTLS.ServerName = "127.0.0.1" // no ALPN: HTTP/1.1
	for _, tt := range []struct {
		name  string
		tls   bool
		drain bool // the stream ends during the drain, not the delay
	}{
		{name: "lame duck"},
		{name: "lame duck over TLS", tls: true},
		{name: "drain", drain: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			end := make(chan struct{})
			events := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				if r.Header.Get("Last-Event-ID") != "" {
					io.WriteString(w, "id: 3\ndata: resumed\n\n")
					return
				}
				io.WriteString(w, "id: 1\ndata: first\n\n")
				w.(http.Flusher).Flush()
				started <- struct{}{}
				<-end
				io.WriteString(w, "id: 2\ndata: last\n\n")
			})
			var accepted atomic.Int32
			cfg := config{delay: 5 * time.Second, handler: events, ready: true, connState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepted.Add(1)
				}
			}}
			if tt.tls {
				cfg.tls = serverTLS
			}
			p := start(t, cfg)
			dial := func() *rawConn {
				c := dialRaw(t, p.addr)
				if !tt.tls {
					return c
				}
				tc := tls.Client(c.Conn, clientTLS)
				return &rawConn{Conn: tc, r: bufio.NewReader(tc)}
			}
			send := func(c *rawConn, lastID string) {
				t.Helper()
				c.SetDeadline(time.Now().Add(waitTimeout))
				req := "GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n"
				if lastID != "" {
					req += "Last-Event-ID: " + lastID + "\r\n"
				}
				_, err := io.WriteString(c, req+"\r\n")
				require.NoError(t, err)
			}

			c := dial()
			send(c, "")
			resp, err := http.ReadResponse(c.r, nil)
			require.NoError(t, err)
			assert.False(t, resp.Close, "a keep-alive response, its header sent before the signal")
			await.Recv(t, started, "the first event")
			p.sigterm(t)
			if tt.drain {
				p.endDelay(t, 5*time.Second)
			}
			close(end)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err, "the stream ends whole, with its final chunk")
			assert.Equal(t, "id: 1\ndata: first\n\nid: 2\ndata: last\n\n", string(body))

			// The client reconnects as keep-alive clients do: on the same
			// connection unless the server has ended it.
			ended := tt.tls || finArrived(t, c)
			if !tt.tls {
				assert.True(t, ended, "the FIN came with the end of the response, before the client could send another request")
			}
			if ended {
				assert.True(t, c.closedByPeer(), "the connection ends cleanly, with no reset")
			}
			if tt.drain {
				require.NoError(t, p.wait(t), "the drain ends with the stream")
				return
			}
			again := c
			if ended {
				again = dial()
			}
			send(again, "2")
			resp, err = http.ReadResponse(again.r, nil)
			require.NoError(t, err, "the reconnect is served")
			body, err = io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, "id: 3\ndata: resumed\n\n", string(body))
			assert.True(t, resp.Close)

			p.clock.Pass(t, 5*time.Second)
			ev := p.await(t, lameduck.PhaseDraining)
			assert.Equal(t, int32(2), accepted.Load(), "the reconnect came on a new connection")
			assert.Equal(t, 1, ev.Delay.Arrivals, "which arrived during the delay")
			require.NoError(t, p.wait(t))
		})
	}
}
