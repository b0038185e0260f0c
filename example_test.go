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
	"strings"
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

// The phases Run goes through, as an observer added with OnPhase sees
// them, and what it asks of a server in each.
func ExampleCoordinator_Run() {
	ctx, stop := context.WithCancel(context.Background())
	ld, err := lameduck.New(
		lameduck.WithSignals(), // this example ends with ctx rather than SIGTERM
		lameduck.WithDrainDelay(10*time.Millisecond),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		panic(err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		fmt.Println(e.Phase)
		if e.Phase == lameduck.PhaseServing {
			stop() // as if SIGTERM arrived
		}
	})
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

// An event stream needs nothing of its own to leave at its turn: the
// server ends its request's context, as when its client goes, then asks
// the client to reconnect a moment later, to another pod. A websocket
// handler selects on [lameduck.Leaving] and closes with code 1012.
func ExampleLeaving() {
	ctx, shutdown := context.WithCancel(context.Background())
	defer shutdown()
	serving := make(chan struct{})
	stopping := make(chan lameduck.Event, 1)
	ld, err := lameduck.New(
		lameduck.WithSignals(), // this example ends with ctx rather than SIGTERM
		lameduck.WithDrainDelay(100*time.Millisecond),
		lameduck.WithDepartureWindow(100*time.Millisecond),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		panic(err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		switch e.Phase {
		case lameduck.PhaseServing:
			close(serving)
		case lameduck.PhaseStopping:
			stopping <- e
		}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 1\ndata: price 42\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // the client went, or it is this stream's turn to leave
	})
	srv := httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: mux})
	ld.Register(srv)
	ld.MarkReady()
	done := make(chan error, 1)
	go func() { done <- ld.Run(ctx) }()
	<-serving

	req, _ := http.NewRequest("GET", "http://"+srv.Addr().String()+"/events", nil)
	req.Header.Set("Accept", "text/event-stream") // as EventSource sends it
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	events := bufio.NewScanner(resp.Body)
	for events.Scan() {
		line := events.Text()
		if strings.HasPrefix(line, "retry: ") { // random, to spread the reconnections
			line = "retry: (100 to 999 ms: when EventSource reconnects, with Last-Event-ID: 1)"
		}
		fmt.Println(line)
		if line == "data: price 42" {
			shutdown() // as if SIGTERM arrived
		}
	}
	resp.Body.Close()
	e := <-stopping
	fmt.Println("told to leave:", e.Departures.Told, "cut:", e.Cut)
	fmt.Println("Run returned", <-done)
	// Output:
	// id: 1
	// data: price 42
	//
	// retry: (100 to 999 ms: when EventSource reconnects, with Last-Event-ID: 1)
	//
	// told to leave: 1 cut: nothing
	// Run returned <nil>
}
