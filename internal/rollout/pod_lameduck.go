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
	ld, err := lameduck.New(
		delay,
		lameduck.WithGracePeriod(o.gracePeriod),
		lameduck.WithLogger(slog.New(slog.NewTextHandler(o.logger.Writer(), nil))),
	)
	if err != nil {
		return err
	}
	app := http.NewServeMux()
	app.HandleFunc("GET /{$}", appHandler)
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
