// Package grpcload is the gRPC load of package lameducktest and of the
// rollout command: grpc-go clients making unary
// grpc.testing.TestService/EmptyCall calls (the service of
// google.golang.org/grpc/interop/grpc_testing), without TLS, one ClientConn
// per connection, each carrying several calls at once. Every failed call is
// counted, by what the client saw.
//
// Import it for its side effect, in the test that runs a gRPC server
// through a rolling update with Protocol lameducktest.GRPC:
//
//	import _ "github.com/lameduck/lameduck/grpcserver/grpcload"
//
// It lives in the module of package grpcserver, not in lameducktest, so
// that gRPC and protobuf reach only the tests of gRPC services: the test
// binary of an HTTP service that uses lameducktest compiles neither.
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

	"github.com/lameduck/lameduck/internal/rollout"
)

func init() { rollout.RegisterLoad(rollout.LoadGRPC, protocol{}) }

// protocol is the gRPC load's client.
type protocol struct{}

// Start opens one ClientConn per connection slot, with
// LoadConfig.WorkersPerConn workers each.
func (protocol) Start(l *rollout.Load) error {
	cfg := l.Config()
	d := l.NewDialer()
	for range cfg.Conns {
		cc, err := client(cfg.Addr, d)
		if err != nil {
			return err
		}
		l.OnStop(func() { cc.Close() })
		c := testgrpc.NewTestServiceClient(cc)
		for range cfg.WorkersPerConn {
			l.Go(func(ctx context.Context) (net.Addr, error) { return call(ctx, c, cfg, d) })
		}
	}
	return nil
}

// Fresh opens a ClientConn for each call, and closes it after.
func (protocol) Fresh(l *rollout.Load) func(ctx context.Context) (net.Addr, error) {
	cfg := l.Config()
	d := l.NewDialer()
	return func(ctx context.Context) (net.Addr, error) {
		cc, err := client(cfg.Addr, d)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		return call(ctx, testgrpc.NewTestServiceClient(cc), cfg, d)
	}
}

// client returns a client of addr whose connections d dials.
func client(addr string, d *rollout.Dialer) (*grpc.ClientConn, error) {
	// passthrough: dial exactly this address, as a client of a Service's
	// cluster IP does, with no name resolution or balancing of its own.
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return nil, fmt.Errorf("rollout: grpc client for %s: %w", addr, err)
	}
	return cc, nil
}

// call makes one call and classifies its failure. It returns the local
// address of the call's connection, if it got onto one.
func call(ctx context.Context, client testgrpc.TestServiceClient, cfg rollout.LoadConfig, d *rollout.Dialer) (net.Addr, error) {
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var p peer.Peer
	_, err := client.EmptyCall(rctx, &testgrpc.Empty{}, grpc.Peer(&p))
	if err == nil || ctx.Err() != nil {
		return p.LocalAddr, err
	}
	return p.LocalAddr, failure(err, d.Silent(p.LocalAddr))
}

// failure classifies a failed gRPC call by its status code and, for
// UNAVAILABLE (grpc-go's code for every transport failure), by whether the
// call's connection ever heard from the server and by the message. silent
// says the call never got onto a connection, or got onto one on which the
// server never sent a byte (not even its SETTINGS): no server saw it.
func failure(err error, silent bool) *rollout.Failure {
	st := status.Convert(err)
	f := &rollout.Failure{Kind: rollout.KindOther, Code: st.Code().String(), Err: err}
	msg := st.Message()
	switch st.Code() {
	case codes.DeadlineExceeded:
		f.Kind = rollout.KindTimeout
	case codes.Unavailable:
		switch {
		case silent, strings.Contains(msg, "connection refused"):
			f.Kind = rollout.KindRefused
		case strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"):
			f.Kind = rollout.KindReset
		default:
			// "transport is closing", "EOF", a GOAWAY: the connection
			// ended under the call.
			f.Kind = rollout.KindEOF
		}
	}
	return f
}
