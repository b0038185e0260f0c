package httpserver_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

// A web server with its probes, shut down without failing a request on
// SIGTERM.
func Example() {
	ld, err := lameduck.New() // SIGTERM and SIGINT; 30s grace period, 5s drain delay
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/readyz", ld.ReadinessHandler())
	mux.Handle("/livez", ld.LivenessHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	ld.Register(httpserver.New(&http.Server{Addr: ":8080", Handler: mux}))

	// Initialisation: caches, connections to dependencies... then:
	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// During the drain delay the server still answers, but tells each client
// to reconnect elsewhere.
func ExampleServer_LameDuck() {
	phases := map[lameduck.Phase]chan struct{}{lameduck.PhaseServing: make(chan struct{}), lameduck.PhaseLameDuck: make(chan struct{})}
	ld, err := lameduck.New(
		lameduck.WithSignals(),
		lameduck.WithDrainDelay(50*time.Millisecond),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		log.Fatal(err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		if ch, ok := phases[e.Phase]; ok {
			close(ch)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/readyz", ld.ReadinessHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	srv := httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: mux})
	ld.Register(srv)
	ld.MarkReady()

	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ld.Run(ctx) }()
	<-phases[lameduck.PhaseServing]

	client := &http.Client{}
	get := func(path string) {
		resp, err := client.Get("http://" + srv.Addr().String() + path)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("GET %s: %d %s, keep-alive: %t\n", path, resp.StatusCode, body, !resp.Close)
	}
	get("/readyz")
	get("/")
	sigterm()
	<-phases[lameduck.PhaseLameDuck]
	get("/readyz")
	get("/")
	fmt.Println("Run returned", <-done)
	// Output:
	// GET /readyz: 200 ok, keep-alive: true
	// GET /: 200 hello, keep-alive: true
	// GET /readyz: 503 shutting down, keep-alive: false
	// GET /: 200 hello, keep-alive: false
	// Run returned <nil>
}
