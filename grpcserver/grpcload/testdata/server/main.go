// Command server is the smallest gRPC server that lameduck drains: the
// pod of grpcload's test.
package main

import (
	"context"
	"flag"
	"log"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/httpserver"
)

type service struct {
	testgrpc.UnimplementedTestServiceServer
}

func (service) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func main() {
	addr := flag.String("addr", ":9090", "address to serve gRPC on")
	probeAddr := flag.String("probe-addr", ":8081", "address to serve /readyz and /livez on")
	delay := flag.Duration("drain-delay", lameduck.DefaultDrainDelay, "drain delay")
	flag.Parse()
	ld, err := lameduck.New(lameduck.WithDrainDelay(*delay))
	if err != nil {
		log.Fatal(err)
	}
	s := grpcserver.New(ld, *addr)
	testgrpc.RegisterTestServiceServer(s, service{})
	ld.Register(s)
	httpserver.Admin(ld, *probeAddr, nil)
	ld.MarkReady()
	if err := ld.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
