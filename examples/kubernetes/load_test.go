package kubernetes

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck/internal/rollout"
)

// loadEnv, when set, makes the test binary a load generator instead of a
// test run: the cluster test starts it inside the node's network namespace,
// where a Service's cluster IP is routed by kube-proxy's rules, with the
// JSON of a loadConfig in this variable.
const loadEnv = "LAMEDUCK_K8S_LOAD"

// loadConfig is the load the generator sends.
type loadConfig struct {
	Kind      string        // "http1" or "grpc"
	Addr      string        // the Service's cluster IP and port
	KeepAlive int           // clients that keep one connection for as long as the server lets them
	Fresh     int           // clients that open a new connection for every request: arrivals throughout
	Pause     time.Duration // between two requests of a client
	Timeout   time.Duration // per request
}

// loadFailure is one failed request.
type loadFailure struct {
	At     time.Time
	Client string // "keepalive" or "fresh"
	Kind   string
	Err    string
}

// loadReport is a line the generator writes on its stdout: a progress line
// every half second, and a final one with the failures once its stdin is
// closed.
type loadReport struct {
	OK, Failed int64
	Final      bool
	Failures   []loadFailure `json:",omitempty"`
}

// maxFailures bounds the failures a report lists; every failure is counted.
const maxFailures = 200

// runLoad runs the load described by cfg (JSON) until in reaches its end,
// reporting on out.
func runLoad(cfg string, in io.Reader, out, errOut io.Writer) int {
	var c loadConfig
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		fmt.Fprintf(errOut, "load: %s: %v\n", loadEnv, err)
		return 2
	}
	if ip, _, err := net.SplitHostPort(c.Addr); err != nil || net.ParseIP(ip) == nil {
		fmt.Fprintf(errOut, "load: the address %q is not IP:port\n", c.Addr)
		return 2
	}
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		failures   []loadFailure
		wg         sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	fail := func(client string, err error) {
		failed.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < maxFailures {
			kind := rollout.KindOf(err).String()
			if s, isStatus := status.FromError(err); isStatus {
				kind = "grpc " + s.Code().String()
			}
			failures = append(failures, loadFailure{At: time.Now(), Client: client, Kind: kind, Err: err.Error()})
		}
	}
	// loop runs one client: do until the end, pausing between requests.
	loop := func(client string, do func(context.Context) error, done func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done()
			t := time.NewTimer(0)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				err := do(ctx)
				switch {
				case ctx.Err() != nil:
					return // interrupted by the end of the load, not the server's failure
				case err != nil:
					fail(client, err)
				default:
					ok.Add(1)
				}
				t.Reset(c.Pause)
			}
		}()
	}

	switch c.Kind {
	case "http1":
		// rollout.HTTP1Client never retries, so that every failure shows
		// (net/http's client replays an idempotent request whose reused
		// connection broke).
		for range c.KeepAlive {
			hc := &rollout.HTTP1Client{Addr: c.Addr, Timeout: c.Timeout}
			loop("keepalive", func(ctx context.Context) error { _, err := hc.Get(ctx); return err }, func() { hc.Close() })
		}
		for range c.Fresh {
			loop("fresh", func(ctx context.Context) error {
				hc := &rollout.HTTP1Client{Addr: c.Addr, Timeout: c.Timeout}
				defer hc.Close()
				_, err := hc.Get(ctx)
				return err
			}, func() {})
		}
	case "grpc":
		call := func(ctx context.Context, cc *grpc.ClientConn) error {
			ctx, cancel := context.WithTimeout(ctx, c.Timeout)
			defer cancel()
			_, err := testpb.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{})
			return err
		}
		dial := func() (*grpc.ClientConn, error) {
			return grpc.NewClient("passthrough:///"+c.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
		for range c.KeepAlive {
			cc, err := dial()
			if err != nil {
				fmt.Fprintf(errOut, "load: %v\n", err)
				cancel()
				return 1
			}
			loop("keepalive", func(ctx context.Context) error { return call(ctx, cc) }, func() { cc.Close() })
		}
		for range c.Fresh {
			loop("fresh", func(ctx context.Context) error {
				cc, err := dial()
				if err != nil {
					return err
				}
				defer cc.Close()
				return call(ctx, cc)
			}, func() {})
		}
	default:
		fmt.Fprintf(errOut, "load: unknown kind %q\n", c.Kind)
		cancel()
		return 2
	}

	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	report := func(r loadReport) {
		encMu.Lock()
		defer encMu.Unlock()
		enc.Encode(r)
	}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				report(loadReport{OK: ok.Load(), Failed: failed.Load()})
			}
		}
	}()
	// The end of stdin (the test closing it, or dying) ends the load.
	io.Copy(io.Discard, bufio.NewReader(in))
	cancel()
	wg.Wait()
	<-progressDone
	mu.Lock()
	defer mu.Unlock()
	report(loadReport{OK: ok.Load(), Failed: failed.Load(), Final: true, Failures: failures})
	return 0
}

// errNoFinal is returned when the generator exited without its final
// report.
var errNoFinal = errors.New("the load generator ended without its final report")
