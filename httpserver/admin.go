package httpserver

import (
	"net/http"
	"time"

	"github.com/lameduck/lameduck"
)

// Admin registers with ld an admin server on addr (see
// [lameduck.Coordinator.RegisterAdmin]) and returns it: a plain HTTP server
// that answers the readiness probe at /readyz, the liveness probe at /livez
// and, if metrics is not nil, metrics scrapes at /metrics, such as
// promhttp.Handler() of Prometheus' client_golang; every other path is 404.
//
//	httpserver.Admin(ld, ":9102", promhttp.Handler())
//
// Unlike the application's servers, it keeps accepting and answering,
// keep-alive connections included, through the drain delay and the drain,
// so that the kubelet's readiness probes get 503 rather than "connection
// refused", and the shutdown can be scraped while it happens; it closes as
// [lameduck.Coordinator.Run] returns. Run fails before the process turns
// ready if addr is in use.
//
// For other handlers on the admin address, such as net/http/pprof, build
// the mux and register it yourself:
//
//	mux := http.NewServeMux()
//	mux.Handle("/readyz", ld.ReadinessHandler())
//	mux.Handle("/livez", ld.LivenessHandler())
//	mux.Handle("/debug/pprof/", http.HandlerFunc(pprof.Index))
//	ld.RegisterAdmin(httpserver.New(&http.Server{Addr: ":9102", Handler: mux}))
//
// Admin panics if ld is nil, or if Run has been called.
func Admin(ld *lameduck.Coordinator, addr string, metrics http.Handler) *Server {
	if ld == nil {
		panic("httpserver: Admin: the coordinator is nil; create one with lameduck.New")
	}
	mux := http.NewServeMux()
	mux.Handle("/readyz", ld.ReadinessHandler())
	mux.Handle("/livez", ld.LivenessHandler())
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
	s := New(&http.Server{
		Addr:    addr,
		Handler: mux,
		// Probers and scrapers send small requests: a client that takes
		// longer than this to send its headers holds a connection for
		// nothing.
		ReadHeaderTimeout: 5 * time.Second,
		// Prometheus keeps its connection between scrapes (15 s to 1 min
		// apart, typically); longer idle connections are closed.
		IdleTimeout: 2 * time.Minute,
	})
	ld.RegisterAdmin(s)
	return s
}
