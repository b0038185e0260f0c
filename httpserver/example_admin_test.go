package httpserver_test

import (
	"context"
	"log"
	"net/http"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

// Probes on an address of their own, answered until the process exits:
// the application's port closes when the drain begins, but the kubelet
// keeps probing a terminating pod. Pass a metrics handler instead of nil,
// such as promhttp.Handler(), to serve /metrics there too.
func ExampleAdmin() {
	ld, err := lameduck.New()
	if err != nil {
		log.Fatal(err)
	}
	ld.Register(httpserver.New(&http.Server{Addr: ":8080", Handler: http.DefaultServeMux}))
	httpserver.Admin(ld, ":8081", nil) // /readyz and /livez
	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
