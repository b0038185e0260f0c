// Command metrics is an HTTP service that exports its shutdown to
// Prometheus, as a user of lameduck writes one: it imports lameduck,
// httpserver and prommetrics.
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/prommetrics"
)

func main() {
	addr := flag.String("addr", ":8080", "address to serve on")
	adminAddr := flag.String("admin-addr", ":8081", "address to serve /readyz, /livez and /metrics on")
	delay := flag.Duration("drain-delay", lameduck.DefaultDrainDelay, "drain delay")
	flag.Parse()
	ld, err := lameduck.New(lameduck.WithDrainDelay(*delay))
	if err != nil {
		log.Fatal(err)
	}
	ld.Register(httpserver.New(&http.Server{
		Addr:              *addr,
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 10 * time.Second,
	}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(prommetrics.NewCollector(ld))
	httpserver.Admin(ld, *adminAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
