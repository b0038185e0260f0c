package lameduck

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lameduck/lameduck/inflight"
)

// RegisterAdmin adds an admin server: one that answers the readiness and
// liveness probes and metrics scrapes (see httpserver.Admin) on an address of
// its own, and that must go on answering for as long as the process runs.
// The kubelet keeps probing a terminating pod's readiness, and Prometheus
// keeps scraping it, all through the drain: on the application's listener,
// which closes when the drain begins, both would get "connection refused",
// and the drain itself could not be watched.
//
// [Coordinator.Run] binds an admin server's listeners and serves it along
// with the servers of [Coordinator.Register], in registration order, so
// that an address in use fails Run before the process turns ready, and a
// failure of its Serve shuts the process down. It never calls its
// LameDuck: the server keeps accepting and answering through the delay and
// the drain. Run stops it last, after the shutdown hooks, as it returns:
// Drain, for at most a second, so that the answers in progress, such as a
// scrape of the final status (see [WithFinalScrape]), are not cut, then
// Close; and waits for its Serve to return, until the deadline (the grace
// period minus the safety margin). What its Close reports is not counted
// as cut.
//
// RegisterAdmin panics, like Register, if s is nil or already registered,
// or if Run has been called.
func (c *Coordinator) RegisterAdmin(s Server) {
	c.register("RegisterAdmin", s, &c.admins)
}

// admin is an admin server as one Run sees it.
type admin struct {
	Server
	i      int
	served chan struct{} // closed once Serve has returned
	err    error         // what Serve returned, set before served is closed
	// Only Run's own goroutine touches these.
	listened bool // Listen was called
	serving  bool // Serve was called
	reported bool // Run has reported what Serve returned
	closed   bool // closeAdmins closed it
}

func newAdmins(servers []Server) []*admin {
	admins := make([]*admin, len(servers))
	for i, s := range servers {
		admins[i] = &admin{Server: s, i: i, served: make(chan struct{})}
	}
	return admins
}

func (a *admin) String() string {
	if s, ok := a.Server.(fmt.Stringer); ok {
		return "admin " + s.String()
	}
	return fmt.Sprintf("admin server %d", a.i+1)
}

// awaitFinalScrape waits, with [WithFinalScrape], until a Status of
// PhaseStopped has been exported (see Coordinator.MarkExported), or ctx
// ends.
func (r *run) awaitFinalScrape(ctx context.Context) {
	c := r.c
	if !c.opts.finalScrape {
		return
	}
	if len(r.admins) == 0 {
		c.log.Warn("lameduck: WithFinalScrape: no admin server to scrape the final status from; register one with RegisterAdmin, as httpserver.Admin does")
		return
	}
	start := c.clock.Now()
	if r.await(c.progress.finalRead, ctx) {
		c.log.Info("lameduck: the final status was read", slog.Duration("waited", c.clock.Now().Sub(start)))
		return
	}
	c.log.Warn("lameduck: no scrape read the final status before the deadline", slog.Duration("waited", c.clock.Now().Sub(start)))
}

// adminDrainTimeout bounds how long the requests an admin server is
// answering as Run returns, such as the scrape that reads the final
// status, are given to finish.
const adminDrainTimeout = time.Second

// finish drains the server, for at most adminDrainTimeout, or until ctx
// ends, so that Close cuts no answer in progress.
func (a *admin) finish(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, adminDrainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Server.Drain(ctx) //nolint:errcheck // Close says what is left
	}()
	select {
	case <-done:
	case <-ctx.Done(): // a Drain that ignores ctx cannot hold Run
	}
}

// closeAdmins closes the admin servers, after the hooks, and waits for their
// Serve calls to return, or for ctx to end. It is the last step of Run.
func (r *run) closeAdmins(ctx context.Context) {
	for _, a := range r.admins {
		if !a.listened || a.closed {
			continue
		}
		a.closed = true
		if a.serving {
			a.finish(ctx)
		}
		a.Server.Close()
		if !a.serving {
			continue
		}
		select {
		case <-ctx.Done():
			if !inflight.IsClosed(a.served) {
				r.errs = append(r.errs, fmt.Errorf("lameduck: Serve did not return by the deadline: %s", a))
				continue
			}
		case <-a.served:
		}
		if a.err != nil && !a.reported {
			r.errs = append(r.errs, fmt.Errorf("lameduck: %s: %w", a, a.err))
			r.c.log.Error("lameduck: "+a.String()+" failed", slog.Any("error", a.err))
		}
	}
}
