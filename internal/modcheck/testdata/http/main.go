// Command http is an HTTP service as a user of lameduck writes one: it
// imports lameduck and httpserver, nothing else of the project.
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

func main() {
	addr := flag.String("addr", ":8080", "address to serve on")
	delay := flag.Duration("drain-delay", lameduck.DefaultDrainDelay, "drain delay")
	flag.Parse()
	ld, err := lameduck.New(lameduck.WithDrainDelay(*delay))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.Handle("/readyz", ld.ReadinessHandler())
	mux.Handle("/livez", ld.LivenessHandler())
	ld.Register(httpserver.New(&http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}))
	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
