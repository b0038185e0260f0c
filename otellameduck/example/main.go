// Command example is a web server that exports its shutdown through
// OpenTelemetry, over OTLP/HTTP, to a collector: lameduck's metrics and the
// shutdown's span, the final values flushed before Run returns.
//
// The application, on -addr:
//
//	GET /           200 "ok"
//	GET /?delay=D   200 "ok" after D, a Go duration such as 150ms (at most 10m)
//
// The admin listener, on -admin-addr, answers the probes (/readyz, /livez)
// from start to exit.
//
// The exporters are configured as OpenTelemetry's are everywhere, by the
// environment: OTEL_EXPORTER_OTLP_ENDPOINT (http://localhost:4318 by
// default), OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, and the other
// OTEL_EXPORTER_OTLP_* variables. Metrics are exported every minute
// (OTEL_METRIC_EXPORT_INTERVAL), spans in batches: the end of a shutdown is
// exported by the flush that otellameduck makes as Run enters the stopped
// phase, not by either.
//
// Usage:
//
//	example [-addr :8080] [-admin-addr :8081] [-drain-delay 5s] [-grace-period 30s]
//
// On SIGTERM (or SIGINT) it goes through lameduck's shutdown and exits: 0
// after a clean drain, 1 when something was cut at the deadline or a port is
// busy, 2 on bad flags or exporters that cannot be created. Watch it, with a
// collector listening for OTLP/HTTP on localhost:4318:
//
//	go run ./example &
//	curl -s 'localhost:8080/?delay=3s' & sleep 1; kill -TERM %1
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

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/otellameduck"
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
	adminAddr := fs.String("admin-addr", ":8081", "`address` to serve the probes on, through the drain")
	drainDelay := fs.Duration("drain-delay", lameduck.DefaultDrainDelay, "how long to keep serving after SIGTERM while load balancers catch up")
	gracePeriod := fs.Duration("grace-period", lameduck.DefaultGracePeriod, "the pod's terminationGracePeriodSeconds")
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

	ctx := context.Background()
	metrics, err := otlpmetrichttp.New(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "example: the OTLP metric exporter: %v\n", err)
		return 2
	}
	spans, err := otlptracehttp.New(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "example: the OTLP span exporter: %v\n", err)
		return 2
	}
	res := resource.Default() // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics)))
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(spans))
	// After Run, not in an OnShutdown hook: otellameduck flushes both as
	// Run enters the stopped phase, and hooks run before it. By then
	// everything is exported, and Shutdown only stops the exporters.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := errors.Join(mp.Shutdown(ctx), tp.Shutdown(ctx)); err != nil {
			logger.Warn("shutting the OpenTelemetry providers down", "error", err)
		}
	}()

	tel := otellameduck.New(otellameduck.WithMeterProvider(mp), otellameduck.WithTracerProvider(tp))
	ld, err := lameduck.New(
		lameduck.WithDrainDelay(*drainDelay),
		lameduck.WithGracePeriod(*gracePeriod),
		lameduck.WithLogger(logger),
	)
	if err != nil {
		fmt.Fprintf(stderr, "example: %v\n", err)
		return 2
	}
	if err := tel.Instrument(ld); err != nil {
		fmt.Fprintf(stderr, "example: %v\n", err)
		return 2
	}
	ld.Register(httpserver.New(&http.Server{
		Addr:              *addr,
		Handler:           http.HandlerFunc(app),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}))
	httpserver.Admin(ld, *adminAddr, nil)

	ld.MarkReady()
	if err := ld.Run(ctx); err != nil {
		logger.Error("exiting", "error", err)
		return 1
	}
	return 0
}
