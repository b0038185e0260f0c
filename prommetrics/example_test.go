package prommetrics_test

import (
	"context"
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/prommetrics"
)

// Metrics on the admin listener, which answers through the drain, so that
// the shutdown itself can be scraped.
func ExampleNewCollector() {
	ld, err := lameduck.New()
	if err != nil {
		log.Fatal(err)
	}
	ld.Register(httpserver.New(&http.Server{Addr: ":8080", Handler: http.DefaultServeMux}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), prommetrics.NewCollector(ld))
	httpserver.Admin(ld, ":8081", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// With the global registry, as promhttp.Handler serves it.
func ExampleNewCollector_defaultRegistry() {
	ld, err := lameduck.New()
	if err != nil {
		log.Fatal(err)
	}
	prometheus.MustRegister(prommetrics.NewCollector(ld))
	httpserver.Admin(ld, ":8081", promhttp.Handler())
}
