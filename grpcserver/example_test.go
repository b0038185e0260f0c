package grpcserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
)

// A gRPC server that goes through a rolling update without failing an RPC:
// on SIGTERM, health turns NOT_SERVING, clients are sent away gently while
// everything is still served for the drain delay, then the server drains.
func ExampleNew() {
	ld, err := lameduck.New(
		lameduck.WithGracePeriod(30*time.Second), // the pod's terminationGracePeriodSeconds
		lameduck.WithDrainDelay(5*time.Second),
	)
	if err != nil {
		log.Fatal(err)
	}
	s := grpcserver.New(ld, ":9090") // grpc.ServerOptions may follow, such as grpc.Creds
	testpb.RegisterTestServiceServer(s, &testpb.UnimplementedTestServiceServer{})
	reflection.Register(s)
	ld.Register(s)
	ld.MarkReady() // or later, once caches are warm
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// The health service follows the Coordinator: NOT_SERVING until MarkReady,
// SERVING then, NOT_SERVING from the first moment of the shutdown; a Watch
// stream ends when the drain begins, so that it does not hold the exit.
func Example_health() {
	ctx, shutdown := context.WithCancel(context.Background())
	serving := make(chan struct{})
	ld, err := lameduck.New(
		lameduck.WithSignals(), // this example shuts down by ending ctx
		lameduck.WithDrainDelay(10*time.Millisecond),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		log.Fatal(err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseServing {
			close(serving)
		}
	})
	s := grpcserver.New(ld, "127.0.0.1:0")
	ld.Register(s)
	done := make(chan error, 1)
	go func() { done <- ld.Run(ctx) }()
	<-serving

	cc, err := grpc.NewClient(s.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	watch, err := healthpb.NewHealthClient(cc).Watch(context.Background(), &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		log.Fatal(err)
	}
	next := func(when string) {
		resp, err := watch.Recv()
		switch {
		case errors.Is(err, io.EOF):
			fmt.Printf("%s: the Watch ended\n", when)
		case err != nil:
			fmt.Printf("%s: %v\n", when, err)
		default:
			fmt.Printf("%s: %v\n", when, resp.Status)
		}
	}
	next("starting")
	ld.MarkReady()
	next("ready")
	shutdown() // as if SIGTERM arrived
	next("lame duck")
	next("draining")
	fmt.Println("Run returned", <-done)
	// Output:
	// starting: NOT_SERVING
	// ready: SERVING
	// lame duck: NOT_SERVING
	// draining: the Watch ended
	// Run returned <nil>
}
