package lameduck_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lameduck/lameduck"
)

// printServer is a lameduck.Server that prints the calls it gets.
type printServer struct{ stop chan struct{} }

func (s printServer) Listen() error { fmt.Println("  server: listen"); return nil }
func (s printServer) Serve() error  { <-s.stop; return nil }
func (s printServer) LameDuck()     { fmt.Println("  server: ask clients to leave") }
func (s printServer) Drain(ctx context.Context) error {
	fmt.Println("  server: stop accepting, wait for in-flight requests")
	return nil
}

func (s printServer) Close() lameduck.Counts {
	fmt.Println("  server: close")
	close(s.stop)
	return lameduck.Counts{}
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
	ld.OnShutdown(func(ctx context.Context) error {
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
