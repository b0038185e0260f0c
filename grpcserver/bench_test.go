package grpcserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/internal/await"
)

// BenchmarkUnary measures a unary RPC over loopback TCP through the adapter
// and through a bare grpc.Server, in the same run, so that the ratio of the
// two is the adapter's overhead: the hand-off of the connection, the
// interceptor that counts RPCs in flight, and the wrapped connection.
//
//	go test -run '^$' -bench Unary -benchmem ./grpcserver
func BenchmarkUnary(b *testing.B) {
	servers := []struct {
		name  string
		start func(b *testing.B) string // returns the address to dial
	}{
		{"bare", startBare},
		{"grpcserver", startAdapter},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, srv := range servers {
			b.Run(mode+"/"+srv.name, func(b *testing.B) {
				cc, err := grpc.NewClient(srv.start(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				client := testpb.NewTestServiceClient(cc)
				ctx := context.Background()
				if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil { // connect
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				if mode == "serial" {
					for b.Loop() {
						if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkUnaryRatio alternates unary RPCs through a bare grpc.Server and
// through the adapter, one each per iteration, and reports the time of each
// and their ratio: interleaving them cancels out the drift of a busy
// machine, which separate benchmarks suffer from.
func BenchmarkUnaryRatio(b *testing.B) {
	var clients [2]testpb.TestServiceClient
	for i, start := range []func(*testing.B) string{startBare, startAdapter} {
		cc, err := grpc.NewClient(start(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		clients[i] = testpb.NewTestServiceClient(cc)
		if _, err := clients[i].EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
			b.Fatal(err)
		}
	}
	var spent [2]time.Duration
	ctx := context.Background()
	n := 0
	for b.Loop() {
		for j := range clients {
			i := (j + n) % 2 // each goes first every other time
			start := time.Now()
			if _, err := clients[i].EmptyCall(ctx, &testpb.Empty{}); err != nil {
				b.Fatal(err)
			}
			spent[i] += time.Since(start)
		}
		n++
	}
	b.ReportMetric(float64(spent[0].Nanoseconds())/float64(n), "bare-ns/call")
	b.ReportMetric(float64(spent[1].Nanoseconds())/float64(n), "grpcserver-ns/call")
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "ratio")
}

// BenchmarkStream measures a server-streaming RPC of one message over
// loopback TCP through the adapter and through a bare grpc.Server: the
// adapter's cost per stream, which BenchmarkUnary does not see.
//
//	go test -run '^$' -bench Stream -benchmem ./grpcserver
func BenchmarkStream(b *testing.B) {
	for _, srv := range []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"bare", startBare},
		{"grpcserver", startAdapter},
	} {
		b.Run(srv.name, func(b *testing.B) {
			cc, err := grpc.NewClient(srv.start(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			client := testpb.NewTestServiceClient(cc)
			ctx := context.Background()
			req := &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}}}
			b.ReportAllocs()
			for b.Loop() {
				stream, err := client.StreamingOutputCall(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := stream.Recv(); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}

// benchService is testService with a StreamingOutputCall that sends at
// once, with no gate.
type benchService struct{ *testService }

func (benchService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	for _, p := range req.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func startBare(b *testing.B) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, benchService{newTestService()})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	b.Cleanup(func() { srv.Stop(); await.Recv(b, served, "Serve to return") })
	return lis.Addr().String()
}

func startAdapter(b *testing.B) string {
	serving := make(chan struct{})
	ld, err := lameduck.New(
		lameduck.WithSignals(), lameduck.WithDrainDelay(0),
		lameduck.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		b.Fatal(err)
	}
	ld.OnPhase(func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseServing {
			close(serving)
		}
	})
	s := grpcserver.New(ld, "127.0.0.1:0")
	testpb.RegisterTestServiceServer(s, benchService{newTestService()})
	ld.Register(s)
	ld.MarkReady()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ld.Run(ctx) }()
	await.Recv(b, serving, "Run to serve")
	b.Cleanup(func() {
		stop()
		if err := await.Recv(b, done, "Run to return"); err != nil {
			b.Error(err)
		}
	})
	return s.Addr().String()
}
