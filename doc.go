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
//	ld.OnShutdown("db", func(ctx context.Context) error { return db.Close() })
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
// Why each step is needed is in the repository's docs/, and every
// measurement in docs/measurements.md.
//
// # The sequence
//
// [Coordinator.Run] documents the sequence step by step. In short, on
// SIGTERM readiness turns 503 while liveness stays 200; for the drain delay
// everything is still served while every response asks its client to
// reconnect elsewhere; then the servers stop accepting, in-flight work
// finishes, long-lived connections leave at their turns ([Leaving]), and
// the process exits as soon as the last one is gone, or cuts what is left
// at the deadline.
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
// where the departure window, if set, takes part of the drain.
//
// With the defaults (see [DefaultGracePeriod] and the constants after it)
// in-flight work has up to 20 s to finish after the delay. Set
// [WithGracePeriod] to the pod's terminationGracePeriodSeconds; [New]
// rejects settings that leave no time to drain, and lists every change that
// would fit. Every shutdown logs and reports ([Event], [DelayReport]) when
// the last new connection arrived after the signal: the load balancer's lag,
// which the drain delay must cover. [WithAdaptiveDrainDelay] ends the delay
// on evidence that routing has caught up, the cluster's EndpointSlices in
// Kubernetes, instead of always lasting the longest lag a cluster might
// have.
//
// # Servers of your own
//
// Anything that accepts connections can take part by implementing [Server];
// package github.com/lameduck/lameduck/inflight counts its in-flight work
// and tells it, without polling, when the last piece is done. That is all
// an adapter's author needs beyond this package, and it is kept apart so
// that this package's index is what a service's author reads. Background
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
