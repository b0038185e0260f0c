// Command example is a web server whose shutdown can be watched: beside the
// application's port, an admin listener answers the probes and serves
// Prometheus metrics, lameduck's included, from start to exit, the drain
// delay and the drain included.
//
// The application, on -addr:
//
//	GET /           200 "ok"
//	GET /?delay=D   200 "ok" after D, a Go duration such as 150ms (at most 10m)
//
// The admin listener, on -admin-addr:
//
//	GET /readyz     the readiness probe: 503 until ready, 200, 503 from SIGTERM on
//	GET /livez      the liveness probe: 200 while the process runs
//	GET /metrics    Prometheus metrics: lameduck_*, go_*, process_*
//
// Usage:
//
//	example [-addr :8080] [-admin-addr :8081] [-drain-delay 5s] [-grace-period 30s] [-final-scrape]
//
// With -final-scrape (lameduck.WithFinalScrape), the admin listener stays up
// after the shutdown until /metrics has been scraped once with the final
// values, at most until the drain deadline: without it, the last values of a
// shutdown reach Prometheus only if a scrape happens in the milliseconds of
// the drain.
//
// On SIGTERM (or SIGINT) it goes through lameduck's shutdown and exits: 0
// after a clean drain, 1 when something was cut at the deadline or a port is
// busy, 2 on bad flags. Watch it:
//
//	go run ./example &
//	curl -s 'localhost:8080/?delay=20s' & sleep 1; kill -TERM %1
//	curl -s localhost:8081/metrics | grep ^lameduck_
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/prommetrics"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// maxDelay bounds ?delay=, so that a request cannot hold a connection for
// longer than any grace period.
const maxDelay = 10 * time.Minute

// app answers / with "ok", after ?delay= if given.
func app(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	var d time.Duration
	if s := r.URL.Query().Get("delay"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 || d > maxDelay {
			http.Error(w, "delay must be a Go duration from 0 to 10m, such as 150ms", http.StatusBadRequest)
			return
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		io.WriteString(w, "ok")
	case <-r.Context().Done(): // the client left, or the deadline cut the request
	}
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "`address` to serve the application on")
	adminAddr := fs.String("admin-addr", ":8081", "`address` to serve the probes and /metrics on, through the drain")
	drainDelay := fs.Duration("drain-delay", lameduck.DefaultDrainDelay, "how long to keep serving after SIGTERM while load balancers catch up")
	gracePeriod := fs.Duration("grace-period", lameduck.DefaultGracePeriod, "the pod's terminationGracePeriodSeconds")
	finalScrape := fs.Bool("final-scrape", false, "after the shutdown, keep serving /metrics until it has been scraped once, at most until the drain deadline")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "example: unexpected arguments %q; see -h\n", fs.Args())
		return 2
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	opts := []lameduck.Option{
		lameduck.WithDrainDelay(*drainDelay),
		lameduck.WithGracePeriod(*gracePeriod),
		lameduck.WithLogger(logger),
	}
	if *finalScrape {
		opts = append(opts, lameduck.WithFinalScrape())
	}
	ld, err := lameduck.New(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "example: %v\n", err)
		return 2
	}

	ld.Register(httpserver.New(&http.Server{
		Addr:              *addr,
		Handler:           http.HandlerFunc(app),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}))
	// A registry of its own rather than the global one: what is exported
	// is exactly what is registered here.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prommetrics.NewCollector(ld),
	)
	httpserver.Admin(ld, *adminAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		logger.Error("exiting", "error", err)
		return 1
	}
	return 0
}
