// Package lameducktest checks, in a go test, that a server goes through a
// Kubernetes rolling update without failing a request.
//
// [Rollout] runs the server as real processes, one pod after another, behind
// a load balancer on loopback that lags behind the rollout as kube-proxy
// does, drives load through it with clients that never retry, sends the old
// pod SIGTERM, and reports every failed request and how the old pod exited.
// [Build] compiles the server for it. The server may use package lameduck or
// not: only its behaviour on the wire and its exit are observed.
//
//	func TestRollingUpdate(t *testing.T) {
//		bin := lameducktest.Build(t, "./cmd/myserver")
//		res := lameducktest.Rollout(t, lameducktest.Config{
//			Command: []string{bin, "-addr", "{ADDR}", "-drain-delay", "2s", "-grace-period", "10s"},
//		})
//		if res.Failed > 0 {
//			t.Errorf("%d of %d requests failed:\n%v", res.Failed, res.Requests, res)
//		}
//		for _, ro := range res.Rollouts {
//			if ro.Exit.Code != 0 || ro.Exit.Killed {
//				t.Errorf("old pod: %v", ro.Exit)
//			}
//		}
//	}
//
// Each rollout replaces the one serving pod, as a Deployment with one
// replica, maxSurge 1 and maxUnavailable 0 does:
//
//  1. A new pod starts and joins the load balancer once its readiness probe,
//     GET [Config.ReadyPath], answers 200.
//  2. The old pod receives SIGTERM. The load balancer keeps routing new
//     connections to it for [Config.Lag] more, and keeps the open ones
//     pinned to it, as kube-proxy and conntrack do.
//  3. The old pod is SIGKILLed if it has not exited [Config.Grace] after its
//     SIGTERM.
//
// [Result.Failed] counts the failed requests, and zero is the bar.
// [Result.Failures] splits them by what the client saw: "refused" (the pod
// stopped listening while the load balancer still routed to it), "reset"
// and "eof" (a connection closed under a request), "5xx", "timeout" (no
// complete response within 5 s) and "other". A clean drain exits with code
// 0, not killed ([PodExit]), a little after the drain delay. When the test
// fails, Rollout records the rolling update to rollout.json, and the log
// says how to draw it with the rollout command.
//
// The test checks that the server drains correctly when the load balancer
// lags, not that its drain delay is long enough for a given cluster: it
// simulates no iptables or conntrack, cloud load balancer, TLS, preStop hook
// or second replica. Keep [Config.Lag] below the drain delay the test gives
// the server. A test with Protocol [GRPC] gives its client as [Config.Load],
// grpcload.Load() from the module of grpcserver.
//
// With Protocol [WebSocket] or [SSE], each client holds one long-lived
// subscription through the load balancer and counts the numbered messages
// it receives as requests. When the old pod sends a client away (a close
// with 1012 or 1001, an event stream ended after its retry field), the
// client reconnects through the load balancer and resumes after its last
// message; a gap in the numbers, or any other end, is a failure.
// [RolloutResult] says how many were sent away and reconnected, and the
// most reconnections in any 100 ms ([RolloutResult.PeakReconnects]):
// close to all of them when a server sends its clients away at once, a
// small share when it spreads them out. Every pod has stopped when Rollout returns. Rollout needs a
// Unix-like system, to send SIGTERM; elsewhere it skips the test.
//
// What the simulation does, what each failure means, and how to read the
// picture: [docs/lameducktest.md].
//
// [docs/lameducktest.md]: https://github.com/lameduck/lameduck/blob/main/docs/lameducktest.md
package lameducktest
