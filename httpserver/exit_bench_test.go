package httpserver_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/testnet"
)

// exitProtocols are the protocols the adapter serves, each with a client
// of Go's own: HTTP/1.1 and HTTP/2, in the clear and over TLS.
var exitProtocols = []string{"http1", "h2c", "https1", "h2"}

// exitScenario is what the clients do across the signal.
type exitScenario struct {
	name     string
	idle     int  // connections left idle after one request each
	inFlight bool // and a request in flight across the signal, answered after the delay
	// delay is the drain delay: long enough for the clients told to
	// leave during it to do so, as in a real rollout, whose delay is
	// seconds.
	delay time.Duration
}

var exitScenarios = []exitScenario{
	{"none", 0, false, 100 * time.Millisecond},
	{"idle", 1, false, 100 * time.Millisecond},
	{"idle+inflight", 1, true, 100 * time.Millisecond},
	{"idle1000", 1000, false, time.Second},
	{"idle5000", 5000, false, time.Second},
}

// BenchmarkExitLatency measures, for each protocol and what the clients
// do, the time from the end of the drain delay, or from the last response
// if it comes later, to the end of the shutdown: through lameduck, and
// through net/http's Shutdown called after the same delay, one of each per
// iteration, and reports both and their ratio.
//
//	go test -run '^$' -bench ExitLatency ./httpserver
func BenchmarkExitLatency(b *testing.B) {
	testnet.RaiseFileLimit(b, 2*5000+500)
	for _, proto := range exitProtocols {
		for _, sc := range exitScenarios {
			b.Run(proto+"/"+sc.name, func(b *testing.B) {
				var ld, sd time.Duration
				for b.Loop() {
					ld += exitAfterLastResponse(b, proto, sc, true)
					sd += exitAfterLastResponse(b, proto, sc, false)
				}
				b.ReportMetric(float64(ld.Microseconds())/float64(b.N)/1000, "lameduck-ms")
				b.ReportMetric(float64(sd.Microseconds())/float64(b.N)/1000, "Shutdown-ms")
				b.ReportMetric(float64(ld)/float64(sd), "ratio")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// exitAfterLastResponse runs one shutdown of a server with the clients of
// sc, and returns the time from max(end of the delay, last response) to
// the end of the shutdown.
func exitAfterLastResponse(b *testing.B, proto string, sc exitScenario, lameduckServer bool) time.Duration {
	var drainStart, exited, lastResponse time.Time
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.Query().Has("hold") {
			io.WriteString(w, "ok")
			return
		}
		// The request's own work, longer than the delay; then the whole
		// response goes out at once, when it is timed.
		time.Sleep(sc.delay + 20*time.Millisecond)
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
		w.(http.Flusher).Flush()
		lastResponse = time.Now()
	})
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: handler, ErrorLog: quiet}
	serverTLS, clientTLS := testnet.TLS()
	tlsOn := proto == "https1" || proto == "h2"
	if tlsOn {
		srv.TLSConfig = serverTLS
	}
	var addr string
	var terminate func() // starts the shutdown
	done := make(chan struct{})
	if lameduckServer {
		s := httpserver.New(srv)
		terminate = testnet.RunCoordinator(b, sc.delay, func(*lameduck.Coordinator) lameduck.Server { return s },
			&drainStart, &exited, done)
		addr = s.Addr().String()
	} else {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(tlsOn)
		p.SetUnencryptedHTTP2(!tlsOn)
		srv.Protocols = p
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		if tlsOn {
			go srv.ServeTLS(ln, "", "")
		} else {
			go srv.Serve(ln)
		}
		defer srv.Close()
		addr = ln.Addr().String()
		terminate = func() {
			go func() {
				time.Sleep(sc.delay) // the textbook delay
				drainStart = time.Now()
				srv.Shutdown(context.Background())
				exited = time.Now()
				close(done)
			}()
		}
	}
	url := "http://" + addr + "/"
	if tlsOn {
		url = "https://" + addr + "/"
	}

	idle := openIdle(b, proto, clientTLS, url, sc.idle)
	defer func() {
		for _, tr := range idle {
			tr.CloseIdleConnections()
		}
	}()
	answered := make(chan struct{})
	if sc.inFlight {
		tr := exitTransport(proto, clientTLS)
		defer tr.CloseIdleConnections()
		started := make(chan struct{})
		go func() {
			defer close(answered)
			req, _ := http.NewRequest(http.MethodGet, url+"?hold", nil)
			close(started)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
		await.Recv(b, started, "the request in flight to be sent")
		// Sent before the signal: answered after the delay, it holds the
		// drain.
		time.Sleep(5 * time.Millisecond)
	} else {
		close(answered)
	}
	terminate()
	await.Recv(b, answered, "the answer to the request in flight")
	await.Recv(b, done, "the shutdown to end")
	return exited.Sub(later(drainStart, lastResponse))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// exitTransport is a client of Go's own for proto, with a connection pool
// of its own.
func exitTransport(proto string, clientTLS *tls.Config) *http.Transport {
	tr := &http.Transport{TLSClientConfig: clientTLS, Protocols: new(http.Protocols)}
	switch proto {
	case "http1", "https1":
		tr.Protocols.SetHTTP1(true)
	case "h2c":
		tr.Protocols.SetUnencryptedHTTP2(true)
	case "h2":
		tr.Protocols.SetHTTP2(true)
	}
	return tr
}

// openIdle opens n connections to url, one per client, sends a request on
// each and leaves them idle in their clients' pools.
func openIdle(b *testing.B, proto string, clientTLS *tls.Config, url string, n int) []*http.Transport {
	trs := make([]*http.Transport, n)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const dialers = 32 // within the listen backlog
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; i < n; i += dialers {
				trs[i] = exitTransport(proto, clientTLS)
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				resp, err := trs[i].RoundTrip(req)
				if err != nil {
					select {
					case errs <- fmt.Errorf("idle connection %d: %w", i, err):
					default:
					}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return trs
}
