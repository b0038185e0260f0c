// Command otel is an HTTP service that exports its shutdown through
// OpenTelemetry, as a user of lameduck writes one: it imports lameduck,
// httpserver, otellameduck and the OpenTelemetry SDK. (A real service adds
// an exporter to the providers, such as OTLP's.)
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net/http"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/otellameduck"
)

func main() {
	addr := flag.String("addr", ":8080", "address to serve on")
	adminAddr := flag.String("admin-addr", ":8081", "address to serve /readyz and /livez on")
	delay := flag.Duration("drain-delay", lameduck.DefaultDrainDelay, "drain delay")
	flag.Parse()
	mp, tp := sdkmetric.NewMeterProvider(), sdktrace.NewTracerProvider()
	tel := otellameduck.New(otellameduck.WithMeterProvider(mp), otellameduck.WithTracerProvider(tp))
	ld, err := lameduck.New(lameduck.WithDrainDelay(*delay))
	if err != nil {
		log.Fatal(err)
	}
	if err := tel.Instrument(ld); err != nil {
		log.Fatal(err)
	}
	ld.Register(httpserver.New(&http.Server{
		Addr:              *addr,
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 10 * time.Second,
	}))
	httpserver.Admin(ld, *adminAddr, nil)
	ld.MarkReady()
	err = ld.Run(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	mp.Shutdown(ctx) // after Run: otellameduck has flushed both already
	tp.Shutdown(ctx)
	if err != nil {
		log.Fatal(err)
	}
}
