package lameduck_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/inflight"
)

// printServer is a lameduck.Server that prints the calls it gets.
type printServer struct{ stop chan struct{} }

func (s printServer) Listen() error   { fmt.Println("  server: listen"); return nil }
func (s printServer) Serve() error    { <-s.stop; return nil }
func (s printServer) LameDuck(func()) { fmt.Println("  server: ask clients to leave") }
func (s printServer) Drain(ctx context.Context) error {
	fmt.Println("  server: stop accepting, wait for in-flight requests")
	return nil
}

func (s printServer) InFlight() inflight.Counts { return inflight.Counts{} }

func (s printServer) Close() inflight.Counts {
	fmt.Println("  server: close")
	close(s.stop)
	return inflight.Counts{}
}

// The phases Run goes through, and what it asks of a server in each.
func ExampleCoordinator_Run() {
	ctx, stop := context.WithCancel(context.Background())
	ld, err := lameduck.New(
		lameduck.WithSignals(), // this example ends with ctx rather than SIGTERM
		lameduck.WithDrainDelay(10*time.Millisecond),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
		lameduck.WithObserver(func(e lameduck.Event) {
			fmt.Println(e.Phase)
			if e.Phase == lameduck.PhaseServing {
				stop() // as if SIGTERM arrived
			}
		}),
	)
	if err != nil {
		panic(err)
	}
	ld.Register(printServer{stop: make(chan struct{})})
	ld.OnShutdown("", func(ctx context.Context) error {
		fmt.Println("  hook: close the database")
		return nil
	})
	ld.MarkReady()
	fmt.Println("Run returned", ld.Run(ctx))
	// Output:
	// starting
	//   server: listen
	// serving
	//   server: ask clients to leave
	// lame duck
	// draining
	//   server: stop accepting, wait for in-flight requests
	//   server: close
	// stopping
	//   hook: close the database
	// stopped
	// Run returned <nil>
}

// The idiom of the os/signal documentation works as it is: the SIGTERM that
// ends ctx also reaches the Coordinator's own signal handling, and counts
// once. A second SIGTERM or Ctrl-C still forces the shutdown.
func ExampleCoordinator_Run_notifyContext() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ld, err := lameduck.New()
	if err != nil {
		log.Fatal(err)
	}
	// Register servers, workers and hooks here.
	ld.MarkReady()
	if err := ld.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Hooks and workers are named in every error and log line about them;
// with an empty name, after the file and line that registered them.
func ExampleCoordinator_OnShutdown() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start the shutdown at once
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	ld.OnShutdown("db pool", func(ctx context.Context) error {
		return errors.New("close: connection reset by peer")
	})
	fmt.Println(ld.Run(ctx))
	// Output:
	// lameduck: shutdown hook "db pool": close: connection reset by peer
}

// A server-sent-events handler that asks its client to reconnect as soon as
// the shutdown begins, at the start of the drain delay: the client's next
// connection goes through the load balancer to a pod that stays, and the
// stream does not hold up the drain.
func ExampleCoordinator_Entered() {
	ctx, shutdown := context.WithCancel(context.Background())
	defer shutdown()
	serving := make(chan struct{})
	ld, err := lameduck.New(
		lameduck.WithSignals(), // this example ends with ctx rather than SIGTERM
		lameduck.WithDrainDelay(100*time.Millisecond),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
		lameduck.WithObserver(func(e lameduck.Event) {
			if e.Phase == lameduck.PhaseServing {
				close(serving)
			}
		}),
	)
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: price 42\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-ld.Entered(lameduck.PhaseLameDuck):
			// "retry: 0" makes an EventSource reconnect at once.
			fmt.Fprint(w, "retry: 0\nevent: reconnect\ndata: this server is shutting down\n\n")
		case <-r.Context().Done():
		}
	})
	srv := httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: mux})
	ld.Register(srv)
	ld.MarkReady()
	done := make(chan error, 1)
	go func() { done <- ld.Run(ctx) }()
	<-serving

	resp, err := http.Get("http://" + srv.Addr().String() + "/events")
	if err != nil {
		panic(err)
	}
	events := bufio.NewScanner(resp.Body)
	for events.Scan() {
		fmt.Println(events.Text())
		if events.Text() == "data: price 42" {
			shutdown() // as if SIGTERM arrived
		}
	}
	resp.Body.Close()
	fmt.Println("Run returned", <-done)
	// Output:
	// data: price 42
	//
	// retry: 0
	// event: reconnect
	// data: this server is shutting down
	//
	// Run returned <nil>
}
