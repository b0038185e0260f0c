// Command wiring is a service wired to lameduck in one of the ways real Go
// services handle signals, for the tests that send it real signals. It
// serves nothing: the signal handling is what is under test.
//
// Usage:
//
//	wiring -wiring own|notifycontext|handler|channel|all [-delay 30ms]
//
// It prints one line on stdout for each phase Run enters ("phase serving
// 0s"), with the time the previous phase took, and "hook ran" when its
// shutdown hook runs; the Coordinator logs on stderr. It exits 0 after a
// clean shutdown and 1 if Run returns an error.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lameduck/lameduck"
)

// wirings are the ways a service can hand its shutdown signal to Run.
var wirings = map[string]func(opts []lameduck.Option) (context.Context, []lameduck.Option){
	// own: the Coordinator's own signal handling, nothing else.
	"own": func(opts []lameduck.Option) (context.Context, []lameduck.Option) {
		return context.Background(), opts
	},
	// notifycontext: the idiom of the os/signal documentation.
	"notifycontext": func(opts []lameduck.Option) (context.Context, []lameduck.Option) {
		ctx, _ := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		return ctx, opts
	},
	// handler: the service's own signal.Notify handler cancels the context.
	"handler": func(opts []lameduck.Option) (context.Context, []lameduck.Option) {
		return handlerContext(), opts
	},
	// channel: the service's own signal channel, given to the Coordinator.
	"channel": func(opts []lameduck.Option) (context.Context, []lameduck.Option) {
		return context.Background(), append(opts, lameduck.WithSignalChannel(signalChannel()))
	},
	// all: every way at once; one SIGTERM reaches Run four times.
	"all": func(opts []lameduck.Option) (context.Context, []lameduck.Option) {
		ctx, _ := signal.NotifyContext(handlerContext(), syscall.SIGTERM, os.Interrupt)
		return ctx, append(opts, lameduck.WithSignalChannel(signalChannel()))
	},
}

func handlerContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	ch := signalChannel()
	go func() { <-ch; cancel() }()
	return ctx
}

func signalChannel() chan os.Signal {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	return ch
}

func main() {
	wiring := flag.String("wiring", "own", "how signals reach Run: own, notifycontext, handler, channel or all")
	delay := flag.Duration("delay", 30*time.Millisecond, "drain delay")
	flag.Parse()
	wire, ok := wirings[*wiring]
	if !ok {
		fmt.Fprintf(os.Stderr, "wiring: unknown -wiring %q; use own, notifycontext, handler, channel or all\n", *wiring)
		os.Exit(2)
	}
	ctx, opts := wire([]lameduck.Option{
		lameduck.WithDrainDelay(*delay),
		lameduck.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))),
	})
	ld, err := lameduck.New(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ld.OnPhase(func(e lameduck.Event) { fmt.Printf("phase %s %v\n", e.Phase, e.Elapsed) })
	ld.OnShutdown("print", func(context.Context) error { fmt.Println("hook ran"); return nil })
	ld.MarkReady()
	if err := ld.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
