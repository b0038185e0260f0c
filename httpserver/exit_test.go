package httpserver_test

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// promptExit bounds the time from the last response to the end of the
// shutdown: the shortest of the waits that net/http's timers would add,
// 500 ms after an HTTP/1 response carrying "Connection: close" (1 s after
// an HTTP/2 GOAWAY). Within it, the shutdown waited for none of them,
// which is what "right after" means here; the drain deadline is on the
// fake clock, so nothing else could end it. The shutdown itself takes
// about a millisecond, which leaves a loaded machine hundreds.
const promptExit = 500 * time.Millisecond

// protocolSetup is a way to speak to the server, with a client of Go's own.
type protocolSetup struct {
	name      string
	serverTLS *tls.Config // nil in the clear
	client    func() *http.Transport
	scheme    string
	proto     string // what the handler sees in r.Proto
}

func protocolSetups(t testing.TB) []protocolSetup {
	serverTLS := func() *tls.Config { server, _ := testnet.TLS(); return server }
	transport := func(tlsOn bool, set func(*http.Protocols)) func() *http.Transport {
		return func() *http.Transport {
			tr := &http.Transport{Protocols: new(http.Protocols)}
			if tlsOn {
				_, tr.TLSClientConfig = testnet.TLS()
			}
			set(tr.Protocols)
			return tr
		}
	}
	return []protocolSetup{
		{"http1", nil, transport(false, func(p *http.Protocols) { p.SetHTTP1(true) }), "http", "HTTP/1.1"},
		{"h2c", nil, transport(false, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }), "http", "HTTP/2.0"},
		{"https1", serverTLS(), transport(true, func(p *http.Protocols) { p.SetHTTP1(true) }), "https", "HTTP/1.1"},
		{"h2", serverTLS(), transport(true, func(p *http.Protocols) { p.SetHTTP2(true) }), "https", "HTTP/2.0"},
	}
}

func TestEveryProtocolExitsPromptlyAfterItsLastResponse(t *testing.T) {
	for _, tt := range protocolSetups(t) {
		t.Run(tt.name, func(t *testing.T) {
			h := newBlocking()
			mux := http.NewServeMux()
			mux.Handle("/", okHandler)
			mux.Handle("/slow", h)
			rec := newConnRecorder()
			p := start(t, config{delay: time.Second, handler: mux, ready: true, tls: tt.serverTLS, connState: rec.connState})
			base := tt.scheme + "://" + p.addr
			idle := &http.Client{Transport: tt.client(), Timeout: waitTimeout}
			defer idle.CloseIdleConnections()
			resp, local, _ := tracedGet(t, idle, base+"/")
			assert.Equal(t, tt.proto, resp.Proto)

			busy := &http.Client{Transport: tt.client(), Timeout: waitTimeout}
			defer busy.CloseIdleConnections()
			answered := make(chan error, 1)
			var answeredAt time.Time
			go func() {
				resp, err := busy.Get(base + "/slow")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				answeredAt = time.Now()
				answered <- err
			}()
			h.awaitArrival(t)

			// The idle client stays idle across the signal and the delay;
			// the request in flight is answered once the drain has begun.
			p.sigterm(t)
			p.endDelay(t, time.Second)
			close(h.release)
			require.NoError(t, await.Recv(t, answered, "the answer to the request in flight"), "the request in flight is answered in full")
			require.NoError(t, p.wait(t))
			assert.Less(t, time.Since(answeredAt), promptExit, "the shutdown ends right after the last response")
			rec.awaitClosed(t, local)
		})
	}
}

// requestView is what a handler sees of its request and response writer.
func requestView(w http.ResponseWriter, r *http.Request) string {
	view := fmt.Sprintf("proto=%s remote=%t", r.Proto, r.RemoteAddr != "")
	if r.TLS != nil {
		view += fmt.Sprintf(" tls=%t alpn=%q version=%x", r.TLS.HandshakeComplete, r.TLS.NegotiatedProtocol, r.TLS.Version)
	}
	rc := http.NewResponseController(w)
	view += fmt.Sprintf(" deadline=%v", rc.SetWriteDeadline(time.Now().Add(time.Minute)) == nil)
	if r.ProtoMajor == 1 && r.URL.Query().Has("hijack") {
		c, _, err := rc.Hijack()
		if err != nil {
			return view + " hijack=" + err.Error()
		}
		if _, ok := c.(*tls.Conn); ok {
			view += " hijacked=*tls.Conn"
		} else {
			view += " hijacked=net.Conn"
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(view), view)
		c.Close()
		return ""
	}
	return view
}

func TestHandlersSeeWhatTheyWouldWithoutTheAdapter(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if view := requestView(w, r); view != "" {
			io.WriteString(w, view)
		}
	})
	for _, tt := range protocolSetups(t) {
		t.Run(tt.name, func(t *testing.T) {
			var bareTLS *tls.Config
			if tt.serverTLS != nil {
				bareTLS = tt.serverTLS.Clone()
			}
			bare := &http.Server{Handler: handler, ErrorLog: quiet, TLSConfig: bareTLS, Protocols: new(http.Protocols)}
			bare.Protocols.SetHTTP1(true)
			bare.Protocols.SetHTTP2(true)
			bare.Protocols.SetUnencryptedHTTP2(true)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			if bareTLS != nil {
				go bare.ServeTLS(ln, "", "")
			} else {
				go bare.Serve(ln)
			}
			defer bare.Close()
			p := start(t, config{handler: handler, ready: true, tls: tt.serverTLS})

			client := &http.Client{Transport: tt.client(), Timeout: waitTimeout}
			defer client.CloseIdleConnections()
			get := func(url string) string {
				resp, err := client.Get(url)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				resp.Body.Close()
				return string(body)
			}
			for _, path := range []string{"/", "/?hijack"} {
				want := get(tt.scheme + "://" + ln.Addr().String() + path)
				assert.Equal(t, want, get(tt.scheme+"://"+p.addr+path), path)
			}
			p.sigterm(t)
			require.NoError(t, p.wait(t))
		})
	}
}

// readFrame reads the next frame from h, or returns the error that ended
// the connection.
func (h *rawH2) readFrame() (h2Frame, error) {
	h.SetReadDeadline(time.Now().Add(waitTimeout))
	var hdr [9]byte
	if _, err := io.ReadFull(h.r, hdr[:]); err != nil {
		return h2Frame{}, err
	}
	f := h2Frame{typ: hdr[3], flags: hdr[4], stream: binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff}
	f.payload = make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
	_, err := io.ReadFull(h.r, f.payload)
	return f, err
}

func TestStreamsRacingTheGoAwayAreServedOrRefusedBeforeTheyRun(t *testing.T) {
	var handled atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		io.WriteString(w, "ok")
	})
	p := start(t, config{delay: time.Second, handler: handler, ready: true})
	h := dialH2C(t, p.addr)
	h.get(t, 1)
	for f := h.read(t); !(f.typ == frameData && f.flags&flagEndStream != 0); f = h.read(t) {
	}

	p.sigterm(t)
	// The client opens a stream the moment the GOAWAY arrives, before it
	// has acknowledged the PING that follows: the server must serve it.
	// Then, as a client ignoring the GOAWAY would, it opens another once
	// that one is answered: the server serves it too, or refuses it, in
	// its final GOAWAY, without running it.
	var goAways []uint32 // their last stream IDs
	answered := map[uint32]bool{}
	next := uint32(3)
	for {
		f, err := h.readFrame()
		if err != nil {
			require.ErrorIs(t, err, io.EOF, "the server closes the connection cleanly")
			break
		}
		switch {
		case f.typ == frameGoAway:
			goAways = append(goAways, binary.BigEndian.Uint32(f.payload)&0x7fffffff)
			assert.Zero(t, binary.BigEndian.Uint32(f.payload[4:]), "NO_ERROR")
			if len(goAways) == 1 {
				h.get(t, next)
				next += 2
			}
		case f.typ == framePing && f.flags&flagAck == 0:
			h.write(t, framePing, flagAck, 0, f.payload)
		case f.typ == frameSettings && f.flags&flagAck == 0:
			h.write(t, frameSettings, flagAck, 0, nil)
		case f.typ == frameData && f.flags&flagEndStream != 0:
			answered[f.stream] = true
			if f.stream == 3 {
				h.get(t, next)
				next += 2
			}
		}
	}
	require.Len(t, goAways, 2, "a graceful GOAWAY, then the final one")
	assert.Equal(t, uint32(1<<31-1), goAways[0])
	last := goAways[1]
	assert.True(t, answered[3], "the stream racing the GOAWAY is served")
	assert.GreaterOrEqual(t, last, uint32(3))
	for id := uint32(3); id < next; id += 2 {
		assert.Equal(t, id <= last, answered[id], "stream %d: served if and only if the final GOAWAY names it", id)
	}
	assert.Equal(t, int32(1+(last-1)/2), handled.Load(), "no stream refused by the final GOAWAY ran")
	h.Close()
	p.endDelay(t, time.Second)
	require.NoError(t, p.wait(t))
}

func TestHTTP1RequestsRacingTheIdleCloseAreServedOrNeverRead(t *testing.T) {
	const conns = 50
	var handled atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		io.WriteString(w, "ok")
	})
	p := start(t, config{delay: time.Second, handler: handler, ready: true})
	idle := make([]*rawConn, conns)
	for i := range idle {
		idle[i] = dialRaw(t, p.addr)
		_, _, err := idle[i].get("/")
		require.NoError(t, err)
	}
	handled.Store(0)
	p.sigterm(t)

	// Every client sends its next request the moment the drain begins,
	// as it closes idle connections.
	var served atomic.Int32
	var wg sync.WaitGroup
	race := make(chan struct{})
	for _, c := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-race
			resp, body, err := c.get("/")
			if err == nil {
				assert.Equal(t, "ok", body)
				assert.True(t, resp.Close)
				served.Add(1)
				return
			}
			// Not served: the connection ended before any byte of a
			// response, which tells the client it may retry.
			var ne net.Error
			assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "reset") ||
				strings.Contains(err.Error(), "broken pipe") || (errors.As(err, &ne) && !ne.Timeout()), "%v", err)
		}()
	}
	p.clock.Pass(t, time.Second)
	close(race)
	p.await(t, lameduck.PhaseDraining)
	await.Wait(t, &wg, "the racing clients")
	require.NoError(t, p.wait(t))
	assert.Equal(t, served.Load(), handled.Load(), "every request the server read was answered")
	t.Logf("%d of %d racing requests served, the others never read", served.Load(), conns)
}
