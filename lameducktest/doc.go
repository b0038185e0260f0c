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
//			Command: []string{bin, "-addr", "{ADDR}", "-drain-delay", "1s", "-grace-period", "10s"},
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
// # What it simulates
//
// Each rollout replaces the one serving pod, as a Deployment with one
// replica, maxSurge 1 and maxUnavailable 0 does:
//
//  1. A new pod starts: the command, with {ADDR} replaced by a free
//     127.0.0.1 address. The readiness probe, GET [Config.ReadyPath], runs
//     every 100 ms; on the first 200 the pod joins the load balancer.
//  2. The old pod receives SIGTERM. The load balancer keeps routing new
//     connections to it for [Config.Lag] more, as kube-proxy does while the
//     EndpointSlice change travels to every node.
//  3. The old pod is SIGKILLed if it has not exited [Config.Grace] after its
//     SIGTERM, as the kubelet does at terminationGracePeriodSeconds.
//
// The load balancer is a userspace TCP proxy that plays kube-proxy: it picks
// a ready pod per new connection, round-robin, and pins the connection to
// that pod for its whole life, as conntrack does, so a keep-alive client goes
// on sending requests to the old pod for as long as the pod keeps the
// connection open. It passes closes and resets through as they happen: a pod
// that stopped listening during the lag shows up as a refused connection.
//
// The clients do not hide failures: HTTP/1.1 keep-alive connections written
// by hand (net/http's client silently retries an idempotent request whose
// reused connection broke, which is the very failure a badly drained server
// causes), HTTP/2 with prior knowledge (h2c), or gRPC unary calls. Each
// client reconnects through the load balancer after a "Connection: close", a
// GOAWAY or a failure, and every request that does not get a complete
// successful response counts as failed.
//
// The gRPC client is package grpcload, in the module of grpcserver, so that
// the test binary of an HTTP service compiles no gRPC: a test with Protocol
// [GRPC] imports it for its side effect,
//
//	import _ "github.com/lameduck/lameduck/grpcserver/grpcload"
//
// # What it does not simulate
//
// Real iptables, IPVS or nftables rules and conntrack, the node's network,
// cloud load balancers and ingress controllers (which lag longer and may
// retry, or not, in ways of their own), TLS, preStop hooks, several replicas
// and clients that balance on their own. The default lag, 1 s, is about
// what kube-proxy takes at the most, and far less than a cloud load
// balancer: the test checks that the server drains correctly when the load
// balancer lags, not that its drain delay is long enough for a given
// cluster. Set the drain delay of production from your cluster's lag,
// and keep the test's Lag below the drain delay the test gives the server.
//
// # Reading the result
//
// [Result.Failed] is the number of failed requests, and zero is the bar.
// [Result.Failures] splits them by what the client saw:
//
//   - "refused": the connection reached no server. The pod stopped
//     listening while the load balancer still routed to it: no drain delay,
//     or one shorter than the lag.
//   - "reset", "eof": the connection broke under a request. The server
//     closed a keep-alive connection a client had just written a request
//     on (as http.Server.Shutdown and SetKeepAlivesEnabled(false) do to
//     idle connections), dropped a request it read, or was killed.
//   - "5xx": the server answered with an error, for example from a
//     dependency it closed too early.
//   - "timeout": no complete response within 5 s.
//   - "other": anything else, such as an unexpected status.
//
// Each [RolloutResult] says how its old pod exited ([PodExit]). A clean
// drain exits with code 0, not killed, a little after the server's drain
// delay and well before the grace period: an exit before the drain delay
// ends means the server stopped while it could still receive connections, an
// exit near the grace period means something held the drain up (a stream
// that never ends, an idle HTTP/2 connection waited for, a hook). The
// String method of [Result] gives a report with the first error of each
// kind, which is what to print when a test fails.
//
// When the test fails, Rollout also records the rolling update to a JSON
// file, names it in the test log, and says how to draw it:
//
//	go run github.com/lameduck/lameduck/cmd/rollout@latest -draw rollout.json -report rollout.png
//
// (use the version of lameduck in your go.mod for latest). The picture has
// one lane per pod, the requests each pod served, every failed request
// marked by kind at the moment it failed, and each pod's readiness,
// SIGTERM, removal from the load balancer, listener close and exit.
// Failures that come right after a SIGTERM, before the pod's removal, are a
// drain delay shorter than the lag; failures at the moment the listener
// closes are connections closed under their clients. With go test
// -artifacts (Go 1.26 and later) the file goes to the test's artifact
// directory, so CI can keep it; otherwise to a new temporary directory.
// The drawing is left to the command so that the plotting library is no
// dependency of your tests: the record needs only the standard library.
//
// # Processes and cleanup
//
// Every address is on loopback, and a run is bounded: each step has a
// timeout, and a run stops before the test's deadline (go test -timeout).
// Rollout stops every pod before it returns, whether it succeeds or calls
// Fatalf, and every goroutine with them; on Linux the kernel also kills the
// pods if the test process dies. The pods' output goes to the test log, at
// the end of the test, only if the test failed or go test ran with -v.
//
// Rollout needs a Unix-like system, to send SIGTERM; elsewhere it skips the
// test.
package lameducktest
