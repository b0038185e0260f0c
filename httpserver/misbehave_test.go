package httpserver_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
)

// misbehaving is a client that holds the drain until the deadline, and
// the handler it talks to.
type misbehaving struct {
	name    string
	handler http.HandlerFunc
	// begin starts the client once the server serves, and returns once
	// its handler is settled in.
	begin func(t *testing.T, p *process) *rawConn
	// duringDrain shows that the client still holds the drain.
	duringDrain func(t *testing.T, c *rawConn)
	// cut is how Run's error counts it.
	cut string
}

// misbehavingClients returns the cases; their handlers send their name on
// settled once they hold the drain, and accepted must get the client
// address of each connection the server accepts (see acceptedHook).
func misbehavingClients(settled, accepted chan string) []misbehaving {
	awaitSettled := func(t *testing.T, name string) {
		t.Helper()
		select {
		case got := <-settled:
			require.Equal(t, name, got)
		case <-time.After(waitTimeout):
			t.Fatalf("%s never settled in", name)
		}
	}
	// A client that sends no whole request reaches no handler: it has
	// settled in once the server has accepted its connection.
	awaitAccepted := func(t *testing.T, c *rawConn) {
		t.Helper()
		timeout := time.After(waitTimeout)
		for {
			select {
			case addr := <-accepted:
				if addr == c.LocalAddr().String() {
					return
				}
			case <-timeout:
				t.Fatalf("the server never accepted the connection from %s", c.LocalAddr())
			}
		}
	}
	return []misbehaving{
		{
			name:    "slowloris",
			handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "never reached") },
			begin: func(t *testing.T, p *process) *rawConn {
				c := dialRaw(t, p.addr)
				for _, b := range []byte("GET / HTTP/1.1\r\nHo") {
					_, err := c.Write([]byte{b})
					require.NoError(t, err)
				}
				awaitAccepted(t, c)
				return c
			},
			duringDrain: func(t *testing.T, c *rawConn) {
				for _, b := range []byte("st: te") {
					_, err := c.Write([]byte{b})
					require.NoError(t, err, "the drain does not close a connection receiving a request")
				}
			},
			cut: "1 request cut",
		},
		{
			name: "never reads its response",
			handler: func(w http.ResponseWriter, r *http.Request) {
				chunk := make([]byte, 64<<10)
				settled <- "never reads its response"
				for {
					// Blocks once the socket buffers are full, until the
					// deadline closes the connection.
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			},
			begin: func(t *testing.T, p *process) *rawConn {
				c := dialRaw(t, p.addr)
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
				awaitSettled(t, "never reads its response")
				return c
			},
			cut: "1 request cut",
		},
		{
			name: "hijacked connection ignoring the drain",
			handler: func(w http.ResponseWriter, r *http.Request) {
				c, rw, err := w.(http.Hijacker).Hijack()
				if err != nil {
					return // the test fails waiting for settled
				}
				defer c.Close()
				io.WriteString(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				rw.Flush()
				settled <- "hijacked connection ignoring the drain"
				for {
					line, err := rw.ReadString('\n')
					if err != nil {
						return
					}
					rw.WriteString(line)
					rw.Flush()
				}
			},
			begin: func(t *testing.T, p *process) *rawConn {
				c := dialRaw(t, p.addr)
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				resp, err := http.ReadResponse(c.r, nil)
				require.NoError(t, err)
				require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
				awaitSettled(t, "hijacked connection ignoring the drain")
				return c
			},
			duringDrain: func(t *testing.T, c *rawConn) {
				io.WriteString(c, "ping\n")
				line, err := c.r.ReadString('\n')
				require.NoError(t, err)
				assert.Equal(t, "ping\n", line, "the hijacked connection is left alone until the deadline")
			},
			cut: "1 connection cut",
		},
		{
			name:    "server-sent events that never end",
			handler: endlessEvents(settled, "server-sent events that never end"),
			begin: func(t *testing.T, p *process) *rawConn {
				c := dialRaw(t, p.addr)
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
				awaitSettled(t, "server-sent events that never end")
				return c
			},
			duringDrain: func(t *testing.T, c *rawConn) {
				line, err := c.r.ReadString('\n')
				require.NoError(t, err)
				assert.NotEmpty(t, line, "events still flow during the drain")
			},
			cut: "1 stream cut",
		},
	}
}

// endlessEvents is a handler streaming events until a write fails: it
// ignores the drain and the request context. It sends name on settled once
// the first event is out.
func endlessEvents(settled chan<- string, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if i == 0 {
				settled <- name
			}
		}
	}
}

func TestMisbehavingClientsAreCutAtTheDeadline(t *testing.T) {
	const delay, hooks = time.Second, time.Second
	// Two connections per case: the buffer never fills, and the hook never
	// holds net/http's accept loop.
	accepted := make(chan string, 16)
	acceptedHook := func(c net.Conn, state http.ConnState) {
		if state == http.StateNew {
			accepted <- c.RemoteAddr().String()
		}
	}
	for _, tt := range misbehavingClients(make(chan string, 1), accepted) {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("/ok", okHandler)
			mux.Handle("/", tt.handler)
			p := start(t, config{delay: delay, ready: true, hookTime: hooks, handler: mux, connState: acceptedHook})
			idle := dialRaw(t, p.addr)
			_, _, err := idle.get("/ok")
			require.NoError(t, err)
			c := tt.begin(t, p)

			p.sigterm(t)
			p.endDelay(t, delay)
			assert.True(t, idle.closedByPeer(), "the drain closes idle keep-alive connections at once")
			if tt.duringDrain != nil {
				tt.duringDrain(t, c)
			}
			select {
			case err := <-p.done:
				t.Fatalf("Run returned while a client held the drain: %v", err)
			default:
			}
			p.endDrain(t)
			err = p.wait(t)
			require.ErrorIs(t, err, lameduck.ErrCut)
			assert.Contains(t, err.Error(), "the drain deadline passed: "+tt.cut)

			// The server closed the connection: reading it ends.
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			_, err = io.Copy(io.Discard, c.r)
			if err != nil {
				assert.ErrorIs(t, err, syscall.ECONNRESET)
			}
		})
	}
}

func TestHTTP2StreamThatNeverEndsIsCutAtTheDeadline(t *testing.T) {
	const delay, hooks = time.Second, time.Second
	settled := make(chan string, 1)
	p := start(t, config{delay: delay, ready: true, hookTime: hooks, handler: endlessEvents(settled, "h2")})
	client := h2cClient()
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + p.addr + "/")
	require.NoError(t, err)
	require.Equal(t, 2, resp.ProtoMajor)
	select {
	case <-settled:
	case <-time.After(waitTimeout):
		t.Fatal("the stream never started")
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ended <- err
	}()

	p.sigterm(t)
	p.endDelay(t, delay)
	select {
	case err := <-ended:
		t.Fatalf("the stream ended before the deadline: %v", err)
	case err := <-p.done:
		t.Fatalf("Run returned while the stream went on: %v", err)
	default:
	}
	p.endDrain(t)
	err = p.wait(t)
	require.ErrorIs(t, err, lameduck.ErrCut)
	assert.Contains(t, err.Error(), "the drain deadline passed: 1 stream cut")
	select {
	case err := <-ended:
		assert.Error(t, err, "the client sees the stream cut, not a clean end")
	case <-time.After(waitTimeout):
		t.Fatal("the client's stream never ended")
	}
}

func TestServeFailingAtStartShutsTheProcessDown(t *testing.T) {
	serverTLS, _ := tlsConfig(t)
	// net/http refuses, when Serve starts, an HTTP/2 server whose cipher
	// suites lack the one HTTP/2 requires.
	serverTLS.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}
	p := start(t, config{tls: serverTLS, handler: okHandler})
	err := p.wait(t)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "httpserver: serving "+p.addr)
	assert.Contains(t, err.Error(), "HTTP/2-required")
	assert.NotErrorIs(t, err, lameduck.ErrCut)
	_, err = net.DialTimeout("tcp", p.addr, waitTimeout)
	require.Error(t, err, "the listener is closed")
	assert.True(t, strings.Contains(err.Error(), "refused"), err.Error())
}

func TestHTTP2ClientThatNeitherAcknowledgesNorClosesIsEndedAfterABoundedWait(t *testing.T) {
	p := start(t, config{delay: time.Second, handler: okHandler, ready: true})
	h := dialH2C(t, p.addr)
	h.get(t, 1)
	for f := h.read(t); !(f.typ == frameData && f.flags&flagEndStream != 0); f = h.read(t) {
	}
	p.sigterm(t)
	p.endDelay(t, time.Second)
	drainStart := time.Now()
	// The client reads, acknowledges no PING, and never closes its end.
	var goAways int
	for {
		f, err := h.readFrame()
		if err != nil {
			require.ErrorIs(t, err, io.EOF, "the server half-closes the connection")
			break
		}
		if f.typ == frameGoAway {
			goAways++
		}
	}
	assert.Equal(t, 2, goAways, "the graceful GOAWAY, then the final one")
	require.NoError(t, p.wait(t), "the connection is not counted as cut")
	// A second for the acknowledgement, a second for the client to
	// close, and slack for a loaded machine.
	assert.Less(t, time.Since(drainStart), 4*time.Second)
}
