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
