package record_test

import (
	"fmt"
	"log"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// Reading a record, such as the rollout.json of a failed lameducktest, and
// printing what each run's clients saw and how each pod exited.
func ExampleReadFile() {
	runs, err := record.ReadFile("testdata/runs.json")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range runs {
		fmt.Printf("%s: %d of %d %s requests failed\n", r.Name, r.Failed(), r.Requests, r.Settings.Load)
		for k, n := range r.Failures {
			if n > 0 {
				fmt.Printf("  %s=%d\n", record.Kind(k), n)
			}
		}
		for _, p := range r.Timeline.Pods {
			if p.Exited != record.Never {
				fmt.Printf("  %s: %s %s after its SIGTERM\n", p.Name, p.Exit.Status, p.Exit.AfterTerm)
			}
		}
	}
	// Output:
	// server: 3 of 10 http1 requests failed
	//   refused=2
	//   eof=1
	//   pod-1: exit status 0 1s after its SIGTERM
	// lameduck: 3 of 10 websocket requests failed
	//   refused=2
	//   eof=1
	//   pod-1: signal: killed 10s after its SIGTERM
}
