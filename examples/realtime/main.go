// Command realtime is a real-time service that goes through a Kubernetes
// rolling update without losing a message or a client: the example behind
// the README's section on websockets and server-sent events.
//
// It serves numbered messages, message N being the text "N", one every
// -interval. The sequence is the same on every instance, so that a client
// that resumes elsewhere with the last number it got misses nothing:
//
//	GET /ws?from=N  a websocket of messages N, N+1, ... (from 1 without ?from=)
//	GET /events     server-sent events "id: N", "data: N", from Last-Event-ID + 1, else ?from=N, else 1
//	GET /           200 "ok"
//	GET /readyz     the readiness probe: 503 until ready, 200, 503 from SIGTERM on
//	GET /livez      the liveness probe: 200 while the process runs
//
// With -admin-addr, it also answers /readyz and /livez on that address,
// through the drain, as examples/httpserver does.
//
// Usage:
//
//	realtime [-addr :8080] [-admin-addr ADDR] [-interval 100ms] [-drain-delay 5s] [-drain-quiet 0 -drain-min 0] [-departure-window D] [-grace-period 30s] [-init-delay 0]
//
// On SIGTERM (or SIGINT) it turns readiness off and keeps serving for the
// drain delay, new websockets and event streams included, while the load
// balancers stop routing here. Then each websocket and event stream leaves
// at its own turn, the turns spread over -departure-window (see
// lameduck.WithDepartureWindow; by default 10 s, or half of what the grace
// period leaves to drain when that is shorter), or 10 ms apart when there
// are too few to fill it, so that the clients reconnect to the pods that
// stay at a steady rate rather than all at once:
//
//   - a websocket's handler finds lameduck.Leaving of its request's
//     context closed and closes with 1012 (service restart), giving the
//     number to resume from in the reason; its client reconnects with
//     ?from= that number;
//   - an event stream's context ends and its handler returns; package
//     httpserver then sends a "retry:" field of 100 ms to 1 s, ends the
//     stream and closes the connection, and EventSource reconnects, through
//     the load balancer, with Last-Event-ID. (httpserver knows an event
//     stream by its request's "Accept: text/event-stream", which
//     EventSource sends; a stream asked for without it has no turn.)
//
// The process exits as soon as the last of them has left: 0 after a clean
// drain, 1 when something had to be cut at the deadline or the port is
// busy, 2 on bad flags. A second signal exits at once. -drain-delay,
// -drain-quiet, -drain-min, -grace-period and -init-delay mean what they
// mean for examples/httpserver.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/httpserver"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// messages serves the sequence, one message every interval.
type messages struct{ interval time.Duration }

// ws serves /ws?from=N: a websocket of the sequence that closes with 1012
// at its turn to leave.
func (m messages) ws(w http.ResponseWriter, r *http.Request) {
	n, err := start(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context()) // ends when the client goes
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for ; ; n++ {
		if err := c.Write(ctx, websocket.MessageText, strconv.AppendInt(nil, n, 10)); err != nil {
			return
		}
		select {
		case <-lameduck.Leaving(r.Context()):
			c.Close(websocket.StatusServiceRestart, "restarting; resume with ?from="+strconv.FormatInt(n+1, 10))
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// events serves /events: server-sent events of the sequence, until the
// request's context ends, which is also how the stream leaves at its turn.
func (m messages) events(w http.ResponseWriter, r *http.Request) {
	n, err := start(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for ; ; n++ {
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %d\n\n", n, n); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// start returns the number a request's sequence starts from: the
// Last-Event-ID an EventSource resumes with, plus one, else ?from=, else 1.
func start(r *http.Request) (int64, error) {
	s, next := r.URL.Query().Get("from"), int64(0)
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		s, next = id, 1
	}
	if s == "" {
		return 1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<62 {
		return 0, fmt.Errorf("%.20q is not a message number", s)
	}
	return n + next, nil
}

// newServer returns the server of the messages and the probes, on addr,
// for ld to run; httpserver gives its websockets and event streams their
// turns to leave.
func newServer(ld *lameduck.Coordinator, addr string, interval time.Duration) *httpserver.Server {
	m := messages{interval: interval}
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", ld.ReadinessHandler())
	mux.Handle("GET /livez", ld.LivenessHandler())
	mux.HandleFunc("GET /ws", m.ws)
	mux.HandleFunc("GET /events", m.events)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	return httpserver.New(&http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	})
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("realtime", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "address to serve the messages and the probes on")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between two messages")
	drainDelay := fs.Duration("drain-delay", lameduck.DefaultDrainDelay, "how long to keep serving after SIGTERM while load balancers catch up; with -drain-quiet, the longest")
	drainQuiet := fs.Duration("drain-quiet", 0, "end the drain delay once no new connection arrived for this long (0: a fixed delay)")
	drainMin := fs.Duration("drain-min", 0, "with -drain-quiet, the shortest drain delay when the cluster gives no evidence of routing (0: 3s, lameduck.DefaultMinDrainDelay)")
	window := fs.Duration("departure-window", lameduck.DefaultDepartureWindow, "the time over which websockets and event streams leave after the drain delay (default: 10s, or half of what the grace period leaves to drain when shorter; 0: all at once)")
	gracePeriod := fs.Duration("grace-period", lameduck.DefaultGracePeriod, "the pod's terminationGracePeriodSeconds")
	initDelay := fs.Duration("init-delay", 0, "simulated initialisation before the server turns ready")
	adminAddr := fs.String("admin-addr", "", "address to serve the probes on, through the drain, as well; empty for none")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "realtime: unexpected arguments %q; see -help\n", fs.Args())
		return 2
	}
	if *initDelay < 0 {
		fmt.Fprintf(stderr, "realtime: -init-delay is %v; it must be zero or more\n", *initDelay)
		return 2
	}
	if *interval <= 0 {
		fmt.Fprintf(stderr, "realtime: -interval is %v; it must be more than zero\n", *interval)
		return 2
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	opts := []lameduck.Option{lameduck.WithGracePeriod(*gracePeriod), lameduck.WithLogger(logger)}
	if *drainQuiet > 0 {
		opts = append(opts, lameduck.WithAdaptiveDrainDelay(*drainMin, *drainQuiet, *drainDelay))
	} else {
		opts = append(opts, lameduck.WithDrainDelay(*drainDelay))
	}
	fs.Visit(func(f *flag.Flag) {
		// Only when set: unset, lameduck's default shrinks to fit a short
		// grace period.
		if f.Name == "departure-window" {
			opts = append(opts, lameduck.WithDepartureWindow(*window))
		}
	})
	ld, err := lameduck.New(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "realtime: %v\n", err)
		return 2
	}

	ld.Register(newServer(ld, *addr, *interval))
	if *adminAddr != "" {
		httpserver.Admin(ld, *adminAddr, nil)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		t := time.NewTimer(*initDelay)
		defer t.Stop()
		select {
		case <-t.C:
			ld.MarkReady()
		case <-ctx.Done():
		}
	}()

	if err := ld.Run(ctx); err != nil {
		if errors.Is(err, lameduck.ErrCut) {
			logger.Error("shutdown cut in-flight work", "error", err)
		} else {
			logger.Error("exiting", "error", err)
		}
		return 1
	}
	return 0
}
