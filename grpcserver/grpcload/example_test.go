package grpcload_test

import (
	"testing"
	"time"

	"github.com/lameduck/lameduck/grpcserver/grpcload"
	"github.com/lameduck/lameduck/lameducktest"
)

// A gRPC server serves its HTTP readiness probe on a port of its own,
// {PROBE_ADDR}; the load, grpcload's, makes unary
// grpc.testing.TestService/EmptyCall calls. The command can be one string, split as a shell would split it.
// It builds and runs processes, so the example is compiled, not run.
func Example() {
	t := &testing.T{} // the test's t: func TestRollingUpdate(t *testing.T)

	bin := lameducktest.Build(t, "./cmd/mygrpcserver", "-race")
	res := lameducktest.Rollout(t, lameducktest.Config{
		CommandLine: bin + " -addr {ADDR} -probe-addr {PROBE_ADDR} -drain-delay 1s",
		Protocol:    lameducktest.GRPC,
		Load:        grpcload.Load(),
		Rollouts:    3,
		Grace:       30 * time.Second, // the server's default grace period
	})
	if res.Failed > 0 {
		t.Errorf("%d of %d calls failed:\n%v", res.Failed, res.Requests, res)
	}
}
