package rollout

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// A Protocol is the client side of a load protocol that lives outside this
// package and joins it with [RegisterLoad]. The gRPC load is one: its
// client library is a dependency of the module of package grpcload only, so
// that the programs and tests of HTTP services, which use this package
// through lameducktest, compile no gRPC.
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

var (
	protocolsMu sync.Mutex
	protocols   = map[LoadKind]Protocol{}
)

// RegisterLoad makes the load kind available to [StartLoad] and [Run]. It is
// meant to be called from the init function of the package that implements
// the protocol; it panics if kind is empty, built in, or registered twice.
func RegisterLoad(kind LoadKind, p Protocol) {
	protocolsMu.Lock()
	defer protocolsMu.Unlock()
	if kind == "" || builtinLoad(kind) || protocols[kind] != nil || p == nil {
		panic(fmt.Sprintf("rollout: RegisterLoad(%q) of a built-in, registered or nil load", kind))
	}
	protocols[kind] = p
}

// registered returns the protocol registered for kind, which [CheckLoad]
// has accepted.
func registered(kind LoadKind) Protocol {
	protocolsMu.Lock()
	defer protocolsMu.Unlock()
	return protocols[kind]
}

// grpcLoadPackage is the package that registers [LoadGRPC].
const grpcLoadPackage = "github.com/lameduck/lameduck/grpcserver/grpcload"

// CheckLoad returns an error unless kind (empty for LoadHTTP1) can run: a
// built-in kind or a registered one. For LoadGRPC before it is registered,
// the error names the package to import.
func CheckLoad(kind LoadKind) error {
	switch {
	case kind == "" || builtinLoad(kind) || registered(kind) != nil:
		return nil
	case kind == LoadGRPC:
		return fmt.Errorf("rollout: the grpc load's client is in package %s, in a module of its own so that HTTP services need no gRPC: import it (import _ %q)", grpcLoadPackage, grpcLoadPackage)
	}
	return fmt.Errorf("rollout: unknown load %q; use one of %v", kind, LoadKinds)
}

// Config returns the load's configuration, its defaults filled in.
func (l *Load) Config() LoadConfig { return l.cfg }

// Go starts a worker that makes requests with do until the load stops,
// counting each: do returns the local address of the connection the request
// went on (nil if none), which tells the pod that served it, and an error
// for a failed request, a [*Failure] to say of which [Kind]. Call it from
// [Protocol.Start] only.
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
