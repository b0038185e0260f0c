package httpserver_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

// benchWriter is a ResponseWriter that keeps nothing; it can be hijacked,
// like net/http's HTTP/1 writer, so the adapter takes its HTTP/1 path.
type benchWriter struct{ h http.Header }

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(int)             {}
func (w *benchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, http.ErrNotSupported
}

// benchH2Writer has no Hijack, like net/http's HTTP/2 writer.
type benchH2Writer struct{ h http.Header }

func (w *benchH2Writer) Header() http.Header         { return w.h }
func (w *benchH2Writer) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchH2Writer) WriteHeader(int)             {}

var okBody = []byte("ok")

// BenchmarkRequestPath measures what the adapter adds to each request:
// counting it in flight and wrapping its ResponseWriter. "bare" is the
// handler alone, the baseline of the same run.
func BenchmarkRequestPath(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write(okBody)
	})
	srv := &http.Server{Handler: handler}
	httpserver.New(srv) // wraps srv.Handler
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, bc := range []struct {
		name string
		h    http.Handler
		w    http.ResponseWriter
	}{
		{"bare", handler, &benchWriter{h: http.Header{}}},
		{"adapter/http1", srv.Handler, &benchWriter{h: http.Header{}}},
		{"adapter/http2", srv.Handler, &benchH2Writer{h: http.Header{}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(bc.w, r)
			}
		})
	}
}

// BenchmarkExitLatency measures the time from the last response of a
// drain to the server having shut down, for a request that was in flight
// for hold: lameduck, against net/http's Shutdown in the same run.
func BenchmarkExitLatency(b *testing.B) {
	const hold = 100 * time.Millisecond
	for _, proto := range []string{"http1", "h2c"} {
		for _, server := range []string{"Shutdown", "lameduck"} {
			b.Run(proto+"/"+server, func(b *testing.B) {
				var total time.Duration
				for b.Loop() {
					total += exitLatency(b, server == "lameduck", proto == "h2c", hold)
				}
				b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/exit")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// exitLatency serves one request that takes hold, starts the shutdown
// while it is in flight, and returns the time from its response to the
// end of the shutdown.
func exitLatency(b *testing.B, lameduckServer, h2c bool, hold time.Duration) time.Duration {
	arrived := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		time.Sleep(hold) // the request's own work
		io.WriteString(w, "ok")
	})
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: handler, ErrorLog: quiet}
	var addr string
	var shutdown func() // starts the shutdown
	done := make(chan struct{})
	if lameduckServer {
		signals := make(chan os.Signal, 1)
		serving := make(chan struct{})
		ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithSignalChannel(signals), lameduck.WithLogger(discard),
			lameduck.WithDrainDelay(0), lameduck.WithObserver(func(e lameduck.Event) {
				if e.Phase == lameduck.PhaseServing {
					close(serving)
				}
			}))
		if err != nil {
			b.Fatal(err)
		}
		s := httpserver.New(srv)
		ld.Register(s)
		go func() { ld.Run(context.Background()); close(done) }()
		<-serving
		addr = s.Addr().String()
		shutdown = func() { signals <- os.Interrupt }
	} else {
		addr = serveBare(b, srv)
		shutdown = func() { go func() { srv.Shutdown(context.Background()); close(done) }() }
	}

	client := &http.Client{Transport: &http.Transport{}}
	if h2c {
		client = h2cClient()
	}
	defer client.CloseIdleConnections()
	responded := make(chan time.Time, 1)
	go func() {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			b.Error(err)
			responded <- time.Now()
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		responded <- time.Now()
	}()
	<-arrived
	shutdown()
	last := <-responded
	<-done
	latency := time.Since(last)
	if !lameduckServer {
		srv.Close()
	}
	return latency
}

// serveBare serves srv without the adapter, on HTTP/1.1 and h2c like the
// adapter does, and returns its address.
func serveBare(b *testing.B, srv *http.Server) string {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	return ln.Addr().String()
}

// BenchmarkLoopback measures whole requests over keep-alive loopback
// connections, HTTP/1.1 and h2c, through a bare http.Server and through the
// adapter, in the same run: what the adapter costs a real request.
func BenchmarkLoopback(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(okBody) })
	for _, proto := range []string{"http1", "h2c"} {
		for _, name := range []string{"bare", "adapter"} {
			b.Run(proto+"/"+name, func(b *testing.B) {
				srv := &http.Server{Addr: "127.0.0.1:0", Handler: handler, ErrorLog: quiet}
				var addr string
				if name == "adapter" {
					s := httpserver.New(srv)
					if err := s.Listen(); err != nil {
						b.Fatal(err)
					}
					go s.Serve()
					defer s.Close()
					addr = s.Addr().String()
				} else {
					addr = serveBare(b, srv)
					defer srv.Close()
				}
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
				if proto == "h2c" {
					client = h2cClient()
				}
				defer client.CloseIdleConnections()
				url := "http://" + addr + "/"
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := client.Get(url)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			})
		}
	}
}
