// Command grpcserver is a gRPC server that goes through a Kubernetes rolling
// update without failing an RPC. It serves grpc.testing.TestService (from
// google.golang.org/grpc/interop/grpc_testing, so that any gRPC client can
// load it without generated code of its own), the standard health service
// and server reflection, so that grpcurl and grpc-health-probe work against
// it, and the HTTP probes /readyz and /livez on a second port: -probe-addr,
// which closes when the drain begins, or, if -admin-addr is given, an admin
// listener on that address instead, which answers through the drain and
// closes only as the process exits.
//
// Usage:
//
//	grpcserver [-addr :9090] [-probe-addr :8081 | -admin-addr ADDR] [-drain-delay 5s] [-drain-quiet 0 -drain-min 0] [-grace-period 30s] [-init-delay 0]
//
// With -drain-quiet, the drain delay is adaptive (see
// lameduck.WithAdaptiveDrainDelay): it lasts at most -drain-delay, and ends
// sooner on evidence that routing has caught up. In Kubernetes, that is
// the pod's EndpointSlices no longer routing to it, plus
// [lameduck.EndpointsAllowance] for kube-proxy; elsewhere, or without the permission to watch them, at least
// -drain-min (0: 3 s). Either way not before no new connection has
// arrived for -drain-quiet.
//
// On SIGTERM (or SIGINT), the gRPC health status and /readyz turn
// NOT_SERVING and 503 together, at once. For the drain delay, every RPC is
// still served, new connections included, and open connections receive a
// graceful GOAWAY, so that clients reconnect through the Service. Then the
// port closes and the RPCs in flight finish; streams of responses leave at
// their turns, spread over the departure window (lameduck's default: 10 s,
// or half of what the grace period leaves to drain), each with UNAVAILABLE
// saying how many responses were sent, so that its client reconnects
// elsewhere and asks for the rest. Whatever is left 5 s before the end of
// the grace period (3 s to close and 2 s of safety margin), such as an
// upload whose client never finishes, is cut. A second signal cuts
// everything at once.
//
// The exit status is 0 after a clean drain, 1 when something was cut or the
// server could not start (a port in use, say), and 2 for bad flags.
//
// Try it:
//
//	grpcurl -plaintext localhost:9090 list
//	grpcurl -plaintext -d '{"response_size": 10}' localhost:9090 grpc.testing.TestService/UnaryCall
//	grpcurl -plaintext -d '{"response_parameters": [{"size": 1, "interval_us": 1000000}, {"size": 1, "interval_us": 1000000}]}' localhost:9090 grpc.testing.TestService/StreamingOutputCall
//	grpc-health-probe -addr localhost:9090 -watch
//	curl -i localhost:8081/readyz
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/httpserver"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // something was cut, or the server failed or could not start
	exitUsage = 2 // bad flags, as package flag exits
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("grpcserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":9090", "`address` to serve gRPC on")
	probeAddr := fs.String("probe-addr", ":8081", "`address` to serve the HTTP probes /readyz and /livez on")
	drainDelay := fs.Duration("drain-delay", lameduck.DefaultDrainDelay,
		"how long to keep serving after SIGTERM while load balancers stop routing here; with -drain-quiet, the longest")
	drainQuiet := fs.Duration("drain-quiet", 0, "end the drain delay once no new connection arrived for this long (0: a fixed delay)")
	drainMin := fs.Duration("drain-min", 0, "with -drain-quiet, the shortest drain delay when the cluster gives no evidence of routing (0: 3s, lameduck.DefaultMinDrainDelay)")
	gracePeriod := fs.Duration("grace-period", lameduck.DefaultGracePeriod,
		"the pod's terminationGracePeriodSeconds: time from SIGTERM to SIGKILL")
	initDelay := fs.Duration("init-delay", 0, "time to wait before turning ready, standing for initialisation")
	adminAddr := fs.String("admin-addr", "", "`address` to serve the HTTP probes on instead of -probe-addr, through the drain; empty for -probe-addr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // flag has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "grpcserver: unexpected arguments %q; every setting is a flag, see -h\n", fs.Args())
		return exitUsage
	}
	if *initDelay < 0 {
		fmt.Fprintf(stderr, "grpcserver: -init-delay is %v; it must be zero or more\n", *initDelay)
		return exitUsage
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	var grpcSrv *grpcserver.Server
	var probes *httpserver.Server
	delay := lameduck.WithDrainDelay(*drainDelay)
	if *drainQuiet > 0 {
		delay = lameduck.WithAdaptiveDrainDelay(*drainMin, *drainQuiet, *drainDelay)
	}
	ld, err := lameduck.New(
		lameduck.WithGracePeriod(*gracePeriod),
		delay,
		lameduck.WithLogger(log),
	)
	if err != nil {
		fmt.Fprintf(stderr, "grpcserver: -drain-delay %v, -grace-period %v: %v\n", *drainDelay, *gracePeriod, err)
		return exitUsage
	}
	ld.OnPhase(func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseServing {
			// With ":0" addresses, this tells which ports were chosen.
			log.Info("listening", slog.Any("grpc", grpcSrv.Addr()), slog.Any("probes", probes.Addr()))
		}
	})

	grpcSrv = grpcserver.New(ld, *addr)
	testpb.RegisterTestServiceServer(grpcSrv, testService{})
	reflection.Register(grpcSrv)
	ld.Register(grpcSrv)

	// The probes flip with the gRPC health status: one Coordinator, one
	// deadline.
	if *adminAddr != "" {
		probes = httpserver.Admin(ld, *adminAddr, nil)
	} else {
		mux := http.NewServeMux()
		mux.Handle("/readyz", ld.ReadinessHandler())
		mux.Handle("/livez", ld.LivenessHandler())
		probes = httpserver.New(&http.Server{Addr: *probeAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second})
		ld.Register(probes)
	}

	if *initDelay == 0 {
		ld.MarkReady()
	} else {
		t := time.AfterFunc(*initDelay, ld.MarkReady)
		defer t.Stop()
	}
	if err := ld.Run(context.Background()); err != nil {
		fmt.Fprintf(stderr, "grpcserver: %v\n", err)
		return exitError
	}
	return exitOK
}

// maxPayload bounds the payloads the service sends: 4 MiB, the largest
// message a grpc-go client accepts by default.
const maxPayload = 4 << 20

// testService implements EmptyCall, UnaryCall, StreamingOutputCall and
// StreamingInputCall of grpc.testing.TestService; the other methods answer
// UNIMPLEMENTED.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

// UnaryCall answers with a payload of response_size zero bytes.
func (testService) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	body, err := payload(req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: body}, nil
}

// StreamingOutputCall sends one response per ResponseParameters, each of
// size zero bytes, after waiting interval_us microseconds. In the drain,
// at the stream's turn to leave, it ends with UNAVAILABLE, saying how many
// responses were sent, so that the client asks a pod that stays for the
// rest: the stream's clients reconnect spread over the departure window
// rather than all at once.
func (testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	ctx := stream.Context()
	params := req.GetResponseParameters()
	for i, p := range params {
		body, err := payload(p.GetSize())
		if err != nil {
			return err
		}
		if p.GetIntervalUs() > 0 {
			t := time.NewTimer(time.Duration(p.GetIntervalUs()) * time.Microsecond)
			select {
			case <-t.C:
			case <-lameduck.Leaving(ctx):
				t.Stop()
				return status.Errorf(codes.Unavailable, "server shutting down after %d of %d responses; reconnect for the rest", i, len(params))
			case <-ctx.Done():
				// The client went away, or, at its turn, the stream's
				// context ended first: grpcserver answers UNAVAILABLE.
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: body}); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall receives payloads until the client closes its side, and
// answers their total size. It takes no turn to leave: its one response is
// its whole result, so it finishes in the drain, or is cut at the deadline
// if its client never closes it.
func (testService) StreamingInputCall(stream testpb.TestService_StreamingInputCallServer) error {
	var total int32
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		total += int32(len(req.GetPayload().GetBody()))
	}
}

func payload(size int32) (*testpb.Payload, error) {
	if size < 0 || size > maxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "response size %d is out of range: 0 to %d bytes", size, maxPayload)
	}
	return &testpb.Payload{Type: testpb.PayloadType_COMPRESSABLE, Body: make([]byte, size)}, nil
}
