package lameducktest_test

import (
	"fmt"
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

// A rollout prints as a sentence: what failed, and how the old pod ended.
func ExampleRolloutResult_String() {
	clean := lameducktest.RolloutResult{
		Requests: 52310,
		Exit: lameducktest.PodExit{Pod: "pod-1", Status: "exit status 0", AfterTerm: 2003 * time.Millisecond,
			DrainDelay: 2001 * time.Millisecond, LastArrival: 17 * time.Millisecond},
	}
	fmt.Println(clean)
	naive := lameducktest.RolloutResult{
		Requests: 31000, Failed: 47, Failures: map[string]int64{"refused": 31, "eof": 16},
		Exit: lameducktest.PodExit{Pod: "pod-2", Status: "exit status 0", AfterTerm: 9 * time.Millisecond},
	}
	fmt.Println(naive)
	// Output:
	// 0 of 52310 requests failed while pod-1 was replaced; it exited with exit status 0 2.003s after its SIGTERM, its drain delay over after 2.001s, its last new connection 17ms after the SIGTERM.
	// 47 of 31000 requests failed (16 eof, 31 refused) while pod-2 was replaced; it exited with exit status 0 9ms after its SIGTERM.
}
