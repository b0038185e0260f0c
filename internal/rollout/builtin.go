package rollout

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// PodEnv is the environment variable that turns a binary calling
// [MaybeServePod] into a built-in pod. Its value names the server.
const PodEnv = "LAMEDUCK_ROLLOUT_POD"

// Names of the built-in servers, in the order a comparison runs them.
const (
	// BuiltinNaive calls http.Server.Shutdown as soon as SIGTERM arrives,
	// as most framework recipes do.
	BuiltinNaive = "naive"
	// BuiltinTextbook turns readiness off, calls SetKeepAlivesEnabled(false),
	// sleeps the drain delay, then calls Shutdown: the usual advice.
	BuiltinTextbook = "textbook"
	// BuiltinLameduck uses this project's library.
	BuiltinLameduck = "lameduck"
)

// Builtins lists the built-in servers in comparison order.
var Builtins = []string{BuiltinNaive, BuiltinTextbook, BuiltinLameduck}

// Defaults for the built-in pods' own settings.
const (
	// DefaultDrainDelay is the drain delay given to built-in pods: longer
	// than the default lag, so the endpoint is gone before they stop
	// listening.
	DefaultDrainDelay = 2 * time.Second
)

// BuiltinPod returns the spec of built-in server name run as a pod by
// re-executing exe (normally os.Executable()), which must call
// [MaybeServePod] at the start of main (or TestMain). drainDelay and grace
// are passed as the pod's -drain-delay and -grace-period.
func BuiltinPod(name, exe string, drainDelay, grace time.Duration) (PodSpec, error) {
	if _, ok := builtinServers[name]; !ok {
		return PodSpec{}, fmt.Errorf("rollout: unknown built-in server %q; use one of %v", name, Builtins)
	}
	if exe == "" {
		return PodSpec{}, errors.New("rollout: BuiltinPod needs the path of a binary that calls MaybeServePod (os.Executable())")
	}
	return PodSpec{
		Command: []string{exe,
			"-addr", AddrPlaceholder,
			"-drain-delay", drainDelay.String(),
			"-grace-period", grace.String(),
		},
		Env: []string{PodEnv + "=" + name},
	}, nil
}

// podOptions are a built-in pod's command-line settings.
type podOptions struct {
	addr        string
	probeAddr   string
	drainDelay  time.Duration // fixed, or the adaptive maximum
	drainMin    time.Duration // adaptive minimum
	drainQuiet  time.Duration // adaptive quiet period; zero for a fixed delay
	gracePeriod time.Duration
	// departureWindow is lameduck's departure window; negative for the
	// library's default.
	departureWindow time.Duration
	logger          *log.Logger
}

// builtinServers maps each built-in server to the function that runs it
// until it has shut down.
var builtinServers = map[string]func(ctx context.Context, o podOptions) error{
	BuiltinNaive:    serveNaive,
	BuiltinTextbook: serveTextbook,
	BuiltinLameduck: serveLameduck,
}

// MaybeServePod runs a built-in pod and exits the process if the PodEnv
// environment variable names one; otherwise it returns at once and does
// nothing. Call it first in main (and in TestMain for tests that run
// built-in pods), before flags are parsed: the pod reads its own flags
// (-addr, -drain-delay, -grace-period) from os.Args.
func MaybeServePod() {
	name := os.Getenv(PodEnv)
	if name == "" {
		return
	}
	os.Exit(servePod(name, os.Args[1:], os.Stderr))
}

// servePod runs built-in server name with args and returns the exit code.
func servePod(name string, args []string, stderr io.Writer) int {
	logger := log.New(stderr, name+" ", log.Lmicroseconds)
	serve, ok := builtinServers[name]
	if !ok {
		logger.Printf("%s=%q names no built-in server; use one of %v", PodEnv, name, Builtins)
		return 2
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := podOptions{logger: logger}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "`address` to listen on")
	fs.StringVar(&o.probeAddr, "probe-addr", "", "`address` to serve /readyz and /livez on, if not -addr (as gRPC servers do)")
	fs.DurationVar(&o.drainDelay, "drain-delay", DefaultDrainDelay, "how long to keep serving after SIGTERM (textbook, lameduck); with -drain-quiet, the longest")
	fs.DurationVar(&o.drainMin, "drain-min", 0, "with -drain-quiet, the shortest drain delay (lameduck)")
	fs.DurationVar(&o.drainQuiet, "drain-quiet", 0, "end the drain delay once no connection arrived for this long (lameduck's adaptive delay; 0: fixed)")
	fs.DurationVar(&o.gracePeriod, "grace-period", DefaultGrace, "the pod's termination grace period")
	fs.DurationVar(&o.departureWindow, "departure-window", -1, "the window over which websockets and event streams leave once the drain delay is over (lameduck; negative: the library's default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The first SIGTERM ends the serving context; handling then reverts to
	// the default action, so a second SIGTERM kills the pod at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	context.AfterFunc(ctx, stop)
	if err := serve(ctx, o); err != nil {
		logger.Printf("error: %v", err)
		return 1
	}
	return 0
}

// appHandler serves the application's "/": 200 "ok", after an optional
// ?delay= (a Go duration such as 100ms, or milliseconds) to make requests
// that are in flight when a shutdown begins.
func appHandler(w http.ResponseWriter, r *http.Request) {
	if d := r.URL.Query().Get("delay"); d != "" {
		delay, err := time.ParseDuration(d)
		if err != nil {
			ms, err2 := strconv.Atoi(d)
			if err2 != nil {
				http.Error(w, "bad delay: use a duration such as 100ms", http.StatusBadRequest)
				return
			}
			delay = time.Duration(ms) * time.Millisecond
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

// newPodServer returns the server of a naive or textbook pod, listening
// already (so a port in use fails at once), with readiness following ready.
// With a probe address, the probes are served there and not on the main
// address, which then serves "/" only.
func newPodServer(o podOptions, ready *atomic.Bool) (srv, probeSrv *http.Server, ln, probeLn net.Listener, err error) {
	app := http.NewServeMux()
	app.HandleFunc("GET /{$}", appHandler)
	// Neither server tells a websocket to leave: it lasts until the
	// process exits.
	handleStreams(app, func(*http.Request) <-chan struct{} { return nil })
	probes := app
	if o.probeAddr != "" {
		probes = http.NewServeMux()
	}
	probes.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	probes.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // so the h2c load works against built-in pods
	srv = &http.Server{Addr: o.addr, Handler: app, Protocols: &protocols, ErrorLog: o.logger}
	if ln, err = net.Listen("tcp", o.addr); err != nil {
		return nil, nil, nil, nil, err
	}
	if o.probeAddr != "" {
		probeSrv = &http.Server{Addr: o.probeAddr, Handler: probes, ErrorLog: o.logger}
		if probeLn, err = net.Listen("tcp", o.probeAddr); err != nil {
			ln.Close()
			return nil, nil, nil, nil, err
		}
	}
	return srv, probeSrv, ln, probeLn, nil
}

// runPodServer serves until ctx ends, calls beforeShutdown, then shuts down
// within the grace period, closing what is left when it runs out.
func runPodServer(ctx context.Context, o podOptions, beforeShutdown func(*http.Server, *atomic.Bool)) error {
	var ready atomic.Bool
	srv, probeSrv, ln, probeLn, err := newPodServer(o, &ready)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	if probeSrv != nil {
		// The probe server lives as long as the process: the kubelet
		// keeps probing liveness during the drain.
		go func() { serveErr <- probeSrv.Serve(probeLn) }()
		defer probeSrv.Close()
	}
	ready.Store(true)
	o.logger.Printf("serving on %s", ln.Addr())
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	start := time.Now()
	o.logger.Printf("SIGTERM")
	if beforeShutdown != nil {
		beforeShutdown(srv, &ready)
	}
	// Leave half a second of the grace period to report and exit before
	// the SIGKILL.
	sctx, cancel := context.WithTimeout(context.Background(), max(o.gracePeriod-time.Since(start)-time.Second/2, 0))
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		return fmt.Errorf("shutdown after %s: %w", time.Since(start).Round(time.Millisecond), err)
	}
	o.logger.Printf("shut down after %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// serveNaive shuts down as soon as SIGTERM arrives: the listener closes
// while kube-proxy still routes new connections here, and idle keep-alive
// connections are closed under clients that are writing on them.
func serveNaive(ctx context.Context, o podOptions) error {
	return runPodServer(ctx, o, nil)
}

// serveTextbook follows the usual advice: readiness off, keep-alives off,
// wait the drain delay, then Shutdown. SetKeepAlivesEnabled(false) closes
// idle keep-alive connections at once, racing clients that have just
// written a request on them: the few failures that remain.
func serveTextbook(ctx context.Context, o podOptions) error {
	return runPodServer(ctx, o, func(srv *http.Server, ready *atomic.Bool) {
		ready.Store(false)
		srv.SetKeepAlivesEnabled(false)
		time.Sleep(o.drainDelay)
	})
}
