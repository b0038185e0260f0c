// Package lameduck lets a service on Kubernetes go through a rolling update
// without failing a single request.
//
// A [Coordinator] runs the process's servers (see packages
// github.com/lameduck/lameduck/httpserver and
// github.com/lameduck/lameduck/grpcserver) and background workers, answers
// the readiness and liveness probes, and on SIGTERM runs the shutdown
// sequence that every team otherwise rewrites by hand:
//
//	ld, err := lameduck.New()
//	if err != nil {
//		log.Fatal(err)
//	}
//	mux.Handle("/readyz", ld.ReadinessHandler())
//	mux.Handle("/livez", ld.LivenessHandler())
//	ld.Register(httpserver.New(&http.Server{Addr: ":8080", Handler: mux}))
//	ld.OnShutdown(func(ctx context.Context) error { return db.Close() }, lameduck.Named("db"))
//	ld.MarkReady() // or later, once caches are warm
//	if err := ld.Run(context.Background()); err != nil {
//		log.Fatal(err)
//	}
//
// A service that already ends a context on SIGTERM, as the os/signal
// documentation shows, passes it to Run:
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	...
//	if err := ld.Run(ctx); err != nil {
//		log.Fatal(err)
//	}
//
// Both wirings, and a signal handler of the service's own that cancels the
// context, run the same sequence: one signal that reaches Run several ways
// counts once, and only a second delivery forces the shutdown.
//
// # The problem, as a timeline
//
// A rolling update deletes an old pod, and two things then happen in
// parallel. The kubelet sends the container SIGTERM, and SIGKILL after
// terminationGracePeriodSeconds (30 s by default). Meanwhile the endpoint is
// marked terminating, and every node's kube-proxy, then ingress controllers
// and cloud load balancers, stop routing to the pod: this takes from a
// fraction of a second to many seconds. Until it is done, new connections
// keep arriving. Connections already open stay pinned to the pod, and a
// keep-alive client goes on sending requests on them for as long as the pod
// keeps them open.
//
// A server that calls [net/http.Server.Shutdown] on SIGTERM therefore
// refuses the connections that are still being routed to it and races the
// requests that keep-alive clients are sending on connections it closes.
// Turning readiness off and disabling keep-alives before a delay is not
// enough either: closing an idle keep-alive connection races a client that
// has just written a request on it.
//
// # The sequence
//
// [Coordinator.Run] documents each step; in short:
//
//  1. Listeners are bound first: an address in use fails Run at once,
//     before the process can turn ready. [Coordinator.MarkReady] then turns
//     readiness on, once initialisation is done.
//  2. On SIGTERM (or SIGINT, or the end of Run's context), readiness answers
//     503 at once and for good; liveness keeps answering 200.
//  3. For the drain delay ([WithDrainDelay]), everything is still served,
//     but every response asks its client to leave gently: HTTP/1 responses
//     carry "Connection: close", HTTP/2 and gRPC connections receive a
//     graceful GOAWAY. Clients reconnect through the Service, which by then
//     routes elsewhere. A process that never became ready skips the delay.
//  4. Servers stop accepting connections.
//  5. In-flight requests, RPCs and streams finish; long-lived work is told
//     to wrap up through [Coordinator.Entered] (PhaseDraining; or, to move
//     its clients during the delay, PhaseLameDuck). The end of the drain
//     is detected by events, so the process exits as soon as the last
//     response is out.
//  6. At the deadline, before the grace period ends, whatever remains is
//     cut and reported ([ErrCut]); shutdown hooks ([Coordinator.OnShutdown])
//     run, and Run returns. A second signal cuts everything at once.
//
// # Readiness and liveness
//
// [Coordinator.ReadinessHandler] answers 503 "starting" before MarkReady,
// 200 "ok" while ready and every [Check] passes, and 503 "shutting down"
// from the first moment of the shutdown, never 200 again. It speaks the
// dialect of the Kubernetes API server's /readyz: ?verbose lists each check,
// ?exclude=name skips one. Checks run concurrently, each with a timeout, and
// probes arriving while a check runs share its result.
//
// [Coordinator.LivenessHandler] answers 200 for as long as the process runs:
// a liveness probe that failed during the drain would make the kubelet kill
// the pod early.
//
// # Kubernetes timing
//
// The settings must fit in the pod's grace period:
//
//	drain delay + drain + hook timeout + safety margin <= terminationGracePeriodSeconds
//
// With the defaults — grace period 30 s ([DefaultGracePeriod]), drain delay
// 5 s, hook timeout 3 s, safety margin 2 s — in-flight work has up to 20 s to
// finish after the delay. Set [WithGracePeriod] to the pod's
// terminationGracePeriodSeconds, and the drain delay above the time your
// load balancers take to stop routing to a terminating pod. With a grace
// period under 30 s the default hook timeout and safety margin are a tenth
// of it each (at most 3 s and 2 s), so that short grace periods fit:
//
//	grace period   drain delay   hook timeout   safety margin   left to drain
//	30 s           5 s           3 s            2 s             20 s
//	10 s           5 s           1 s            1 s             3 s
//	5 s            1 s           0.5 s          0.5 s           3 s
//
// Every shutdown measures the load balancer's lag: the log line that ends
// the lame-duck phase ("lameduck: draining") and the [Event] say when the
// last new connection arrived after the signal, and on which server, and
// a warning says when it came near the end of the delay. With
// [WithAdaptiveDrainDelay] the delay ends on evidence that routing has
// caught up, the cluster's EndpointSlices in Kubernetes, instead of always
// lasting the longest lag a cluster might have.
//
// A hook timeout or safety margin set explicitly is honoured exactly. [New]
// rejects settings that leave no time to drain, and lists every change that
// would fit: the grace period, the delay, the hook timeout or the margin. Give the
// readiness probe a short period (periodSeconds: 1 to 5) so that new pods
// join quickly; the shutdown does not depend on it, because endpoints are
// removed as soon as the pod is deleted.
//
// # Servers of your own
//
// Anything that accepts connections can take part by implementing [Server];
// a [Tracker] counts its in-flight work and tells it, without polling, when
// the last piece is done; [Arrivals], through [ArrivalReporter], tells the
// Coordinator which connections arrived during the drain delay. Background
// work that is not a server, such as a queue consumer, is started with
// [Coordinator.Go].
//
// # Watching a shutdown
//
// The kubelet keeps probing a terminating pod's readiness and Prometheus
// keeps scraping it, while the application's listener closes when the drain
// begins. [Coordinator.RegisterAdmin] runs a server of its own for probes
// and metrics (httpserver.Admin makes one in a line) that answers through
// the delay and the drain and closes only as Run returns.
// [Coordinator.Status] tells an exporter, at scrape time, the phase, the
// work in flight per server, what was cut and what the checks said (package
// github.com/lameduck/lameduck/prommetrics exports it to Prometheus), and
// [Coordinator.CheckReadiness] lets a server that publishes readiness itself,
// such as the gRPC health service, decide it as /readyz does.
package lameduck
