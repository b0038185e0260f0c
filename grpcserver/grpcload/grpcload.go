// Package grpcload is the gRPC load of package lameducktest and of the
// rollout command: grpc-go clients making unary
// grpc.testing.TestService/EmptyCall calls (the service of
// google.golang.org/grpc/interop/grpc_testing), without TLS, one ClientConn
// per connection, each carrying several calls at once. Every failed call is
// counted, by what the client saw.
//
// Give it to the test that runs a gRPC server through a rolling update:
//
//	lameducktest.Config{Protocol: lameducktest.GRPC, Load: grpcload.Load(), ...}
//
// It lives in the module of package grpcserver, not in lameducktest, so
// that gRPC and protobuf reach only the tests of gRPC services: the test
// binary of an HTTP service that uses lameducktest compiles neither. It
// uses lameducktest's exported API only.
package grpcload

import (
	"context"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck/lameducktest"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// Load returns the gRPC load's client, for [lameducktest.Config.Load] with
// Protocol [lameducktest.GRPC].
func Load() lameducktest.Load { return load{} }

// load is the gRPC load's client.
type load struct{}

// Start opens one ClientConn per connection slot, with
// Clients.WorkersPerConn workers each.
func (load) Start(c *lameducktest.Clients) error {
	for range c.Conns() {
		cc, err := client(c)
		if err != nil {
			return err
		}
		c.OnStop(func() { cc.Close() })
		tc := testgrpc.NewTestServiceClient(cc)
		for range c.WorkersPerConn() {
			c.Go(func(ctx context.Context) (net.Addr, error) { return call(ctx, tc, c) })
		}
	}
	return nil
}

// Fresh opens a ClientConn for each call, and closes it after.
func (load) Fresh(c *lameducktest.Clients) func(ctx context.Context) (net.Addr, error) {
	return func(ctx context.Context) (net.Addr, error) {
		cc, err := client(c)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		return call(ctx, testgrpc.NewTestServiceClient(cc), c)
	}
}

// client returns a client of the load balancer whose connections c dials.
func client(c *lameducktest.Clients) (*grpc.ClientConn, error) {
	addr := c.Addr()
	// passthrough: dial exactly this address, as a client of a Service's
	// cluster IP does, with no name resolution or balancing of its own.
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return c.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return nil, fmt.Errorf("grpcload: grpc client for %s: %w", addr, err)
	}
	return cc, nil
}

// call makes one call and classifies its failure. It returns the local
// address of the call's connection, if it got onto one.
func call(ctx context.Context, client testgrpc.TestServiceClient, c *lameducktest.Clients) (net.Addr, error) {
	rctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	var p peer.Peer
	_, err := client.EmptyCall(rctx, &testgrpc.Empty{}, grpc.Peer(&p))
	if err == nil || ctx.Err() != nil {
		return p.LocalAddr, err
	}
	return p.LocalAddr, failure(err, c.Silent(p.LocalAddr))
}

// failure classifies a failed gRPC call by its status code and, for
// UNAVAILABLE (grpc-go's code for every transport failure), by whether the
// call's connection ever heard from the server and by the message. silent
// says the call never got onto a connection, or got onto one on which the
// server never sent a byte (not even its SETTINGS): no server saw it.
func failure(err error, silent bool) *lameducktest.Failure {
	st := status.Convert(err)
	f := &lameducktest.Failure{Kind: record.KindOther, Code: st.Code().String(), Err: err}
	msg := st.Message()
	switch st.Code() {
	case codes.DeadlineExceeded:
		f.Kind = record.KindTimeout
	case codes.Unavailable:
		switch {
		case silent, strings.Contains(msg, "connection refused"):
			f.Kind = record.KindRefused
		case strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"):
			f.Kind = record.KindReset
		default:
			// "transport is closing", "EOF", a GOAWAY: the connection
			// ended under the call.
			f.Kind = record.KindEOF
		}
	}
	return f
}
