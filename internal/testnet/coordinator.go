package testnet

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/lameduck/lameduck"
)

// RunCoordinator runs a ready Coordinator with drain delay delay and the
// one server that newServer makes for it, for the exit benchmarks, and
// returns once it serves; the function it returns starts the shutdown, as
// SIGTERM would. Once done is closed, *drainStart and *exited say when the
// drain began and when Run returned.
func RunCoordinator(tb testing.TB, delay time.Duration, newServer func(*lameduck.Coordinator) lameduck.Server,
	drainStart, exited *time.Time, done chan<- struct{}) (terminate func()) {
	tb.Helper()
	signals := make(chan os.Signal, 1)
	serving := make(chan struct{})
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithSignalChannel(signals),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)), lameduck.WithDrainDelay(delay))
	if err != nil {
		tb.Fatal(err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		switch e.Phase {
		case lameduck.PhaseServing:
			close(serving)
		case lameduck.PhaseDraining:
			*drainStart = time.Now()
		}
	})
	ld.Register(newServer(ld))
	ld.MarkReady()
	go func() {
		if err := ld.Run(context.Background()); err != nil {
			tb.Error(err)
		}
		*exited = time.Now()
		close(done)
	}()
	<-serving
	return func() { signals <- os.Interrupt }
}
