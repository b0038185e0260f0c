package lameduck

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// Appended as Register does, so that Run starts it in registration
	// order.
	c.register("RegisterAdmin", s, func() Server {
		return &adminServer{Server: s, released: make(chan struct{}), served: make(chan struct{})}
	})
}

// adminServer is how Run sees a server of RegisterAdmin: a server that
// stops at the drain, like the others, while the real one goes on serving
// until closeAdmins closes it.
type adminServer struct {
	Server

	released chan struct{} // closed at Drain or Close: Serve returns nil
	served   chan struct{} // closed once the real Serve has returned
	err      error         // the real Serve's result, set before served is closed
	reported atomic.Bool   // Serve returned err to Run, which reported it
	serving  atomic.Bool   // Serve was called, in a goroutine of Run's
	// Only Run's own goroutine touches these.
	listened bool // Listen was called
	closed   bool // closeAdmins closed it

	once sync.Once
}

func (a *adminServer) String() string {
	if s, ok := a.Server.(fmt.Stringer); ok {
		return "admin " + s.String()
	}
	return "admin server"
}

func (a *adminServer) Listen() error {
	a.listened = true
	return a.Server.Listen()
}

// Serve serves the real server in a goroutine of its own and returns what
// the real Serve returns, or nil when the drain begins: Run waits for every
// Serve to return before it moves on to the hooks.
func (a *adminServer) Serve() error {
	a.serving.Store(true)
	go func() {
		a.err = a.Server.Serve()
		close(a.served)
	}()
	select {
	case <-a.served:
		a.reported.Store(true)
		return a.err
	case <-a.released:
		return nil
	}
}

// LameDuck does nothing: probes and scrapes are not asked to go elsewhere.
func (a *adminServer) LameDuck(func()) {}

// Drain lets Run move on while the real server keeps answering.
func (a *adminServer) Drain(context.Context) error {
	a.release()
	return nil
}

// Close lets Run move on; the real server is closed later, by closeAdmins.
func (a *adminServer) Close() inflight.Counts {
	a.release()
	return inflight.Counts{}
}

func (a *adminServer) release() {
	a.once.Do(func() { close(a.released) })
}

// awaitFinalScrape waits, with [WithFinalScrape], until a Status of
// PhaseStopped has been exported (see Coordinator.MarkExported), or ctx
// ends.
func (r *run) awaitFinalScrape(ctx context.Context) {
	c := r.c
	if !c.opts.finalScrape {
		return
	}
	admin := false
	for _, s := range r.servers {
		_, ok := s.(*adminServer)
		admin = admin || ok
	}
	if !admin {
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

// finish drains the real server, for at most adminDrainTimeout, or until
// ctx ends, so that Close cuts no answer in progress.
func (a *adminServer) finish(ctx context.Context) {
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
	for _, s := range r.servers {
		a, ok := s.(*adminServer)
		if !ok || !a.listened || a.closed {
			continue
		}
		a.closed = true
		if a.serving.Load() {
			a.finish(ctx)
		}
		a.Server.Close()
		if !a.serving.Load() {
			continue
		}
		select {
		case <-ctx.Done():
			if !isClosed(a.served) {
				r.errs = append(r.errs, fmt.Errorf("lameduck: %s: Serve did not return by the deadline", a))
				continue
			}
		case <-a.served:
		}
		if a.err != nil && !a.reported.Load() {
			r.errs = append(r.errs, fmt.Errorf("lameduck: %s: %w", a, a.err))
			r.c.log.Error("lameduck: "+a.String()+" failed", slog.Any("error", a.err))
		}
	}
}
