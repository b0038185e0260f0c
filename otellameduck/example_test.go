package otellameduck_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/otellameduck"
)

// A service exporting its shutdown through the OpenTelemetry SDK. Here the
// exporters keep what they receive in memory; a service would use OTLP
// exporters (go.opentelemetry.io/otel/exporters/otlp/...) to a collector,
// as otellameduck/example does. The periodic reader would export in an
// hour and the batch span processor in a minute: what is printed is what
// the flush before Run's return sent.
func Example() {
	metrics := &exporter{}
	spans := tracetest.NewInMemoryExporter()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics)))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans))
	// Shut the providers down after Run, not in an OnShutdown hook.
	defer mp.Shutdown(context.Background())
	defer tp.Shutdown(context.Background())

	tel := otellameduck.New(otellameduck.WithMeterProvider(mp), otellameduck.WithTracerProvider(tp))
	signals := make(chan os.Signal, 1)
	ld, err := lameduck.New(
		lameduck.WithSignalChannel(signals), // a SIGTERM, in a real service
		lameduck.WithDrainDelay(0),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := tel.Instrument(ld); err != nil {
		log.Fatal(err)
	}
	ld.Register(httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}))
	ld.MarkReady()
	go func() {
		<-ld.Entered(lameduck.PhaseServing)
		signals <- os.Interrupt
	}()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}

	final := metrics.last()
	fmt.Println("stopped:", final["lameduck.phase.current{lameduck.phase.name=stopped}"])
	fmt.Println("delay ended:", final["lameduck.drain_delay.ended{lameduck.drain_delay.reason=fixed}"])
	for _, s := range spans.GetSpans() {
		fmt.Println("span:", s.Name)
		for _, e := range s.Events {
			fmt.Println("  event:", e.Name)
		}
	}
	// Output:
	// stopped: 1
	// delay ended: 1
	// span: lameduck.shutdown
	//   event: lame duck
	//   event: draining
	//   event: stopping
	//   event: stopped
}
