package httpserver_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/rollout"
)

// pod is a server behind the miniature load balancer.
type pod struct {
	addr string
	// terminate starts the shutdown, as SIGTERM would, and waits for it
	// to end.
	terminate func() error
}

func okMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	return mux
}

var quiet = log.New(io.Discard, "", 0)

// plainPod is a net/http server that calls Shutdown on SIGTERM, as most
// recipes say.
func plainPod(t *testing.T) pod {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: okMux(), ErrorLog: quiet}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return pod{addr: ln.Addr().String(), terminate: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		err := srv.Shutdown(ctx)
		if serr := await.Recv(t, served, "Serve to return"); !errors.Is(serr, http.ErrServerClosed) {
			return serr
		}
		return err
	}}
}

// lameduckPod is the same server run by lameduck.
func lameduckPod(t *testing.T, delay time.Duration) pod {
	signals := make(chan os.Signal, 1)
	serving := make(chan struct{})
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithSignalChannel(signals), lameduck.WithLogger(discard),
		lameduck.WithDrainDelay(delay), lameduck.WithGracePeriod(10*time.Second))
	require.NoError(t, err)
	ld.OnPhase(func(e lameduck.Event) {
		if e.Phase == lameduck.PhaseServing {
			close(serving)
		}
	})
	srv := httpserver.New(&http.Server{Addr: "127.0.0.1:0", Handler: okMux(), ErrorLog: quiet})
	ld.Register(srv)
	ld.MarkReady()
	done := make(chan error, 1)
	go func() { done <- ld.Run(context.Background()) }()
	select {
	case <-serving:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return pod{addr: srv.Addr().String(), terminate: func() error { signals <- os.Interrupt; return await.Recv(t, done, "Run to return") }}
}

// TestRollingUpdateInMiniature replays a rolling update on loopback: a load
// balancer that, like kube-proxy, keeps sending new connections to the old
// pod for a while after its SIGTERM, and keep-alive clients that do not
// retry. A server that calls Shutdown on SIGTERM fails requests; the same
// server run by lameduck fails none.
func TestRollingUpdateInMiniature(t *testing.T) {
	const lag, delay = 200 * time.Millisecond, 400 * time.Millisecond
	for _, tt := range []struct {
		name     string
		old      func(t *testing.T) pod
		wantFail bool
	}{
		{"Shutdown on SIGTERM", plainPod, true},
		{"lameduck", func(t *testing.T) pod { return lameduckPod(t, delay) }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lb, err := rollout.NewProxy("127.0.0.1:0")
			require.NoError(t, err)
			defer lb.Close()
			old, next := tt.old(t), plainPod(t)
			lb.AddEndpoint(old.addr)

			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			load, err := rollout.StartLoad(ctx, rollout.LoadConfig{Kind: rollout.LoadHTTP1, Addr: lb.Addr(), Conns: 8, WorkersPerConn: 1})
			require.NoError(t, err)
			defer load.Stop()
			select {
			case <-load.FirstSuccess():
			case <-ctx.Done():
				t.Fatal("no request succeeded before the rollout")
			}

			// The new pod is ready; the old one gets SIGTERM, and the load
			// balancer drops its endpoint only after the lag.
			lb.AddEndpoint(next.addr)
			removed := make(chan struct{})
			time.AfterFunc(lag, func() { lb.RemoveEndpoint(old.addr); close(removed) })
			require.NoError(t, old.terminate())
			await.Recv(t, removed, "the endpoint's removal")
			got := load.Stop()
			t.Logf("%s: %d requests, %s", tt.name, got.Requests, got.Summary())
			if tt.wantFail {
				assert.Positive(t, got.Failed(), "the simulation must reproduce the failures of a plain Shutdown")
			} else {
				assert.Zero(t, got.Failed(), got.Summary())
			}
			next.terminate()
		})
	}
}
