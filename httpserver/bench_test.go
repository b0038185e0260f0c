package httpserver_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

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
