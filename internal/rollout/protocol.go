package rollout

import (
	"cmp"
	"context"
	"fmt"
	"net"
)

// A Protocol is the client side of a load protocol whose client lives
// outside this package, given as [Config.Client] or [LoadConfig.Client].
// The gRPC load is one: its client library is a dependency of the module of
// package grpcload only, so that the programs and tests of HTTP services,
// which use this package through lameducktest, compile no gRPC.
type Protocol interface {
	// Start starts the load's long-lived clients: one per connection slot
	// of [Load.Config], each with its WorkersPerConn workers started by
	// [Load.Go], and closed by a function given to [Load.OnStop]. An error
	// stops the load.
	Start(l *Load) error
	// Fresh returns the request of one of the clients of
	// [LoadConfig.Fresh]: it opens a connection of its own, makes one
	// request on it and closes it.
	Fresh(l *Load) func(ctx context.Context) (local net.Addr, err error)
}

// ClientOf returns the engine's client of a lameducktest.Load (given as
// any: this package cannot name lameducktest's types). Package lameducktest
// sets it when it is initialized, since only it can build the
// lameducktest.Clients a Load's methods take; the rollout command uses it
// to run grpcload.Load() for -load grpc.
var ClientOf func(load any) Protocol

// grpcLoadPackage is the package whose client runs [LoadGRPC].
const grpcLoadPackage = "github.com/lameduck/lameduck/grpcserver/grpcload"

// checkClient returns an error unless kind (empty for LoadHTTP1) can run
// with client, which the caller's user spells field: a built-in kind
// without one, or LoadGRPC with one.
func checkClient(kind LoadKind, client Protocol, field string) error {
	switch {
	case kind == "" || builtinLoad(kind):
		if client != nil {
			return fmt.Errorf("rollout: the %s load is built in; leave %s unset", cmp.Or(kind, LoadHTTP1), field)
		}
		return nil
	case kind == LoadGRPC:
		if client == nil {
			return fmt.Errorf("rollout: the grpc load's client is in package %s, in a module of its own so that HTTP services need no gRPC: set %s to grpcload.Load()", grpcLoadPackage, field)
		}
		return nil
	}
	return fmt.Errorf("rollout: unknown load %q; use one of %v", kind, LoadKinds)
}

// Config returns the load's configuration, its defaults filled in.
func (l *Load) Config() LoadConfig { return l.cfg }

// Go starts a worker that makes requests with do until the load stops,
// counting each: do returns the local address of the connection the request
// went on (nil if none), which tells the pod that served it, and an error
// for a failed request, a [*Failure] to say of which [record.Kind]. Call it
// from [Protocol.Start] only.
func (l *Load) Go(do func(ctx context.Context) (local net.Addr, err error)) { l.loop(do) }

// OnStop adds a function that [Load.Stop] calls once the workers have
// stopped, such as the Close of a client. Call it from [Protocol.Start]
// only.
func (l *Load) OnStop(f func()) { l.closers = append(l.closers, f) }

// A Dialer dials the load's connections for a client library that takes a
// dial function (gRPC's does) and reports only the local address of the
// connection a request went on. Each connection records whether the server
// ever sent a byte on it, which tells a request that reached no server
// (refused) from one a server broke, and the dialer keeps it by its local
// address for [Dialer.Silent], for a while after it has closed.
type Dialer struct {
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	conns connTable
}

// NewDialer returns a dialer whose dials are bounded by the load's request
// timeout.
func (l *Load) NewDialer() *Dialer {
	d := &Dialer{}
	d.dial = trackingDialer(l.cfg.Timeout, &d.conns)
	return d
}

// DialContext dials addr, as net.Dialer's DialContext does.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dial(ctx, network, addr)
}

// Silent reports whether a failed request reached no server: it never got
// onto a connection (local is nil), or got onto one of this dialer's on
// which the server never sent a byte (an HTTP/2 server sends its SETTINGS
// first, before it can serve anything).
func (d *Dialer) Silent(local net.Addr) bool {
	if local == nil {
		return true
	}
	tc := d.conns.get(local.String())
	// A connection no longer in the table cannot be proven silent.
	return tc != nil && !tc.heard.Load()
}
