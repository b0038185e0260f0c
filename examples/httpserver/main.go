// Command httpserver is a web server that goes through a Kubernetes rolling
// update without failing a request: the example behind lameduck's README.
//
// It serves, on one port, HTTP/1.1 and HTTP/2 with prior knowledge (h2c),
// or, given -tls-cert and -tls-key, HTTP/1.1 and HTTP/2 over TLS (h2c is
// then off):
//
//	GET /           200 "ok"
//	GET /?delay=D   200 "ok" after D, a Go duration such as 150ms; 400 if D is not one
//	GET /readyz     the readiness probe: 503 until ready, 200, 503 from SIGTERM on
//	GET /livez      the liveness probe: 200 while the process runs
//
// With -admin-addr, it also answers /readyz and /livez on that address, an
// admin listener that stays open through the drain delay and the drain and
// closes only as the process exits: probes there get an answer (503) instead
// of "connection refused" once the application's port has closed.
//
// Usage:
//
//	httpserver [-addr :8080] [-admin-addr ADDR] [-drain-delay 5s] [-drain-quiet 0 -drain-min 0] [-grace-period 30s] [-init-delay 0] [-tls-cert FILE -tls-key FILE]
//
// With -drain-quiet, the drain delay is adaptive (see
// lameduck.WithAdaptiveDrainDelay): it lasts at most -drain-delay, and ends
// sooner on evidence that routing has caught up. In Kubernetes, that is
// the pod's EndpointSlices no longer routing to it, plus
// [lameduck.EndpointsAllowance] for kube-proxy; elsewhere, or without the permission to watch them, at least
// -drain-min (0: 3 s). Either way not before no new connection has
// arrived for -drain-quiet. The line logged when the delay ends says what
// ended it and when the last new connection arrived after the signal.
//
// -tls-cert and -tls-key name PEM files, a certificate (chain) and its
// private key, as crypto/tls.LoadX509KeyPair reads them; give both or
// neither. The port then serves HTTP/1.1 and HTTP/2 over TLS, and no h2c.
//
// On SIGTERM (or SIGINT) it turns readiness off, keeps serving for the drain
// delay while telling keep-alive clients to reconnect elsewhere, stops
// accepting, waits for requests in flight, and exits: 0 after a clean drain,
// 1 when something had to be cut at the deadline or the port is busy, 2 on
// bad flags, a certificate or key that cannot be loaded included. A second
// signal exits at once.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// maxDelay bounds ?delay=, so that a request cannot hold a connection for
// longer than any grace period.
const maxDelay = 10 * time.Minute

// parseDelay reads the ?delay= parameter: empty means no delay.
func parseDelay(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("delay %q is not a Go duration such as 150ms or 2s", truncate(s, 16))
	case d < 0:
		return 0, fmt.Errorf("delay %v is negative", d)
	case d > maxDelay:
		return 0, fmt.Errorf("delay %v is longer than the maximum of %v", d, maxDelay)
	}
	return d, nil
}

// truncate shortens s to n bytes, so that an error message quoting it stays
// short whatever the request carried.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// app answers / with "ok", after ?delay= if given.
func app(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	d, err := parseDelay(r.URL.Query().Get("delay"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done(): // the client left, or the deadline cut the request
			return
		}
	}
	io.WriteString(w, "ok")
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "address to serve the app and the probes on")
	drainDelay := fs.Duration("drain-delay", lameduck.DefaultDrainDelay, "how long to keep serving after SIGTERM while load balancers catch up; with -drain-quiet, the longest")
	drainQuiet := fs.Duration("drain-quiet", 0, "end the drain delay once no new connection arrived for this long (0: a fixed delay)")
	drainMin := fs.Duration("drain-min", 0, "with -drain-quiet, the shortest drain delay when the cluster gives no evidence of routing (0: 3s, lameduck.DefaultMinDrainDelay)")
	gracePeriod := fs.Duration("grace-period", lameduck.DefaultGracePeriod, "the pod's terminationGracePeriodSeconds")
	initDelay := fs.Duration("init-delay", 0, "simulated initialisation before the server turns ready")
	adminAddr := fs.String("admin-addr", "", "address to serve the probes on, through the drain, as well; empty for none")
	certFile := fs.String("tls-cert", "", "PEM `file` of the TLS certificate: serve HTTP/1.1 and HTTP/2 over TLS (needs -tls-key)")
	keyFile := fs.String("tls-key", "", "PEM `file` of the TLS certificate's private key (needs -tls-cert)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "httpserver: unexpected arguments %q; see -help\n", fs.Args())
		return 2
	}
	if *initDelay < 0 {
		fmt.Fprintf(stderr, "httpserver: -init-delay is %v; it must be zero or more\n", *initDelay)
		return 2
	}
	if (*certFile == "") != (*keyFile == "") {
		fmt.Fprintln(stderr, "httpserver: -tls-cert and -tls-key go together; give both or neither")
		return 2
	}
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 10 * time.Second, // slow clients cannot hold connections open for free
		IdleTimeout:       2 * time.Minute,
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "httpserver: loading the TLS certificate: %v\n", err)
			return 2
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetHTTP2(true)
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	delay := lameduck.WithDrainDelay(*drainDelay)
	if *drainQuiet > 0 {
		delay = lameduck.WithAdaptiveDrainDelay(*drainMin, *drainQuiet, *drainDelay)
	}
	ld, err := lameduck.New(
		delay,
		lameduck.WithGracePeriod(*gracePeriod),
		lameduck.WithLogger(logger),
	)
	if err != nil {
		fmt.Fprintf(stderr, "httpserver: %v\n", err)
		return 2
	}

	mux := http.NewServeMux()
	mux.Handle("/readyz", ld.ReadinessHandler())
	mux.Handle("/livez", ld.LivenessHandler())
	mux.HandleFunc("/", app)
	srv.Handler = mux
	ld.Register(httpserver.New(srv))
	if *adminAddr != "" {
		httpserver.Admin(ld, *adminAddr, nil)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		// Initialisation runs while the listener is already bound: the
		// readiness probe answers 503 "starting" meanwhile.
		t := time.NewTimer(*initDelay)
		defer t.Stop()
		select {
		case <-t.C:
			ld.MarkReady()
		case <-ctx.Done():
		}
	}()

	if err := ld.Run(ctx); err != nil {
		if errors.Is(err, lameduck.ErrCut) {
			logger.Error("shutdown cut in-flight work", "error", err)
		} else {
			logger.Error("exiting", "error", err)
		}
		return 1
	}
	return 0
}
