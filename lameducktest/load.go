package lameducktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// A Load is the client of a protocol that lameducktest does not speak
// itself, given as [Config.Load]. [GRPC]'s is package grpcload's, in the
// module of grpcserver, so that only the tests of gRPC services compile
// gRPC:
//
//	lameducktest.Config{Protocol: lameducktest.GRPC, Load: grpcload.Load(), ...}
//
// Its clients never retry, and report every failed request as a
// [*Failure] that says what they saw.
type Load interface {
	// Start starts the long-lived clients: one per connection slot,
	// [Clients.Conns], each carrying [Clients.WorkersPerConn] requests at
	// once, started with [Clients.Go] and closed by a function given to
	// [Clients.OnStop]. An error ends the run.
	Start(c *Clients) error
	// Fresh returns the request of one of the clients of [Config.Fresh]:
	// it opens a connection of its own, makes one request on it and closes
	// it.
	Fresh(c *Clients) func(ctx context.Context) (local net.Addr, err error)
}

// Clients is what a [Load]'s clients work with: the load balancer's
// address, the load's settings, its workers, and a dialer that tells a
// request that reached no server from one a server broke.
type Clients struct {
	l *rollout.Load
	d *rollout.Dialer
}

// Addr returns the load balancer's address, host:port, that every
// connection dials.
func (c *Clients) Addr() string { return c.l.Config().Addr }

// Conns returns the number of long-lived client connections ([Config.Conns]).
func (c *Clients) Conns() int { return c.l.Config().Conns }

// WorkersPerConn returns how many requests each long-lived connection
// carries at once: two.
func (c *Clients) WorkersPerConn() int { return c.l.Config().WorkersPerConn }

// Timeout returns the bound of each request, 5 s: a request that takes
// longer fails as [record.KindTimeout].
func (c *Clients) Timeout() time.Duration { return c.l.Config().Timeout }

// Go starts a worker that makes requests with do until the load stops,
// counting each: do returns the local address of the connection the
// request went on (nil if none), which tells the pod that served it, and
// an error for a failed request, a [*Failure] to say of which kind (any
// other error counts as [record.KindOther]). Call it from [Load.Start] only.
func (c *Clients) Go(do func(ctx context.Context) (local net.Addr, err error)) {
	c.l.Go(engineRequest(do))
}

// OnStop adds a function called once the workers have stopped, such as a
// client's Close. Call it from [Load.Start] only.
func (c *Clients) OnStop(f func()) { c.l.OnStop(f) }

// DialContext dials addr, as net.Dialer's does, for a client library that
// takes a dial function; it is bounded by [Clients.Timeout]. Each
// connection it dials records whether the server ever sent a byte on it,
// for [Clients.Silent].
func (c *Clients) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.d.DialContext(ctx, network, addr)
}

// Silent reports whether a failed request reached no server: it never got
// onto a connection (local is nil), or got onto one dialed by
// [Clients.DialContext] on which the server never sent a byte. Such a
// request fails as [record.KindRefused].
func (c *Clients) Silent(local net.Addr) bool { return c.d.Silent(local) }

// A Failure is a failed request as a [Load]'s client saw it.
type Failure struct {
	// Kind says what the client saw, as the package documentation
	// explains the kinds. Set it: the zero Kind is [record.KindRefused].
	Kind record.Kind
	// Code is the protocol's name for the failure, such as a gRPC status
	// code ("Unavailable"); it may be empty.
	Code string
	// Err is the client's error.
	Err error
}

// Error returns the kind, the code if any, and the client's error.
func (f *Failure) Error() string {
	if f.Code != "" {
		return fmt.Sprintf("%s (%s): %v", f.kind(), f.Code, f.Err)
	}
	return fmt.Sprintf("%s: %v", f.kind(), f.Err)
}

// Unwrap returns the client's error.
func (f *Failure) Unwrap() error { return f.Err }

func (f *Failure) kind() record.Kind {
	if f.Kind < 0 || f.Kind >= record.NumKinds {
		return record.KindOther
	}
	return f.Kind
}

// engineRequest returns do with its failures as the engine counts them.
func engineRequest(do func(ctx context.Context) (net.Addr, error)) func(ctx context.Context) (net.Addr, error) {
	return func(ctx context.Context) (net.Addr, error) {
		local, err := do(ctx)
		var f *Failure
		if err != nil && errors.As(err, &f) {
			err = &rollout.Failure{Kind: f.kind(), Code: f.Code, Err: f.Err}
		}
		return local, err
	}
}

// The rollout command runs grpcload.Load() through the engine too.
func init() {
	rollout.ClientOf = func(load any) rollout.Protocol { return engineClient(load.(Load)) }
}

// engineLoad runs a [Load] as the engine's client of a protocol.
type engineLoad struct{ load Load }

func (e engineLoad) clients(l *rollout.Load) *Clients {
	return &Clients{l: l, d: l.NewDialer()}
}

func (e engineLoad) Start(l *rollout.Load) error { return e.load.Start(e.clients(l)) }

func (e engineLoad) Fresh(l *rollout.Load) func(ctx context.Context) (net.Addr, error) {
	return engineRequest(e.load.Fresh(e.clients(l)))
}
