package lameducktest_test

import (
	"testing"
	"time"

	"github.com/lameduck/lameduck/lameducktest"
)

// A test that a server goes through a rolling update without failing a
// request, and exits cleanly once its drain delay is over. It builds and
// runs processes, so the example is compiled, not run.
func Example() {
	t := &testing.T{} // the test's t: func TestRollingUpdate(t *testing.T)

	bin := lameducktest.Build(t, "./cmd/myserver")
	res := lameducktest.Rollout(t, lameducktest.Config{
		// {ADDR} becomes a free 127.0.0.1:PORT address for each pod.
		Command: []string{bin, "-addr", "{ADDR}", "-drain-delay", "1s", "-grace-period", "10s"},
		Lag:     500 * time.Millisecond, // below the drain delay
		Grace:   10 * time.Second,       // the server's grace period
	})
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed:\n%v", res.Failed, res.Requests, res)
	}
	for _, ro := range res.Rollouts {
		if ro.Exit.Code != 0 || ro.Exit.Killed || ro.Exit.AfterTerm < time.Second {
			t.Errorf("the old pod did not drain for 1s and exit 0: %v", ro.Exit)
		}
	}
}

// A gRPC server serves its HTTP readiness probe on a port of its own,
// {PROBE_ADDR}; the load makes unary grpc.testing.TestService/EmptyCall
// calls. The command can be one string, split as a shell would split it.
func ExampleRollout_gRPC() {
	t := &testing.T{} // the test's t

	bin := lameducktest.Build(t, "./cmd/mygrpcserver", "-race")
	res := lameducktest.Rollout(t, lameducktest.Config{
		CommandLine: bin + " -addr {ADDR} -probe-addr {PROBE_ADDR} -drain-delay 1s",
		Protocol:    lameducktest.GRPC,
		Rollouts:    3,
		Grace:       30 * time.Second, // the server's default grace period
	})
	if res.Failed > 0 {
		t.Errorf("%d of %d calls failed:\n%v", res.Failed, res.Requests, res)
	}
}
