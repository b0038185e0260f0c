package rollout

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

// serveLameduck runs the built-in pod that uses this project's library: the
// same application as the other built-in pods, shut down by a
// lameduck.Coordinator. ctx ends at the first SIGTERM, as does the
// Coordinator's own signal handling; either starts the same sequence.
func serveLameduck(ctx context.Context, o podOptions) error {
	delay := lameduck.WithDrainDelay(o.drainDelay)
	if o.drainQuiet > 0 {
		delay = lameduck.WithAdaptiveDrainDelay(o.drainMin, o.drainQuiet, o.drainDelay)
	}
	opts := []lameduck.Option{
		delay,
		lameduck.WithGracePeriod(o.gracePeriod),
		lameduck.WithLogger(slog.New(slog.NewTextHandler(o.logger.Writer(), nil))),
	}
	if o.departureWindow >= 0 {
		opts = append(opts, lameduck.WithDepartureWindow(o.departureWindow))
	}
	ld, err := lameduck.New(opts...)
	if err != nil {
		return err
	}
	app := http.NewServeMux()
	app.HandleFunc("GET /{$}", appHandler)
	// A websocket closes with 1012 at its turn to leave; httpserver ends
	// an event stream at its turn by itself.
	handleStreams(app, func(r *http.Request) <-chan struct{} { return lameduck.Leaving(r.Context()) })
	probes := app
	if o.probeAddr != "" {
		probes = http.NewServeMux()
		ld.Register(httpserver.New(&http.Server{Addr: o.probeAddr, Handler: probes, ErrorLog: o.logger}))
	}
	probes.Handle("/readyz", ld.ReadinessHandler())
	probes.Handle("/livez", ld.LivenessHandler())
	ld.Register(httpserver.New(&http.Server{Addr: o.addr, Handler: app, ErrorLog: o.logger}))
	ld.MarkReady()
	return ld.Run(ctx)
}
