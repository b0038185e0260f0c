package grpcserver_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/internal/testnet"
)

func TestIdleClientsDoNotDelayTheExit(t *testing.T) {
	serverTLS, clientTLS := testnet.TLS()
	for _, tt := range []struct {
		name       string
		serverOpts []grpc.ServerOption
		creds      credentials.TransportCredentials
	}{
		{"plaintext", nil, insecure.NewCredentials()},
		{"TLS", []grpc.ServerOption{grpc.Creds(credentials.NewTLS(serverTLS))}, credentials.NewTLS(clientTLS)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const delay = time.Second
			h := newHarnessWith(t, tt.serverOpts, lameduck.WithDrainDelay(delay))
			h.ld.MarkReady()
			h.start(t)
			connect := func() testpb.TestServiceClient {
				cc, err := grpc.NewClient(h.srv.Addr().String(), grpc.WithTransportCredentials(tt.creds))
				require.NoError(t, err)
				t.Cleanup(func() { cc.Close() })
				client := testpb.NewTestServiceClient(cc)
				_, err = client.EmptyCall(ctx(t), &testpb.Empty{})
				require.NoError(t, err)
				return client
			}
			for range 3 {
				connect() // left idle across the signal
			}
			stream, err := connect().StreamingOutputCall(ctx(t), &testpb.StreamingOutputCallRequest{
				ResponseParameters: []*testpb.ResponseParameters{{Size: 10}},
			})
			require.NoError(t, err)
			h.svc.awaitStarted(t)

			h.signal(t)
			h.clock.Pass(t, delay)
			h.await(t, lameduck.PhaseDraining)
			h.svc.release(t)
			resp, err := stream.Recv()
			require.NoError(t, err, "the stream in flight is answered in full")
			assert.Len(t, resp.GetPayload().GetBody(), 10)
			_, err = stream.Recv()
			require.True(t, isEOF(err), "%v", err)
			answered := time.Now()
			require.NoError(t, h.wait(t))
			// The drain deadline is on the fake clock: the shutdown ended
			// because every connection had gone. Idle clients could only
			// have held it until a real timer of the Server or grpc-go,
			// the shortest a second (handshakeGrace), as long as the
			// delay; the exit itself takes about a millisecond, which
			// leaves a loaded machine hundreds.
			assert.Less(t, time.Since(answered), delay, "the shutdown ends right after the last response")
		})
	}
}
