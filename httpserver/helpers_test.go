package httpserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/fakeclock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on an event, so that a bug fails a test
// instead of hanging the suite.
const waitTimeout = 10 * time.Second

var discard = slog.New(slog.DiscardHandler)

// process is a Coordinator running one httpserver.Server on a loopback
// port, driven by a fake clock and fake signals.
type process struct {
	ld      *lameduck.Coordinator
	srv     *httpserver.Server
	http    *http.Server
	clock   *fakeclock.Clock
	signals chan os.Signal
	events  chan lameduck.Event
	done    chan error
	addr    string
	cfg     config
}

type config struct {
	delay     time.Duration
	handler   http.Handler
	tls       *tls.Config
	ready     bool
	connState func(net.Conn, http.ConnState) // set on the http.Server before New
	hookTime  time.Duration                  // WithHookTimeout; zero for the default
	opts      []lameduck.Option              // more options for New
}

const gracePeriod = 30 * time.Second

// start runs a process and waits until it serves.
func start(t testing.TB, cfg config) *process {
	t.Helper()
	p := &process{cfg: cfg, clock: fakeclock.New(), signals: make(chan os.Signal, 2), events: make(chan lameduck.Event, 100), done: make(chan error, 1)}
	opts := []lameduck.Option{
		lameduck.WithSignals(), lameduck.WithSignalChannel(p.signals), p.clock.Option(),
		lameduck.WithLogger(discard), lameduck.WithDrainDelay(cfg.delay), lameduck.WithGracePeriod(gracePeriod),
	}
	if cfg.hookTime != 0 {
		opts = append(opts, lameduck.WithHookTimeout(cfg.hookTime))
	}
	opts = append(opts, cfg.opts...)
	ld, err := lameduck.New(opts...)
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) { p.events <- e })
	p.ld = ld
	mux := http.NewServeMux()
	mux.Handle("/readyz", ld.ReadinessHandler())
	if cfg.handler != nil {
		mux.Handle("/", cfg.handler)
	}
	p.http = &http.Server{Addr: "127.0.0.1:0", Handler: mux, TLSConfig: cfg.tls, ConnState: cfg.connState, ErrorLog: log.New(io.Discard, "", 0)}
	p.srv = httpserver.New(p.http)
	ld.Register(p.srv)
	if cfg.ready {
		ld.MarkReady()
	}
	go func() { p.done <- ld.Run(context.Background()) }()
	p.await(t, lameduck.PhaseServing)
	p.addr = p.srv.Addr().String()
	return p
}

// await waits for the process to enter phase.
func (p *process) await(t testing.TB, phase lameduck.Phase) lameduck.Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case e := <-p.events:
			if e.Phase == phase {
				return e
			}
		case <-timeout:
			t.Fatalf("phase %v never entered", phase)
		}
	}
}

// sigterm starts the shutdown and waits for the lame-duck phase.
func (p *process) sigterm(t testing.TB) {
	t.Helper()
	p.signals <- os.Interrupt
	p.await(t, lameduck.PhaseLameDuck)
}

// endDelay ends the drain delay and waits for the drain to begin.
func (p *process) endDelay(t testing.TB, delay time.Duration) {
	t.Helper()
	p.clock.Pass(t, delay)
	p.await(t, lameduck.PhaseDraining)
}

// endDrain moves the clock, once the drain has begun, to the drain
// deadline: the grace period minus the safety margin, the hook timeout and
// the delay.
func (p *process) endDrain(t testing.TB) {
	t.Helper()
	hooks := p.cfg.hookTime
	if hooks == 0 {
		hooks = lameduck.DefaultHookTimeout
	}
	p.clock.Pass(t, gracePeriod-lameduck.DefaultSafetyMargin-hooks-p.cfg.delay)
}

// wait returns what Run returned.
func (p *process) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
		return errors.New("unreachable")
	}
}

// rawConn is an HTTP/1.1 client on a bare TCP connection: unlike
// net/http's client it never retries, so it sees every failure.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// get sends a GET for path and reads the response.
func (c *rawConn) get(path string) (*http.Response, string, error) {
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

// closedByPeer reports whether the server has closed c: a read returns EOF.
func (c *rawConn) closedByPeer() bool {
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF)
}

// okHandler answers 200 "ok", after ?delay= if given.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
		time.Sleep(d)
	}
	io.WriteString(w, "ok")
})

// h2cClient is a net/http client speaking HTTP/2 with prior knowledge.
func h2cClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: waitTimeout}
}

// tlsConfig returns a server configuration with a fresh certificate, and a
// client configuration that trusts it.
func tlsConfig(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	pool := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	return &tls.Config{Certificates: []tls.Certificate{cert}}, &tls.Config{RootCAs: pool}
}
