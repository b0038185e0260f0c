// Package rollout replays a Kubernetes rolling update on one machine, on
// loopback only, without root and without a cluster, and counts every request
// that fails while it happens.
//
// The pieces mirror what a real rollout does to a Deployment's pods:
//
//   - [Proxy] plays kube-proxy: a userspace TCP load balancer that pins each
//     client connection to one ready endpoint for its whole life (as conntrack
//     does) and propagates closes and resets faithfully, so a pod that stops
//     listening is seen by clients as a reset, not hidden behind a retry.
//   - Pods are real processes started from a command template in which
//     {ADDR} (and {PROBE_ADDR}) are replaced by loopback addresses. A new pod
//     joins the load balancer only once its readiness probe answers 200; an
//     old pod gets SIGTERM, stays in the load balancer for [Config.Lag] more
//     (kube-proxy lagging behind the EndpointSlice), and is SIGKILLed if it
//     has not exited after [Config.Grace].
//   - [StartLoad] runs clients that do not hide failures through every
//     rollout: raw HTTP/1.1 keep-alive connections ([HTTP1Client], because
//     net/http's client silently retries idempotent requests whose reused
//     connection broke), HTTP/2 with prior knowledge (h2c), gRPC unary
//     calls, whose client package grpcload gives ([Config.Client]) so
//     that only the programs that import it compile gRPC, or long-lived
//     websockets and event streams of numbered messages ([LoadWebSocket],
//     [LoadSSE]) that resume through the load balancer whenever a pod
//     sends them away and count any lost message. Each failure is
//     classified as a [record.Kind].
//
// [Config.Check] fills in the one set of defaults and names every bad
// setting as its caller spells it. [Run] ties the parts together and
// returns a [Result]; [Result.WriteText] ends with one machine-readable
// line of the totals, "requests=N failed=F" and the failures by kind.
// [Result.Timeline] keeps what happened over time, pod by pod, for a
// picture of the run ([Result.Record] makes it a record.Run, which the
// rollout command draws): the requests each pod served per interval, each
// failure with its time, kind and pod, and the events of each pod's life.
// Recording it costs a request a clock read and an atomic load, and no
// lock.
//
// Three built-in HTTP servers can be run as pods by re-executing the current
// binary (see [MaybeServePod] and [BuiltinPod]): "naive" calls
// http.Server.Shutdown on SIGTERM, "textbook" turns readiness off, disables
// keep-alives, waits and then shuts down, and "lameduck" uses this project's
// library. Comparing them is how the project shows why the library exists.
// Each also serves a websocket ([WebSocketPath]) and an event stream
// ([EventsPath]) for the stream loads, written on the standard library
// alone; only the lameduck pod sends them away, spread over its departure
// window.
package rollout
