package grpcserver_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/grpcserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/testnet"
)

// BenchmarkExitLatency measures, in the clear and over TLS, for each
// thing the clients do across the signal, the time from the end of the
// drain delay, or from the last response if it comes later, to the end of
// the shutdown: through lameduck, and through a bare grpc.Server's
// GracefulStop called after the same delay, one of each per iteration;
// it reports both and their ratio.
//
//	go test -run '^$' -bench ExitLatency ./grpcserver
func BenchmarkExitLatency(b *testing.B) {
	testnet.RaiseFileLimit(b, 2*5000+500)
	for _, proto := range []string{"grpc", "grpc-tls"} {
		// As in package httpserver's: the drain delay is long enough for
		// the clients told to leave during it to do so, as in a real
		// rollout, whose delay is seconds.
		for _, sc := range []struct {
			name     string
			idle     int
			inFlight bool
			delay    time.Duration
		}{
			{"none", 0, false, 100 * time.Millisecond},
			{"idle", 1, false, 100 * time.Millisecond},
			{"idle+inflight", 1, true, 100 * time.Millisecond},
			{"idle1000", 1000, false, time.Second},
			{"idle5000", 5000, false, time.Second},
		} {
			b.Run(proto+"/"+sc.name, func(b *testing.B) {
				var ld, gs time.Duration
				for b.Loop() {
					ld += grpcExit(b, proto == "grpc-tls", sc.idle, sc.inFlight, sc.delay, true)
					gs += grpcExit(b, proto == "grpc-tls", sc.idle, sc.inFlight, sc.delay, false)
				}
				b.ReportMetric(float64(ld.Microseconds())/float64(b.N)/1000, "lameduck-ms")
				b.ReportMetric(float64(gs.Microseconds())/float64(b.N)/1000, "GracefulStop-ms")
				b.ReportMetric(float64(ld)/float64(gs), "ratio")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// holdService answers UnaryCall after a while longer than the drain delay,
// and records when it answered.
type holdService struct {
	testpb.UnimplementedTestServiceServer
	hold     time.Duration
	answered time.Time
}

func (s *holdService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (s *holdService) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	time.Sleep(s.hold) // the RPC's own work
	s.answered = time.Now()
	return &testpb.SimpleResponse{}, nil
}

// grpcExit runs one shutdown with idle clients, each on a connection of
// its own, and an RPC in flight across the signal if inFlight, and returns
// the time from max(end of the delay, last response) to the end of the
// shutdown.
func grpcExit(b *testing.B, tlsOn bool, idle int, inFlight bool, delay time.Duration, lameduckServer bool) time.Duration {
	svc := &holdService{hold: delay + 20*time.Millisecond}
	serverTLS, clientTLS := testnet.TLS()
	var opts []grpc.ServerOption
	creds := insecure.NewCredentials()
	if tlsOn {
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
		creds = credentials.NewTLS(clientTLS)
	}
	var drainStart, exited time.Time
	done := make(chan struct{})
	var addr string
	var terminate func()
	if lameduckServer {
		var s *grpcserver.Server
		terminate = testnet.RunCoordinator(b, delay, func(ld *lameduck.Coordinator) lameduck.Server {
			s = grpcserver.New(ld, "127.0.0.1:0", opts...)
			testpb.RegisterTestServiceServer(s, svc)
			return s
		}, &drainStart, &exited, done)
		addr = s.Addr().String()
	} else {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := grpc.NewServer(opts...)
		testpb.RegisterTestServiceServer(srv, svc)
		go srv.Serve(lis)
		defer srv.Stop()
		addr = lis.Addr().String()
		terminate = func() {
			go func() {
				time.Sleep(delay) // the textbook delay
				drainStart = time.Now()
				srv.GracefulStop()
				exited = time.Now()
				close(done)
			}()
		}
	}

	ccs := make([]*grpc.ClientConn, idle)
	defer func() {
		for _, cc := range ccs {
			if cc != nil {
				cc.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const dialers = 32
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; i < idle; i += dialers {
				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
				if err == nil {
					ccs[i] = cc
					_, err = testpb.NewTestServiceClient(cc).EmptyCall(context.Background(), &testpb.Empty{})
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("idle client %d: %w", i, err):
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	answered := make(chan struct{})
	if inFlight {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		client := testpb.NewTestServiceClient(cc)
		if _, err := client.EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
			b.Fatal(err)
		}
		go func() {
			defer close(answered)
			if _, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
				b.Error(err)
			}
		}()
		// Sent before the signal: answered after the delay, it holds the
		// drain.
		time.Sleep(5 * time.Millisecond)
	} else {
		close(answered)
	}
	terminate()
	await.Recv(b, answered, "the answer to the call in flight")
	await.Recv(b, done, "the shutdown to end")
	last := drainStart
	if svc.answered.After(last) {
		last = svc.answered
	}
	return exited.Sub(last)
}
