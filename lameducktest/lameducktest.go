package lameducktest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// deadlineMargin is kept free before the test's deadline, so that a run
// that would outlast it stops its pods and reports with Fatalf instead of
// ending in the testing package's timeout panic.
const deadlineMargin = 3 * time.Second

// A Protocol is the protocol the load speaks. The zero Protocol means
// HTTP1.
type Protocol string

// The protocols of the load.
const (
	// HTTP1 sends GET requests over HTTP/1.1 keep-alive connections, one
	// request at a time per connection.
	HTTP1 Protocol = "http1"
	// H2C sends GET requests over HTTP/2 with prior knowledge (cleartext,
	// no upgrade), two at a time per connection.
	H2C Protocol = "h2c"
	// GRPC makes unary grpc.testing.TestService/EmptyCall calls (the
	// service of google.golang.org/grpc/interop/grpc_testing), two at a
	// time per connection, without TLS. The readiness probe stays HTTP:
	// a gRPC server serves it on a port of its own, {PROBE_ADDR}. Its
	// client is package grpcload's, in the module of grpcserver, given as
	// [Config.Load]: Load: grpcload.Load().
	GRPC Protocol = "grpc"
	// WebSocket holds one websocket per connection (GET /ws by default),
	// which must send text messages numbered from ?from=N (0 without it),
	// each one more than the last: the messages count as requests. When
	// the server closes a websocket with 1012 (service restart) or 1001
	// (going away), its client reconnects through the load balancer at
	// once with ?from= the next number, and may land on any pod. A
	// websocket closed without a close frame (1006) fails as an "eof", a
	// refused or failed handshake as "refused", "5xx" or "other", and a
	// gap in the numbers (a message lost) as "other".
	WebSocket Protocol = "websocket"
	// SSE holds one event stream (server-sent events) per connection (GET
	// /events by default, with Accept: text/event-stream), whose events
	// must carry an id and data both N, each one more than the last after
	// the request's Last-Event-ID (from 0 without it): the events count as
	// requests. When the server ends a stream (its last chunk, or after a
	// retry field), its client waits the retry time, as EventSource does,
	// and reconnects through the load balancer with Last-Event-ID. A
	// stream cut without its last chunk fails as an "eof", and a gap in
	// the ids as "other".
	SSE Protocol = "sse"
)

// Config describes the server and the rolling update. Command (or
// CommandLine) is required; every other zero value means a default suited
// to a quick test.
type Config struct {
	// Command starts one pod: the server's program and its arguments, used
	// as they are, with no shell. Where the server must listen, write
	// {ADDR}: each pod gets a free address 127.0.0.1:PORT in its place. A
	// server that serves its readiness probe on a port of its own (as gRPC
	// servers do) gets a second address in place of {PROBE_ADDR}, and the
	// probe goes there. Set Command or CommandLine, not both.
	Command []string
	// CommandLine is Command written as one string, split into words as a
	// POSIX shell splits them: blanks separate words, quotes and
	// backslashes keep them together, nothing is expanded. For example:
	// bin + " -addr {ADDR} -drain-delay 1s", where a bin with blanks or
	// quotes in its path would need quoting.
	CommandLine string
	// Env holds extra KEY=value variables for every pod, on top of the
	// test's environment; {ADDR} and {PROBE_ADDR} are replaced here too.
	// Unless GORACE says otherwise, pods also get
	// GORACE=atexit_sleep_ms=0, so that a server built with -race does not
	// wait a second before exiting, which would skew [PodExit.AfterTerm].
	Env []string

	// Protocol is the load's protocol; zero means HTTP1.
	Protocol Protocol
	// Load is the client of a Protocol that lameducktest does not speak
	// itself: GRPC needs one, grpcload.Load(); the other protocols take
	// none, and nil means none.
	Load Load
	// Path is the path the HTTP load requests, such as "/" or
	// "/api/items?limit=1"; zero means "/", or "/ws" for WebSocket and
	// "/events" for SSE. A response with a status of 400 or more counts as
	// a failure. The GRPC load ignores it.
	Path string
	// Conns is the number of client connections, each reconnecting
	// through the load balancer whenever its connection ends; zero means 32.
	Conns int
	// Fresh is the number of extra clients that open a new connection for
	// every request, about 100 a second each, as clients that come and go
	// do; zero means none. Keep-alive clients told to leave settle on the
	// new pod at once, so that only such clients show an old pod whether
	// the load balancer still routes to it: an adaptive drain delay (see
	// lameduck.WithAdaptiveDrainDelay) needs them to be tested.
	Fresh int
	// Late is the number of new clients that arrive 100 ms before each
	// old pod's endpoint is removed, each sending one request on a
	// connection of its own; zero means none. With keep-alive clients
	// alone, nothing arrives once they have moved off the old pod, yet the
	// load balancer still sends new clients to it: an adaptive drain
	// delay must not read that silence as the end of routing.
	Late int

	// ReadyPath is the path of the readiness probe, an HTTP GET on {ADDR}
	// (or {PROBE_ADDR} if the command uses it) that must answer 200 before
	// a pod receives load; zero means "/readyz".
	ReadyPath string
	// ReadyTimeout bounds the time a pod may take to pass its readiness
	// probe; a pod that takes longer fails the test. Zero means 10 s.
	ReadyTimeout time.Duration

	// Rollouts is the number of rollouts, each replacing the serving pod
	// with a new one; zero means 1.
	Rollouts int
	// Lag is how long the load balancer keeps routing new connections to
	// an old pod after its SIGTERM. Zero means 1 s, about what kube-proxy
	// takes at the most. Keep it shorter than the drain delay the command
	// gives the server. A negative Lag removes the pod at SIGTERM, as no
	// real load balancer does: it hides the failures a lag exposes.
	Lag time.Duration
	// Grace is the termination grace period: an old pod still running
	// this long after its SIGTERM is SIGKILLed. Set it to the grace period
	// the command gives the server. Zero means 10 s.
	Grace time.Duration
}

// Result is what the clients saw during a run of [Rollout], and how the old
// pods exited.
type Result struct {
	// Requests counts every request of the run that completed or failed,
	// from the first pod's start to the last rollout's end.
	Requests int64
	// Failed counts the requests that failed.
	Failed int64
	// Failures counts the failed requests by what the client saw:
	// "refused", "reset", "eof", "5xx", "timeout" or "other" (see the
	// package documentation). It is nil when nothing failed.
	Failures map[string]int64
	// Rollouts has one entry per rollout, in order.
	Rollouts []RolloutResult
	// Departures counts, for the WebSocket and SSE loads, the
	// subscriptions a server ended so that its client would reconnect
	// elsewhere (a close with 1012 or 1001, an event stream ended after
	// its retry field), and Reconnects those that resumed after an
	// earlier one had ended. Both are zero for other loads.
	Departures, Reconnects int64

	report string
}

// String returns a report of the run, several lines long: the settings,
// one line per rollout, the first error of each kind, the load balancer's
// counters, and the totals.
func (r *Result) String() string { return r.report }

// RolloutResult is what happened during one rollout: from the start of its
// new pod (or of the load, for the first rollout) until its old pod had
// exited and left the load balancer.
type RolloutResult struct {
	// Requests counts the requests that completed or failed during the
	// rollout.
	Requests int64
	// Failed counts the requests that failed during the rollout.
	Failed int64
	// Failures counts them by kind, as [Result.Failures] does; nil when
	// nothing failed.
	Failures map[string]int64
	// Exit says how the old pod exited.
	Exit PodExit
	// Departures and Reconnects count, for the WebSocket and SSE loads,
	// the subscriptions sent away and resumed during the rollout (see
	// [Result.Departures]).
	Departures, Reconnects int64
	// PeakReconnects is the most reconnections within any 100 ms of the
	// rollout, and ReconnectSpan the time from its first to its last: a
	// server that sends its clients away all at once has nearly all of
	// them in one 100 ms, one that spreads them about Reconnects ×
	// 100 ms / ReconnectSpan.
	PeakReconnects int
	ReconnectSpan  time.Duration
}

// String says in a sentence what happened, such as "0 of 52310 requests
// failed while pod-1 was replaced; it exited with exit status 0 2.003s
// after its SIGTERM, its drain delay over after 2.001s, its last new
// connection 17ms after the SIGTERM."
func (r RolloutResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d requests failed", r.Failed, r.Requests)
	if len(r.Failures) > 0 {
		kinds := slices.Sorted(maps.Keys(r.Failures))
		for i, k := range kinds {
			kinds[i] = fmt.Sprintf("%d %s", r.Failures[k], k)
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(kinds, ", "))
	}
	e := r.Exit
	fmt.Fprintf(&b, " while %s was replaced; it exited with %s %s after its SIGTERM", e.Pod, e.Status, e.AfterTerm.Round(time.Millisecond))
	if e.Killed {
		b.WriteString(", SIGKILLed at the grace period")
	}
	if e.DrainDelay > 0 {
		fmt.Fprintf(&b, ", its drain delay over after %s", e.DrainDelay.Round(time.Millisecond))
		if e.LastArrival > 0 {
			fmt.Fprintf(&b, ", its last new connection %s after the SIGTERM", e.LastArrival.Round(time.Millisecond))
		}
	}
	b.WriteString(".")
	return b.String()
}

// PodExit says how a pod exited after its SIGTERM.
type PodExit struct {
	// Pod is the pod's name in the run: "pod-1" is the first one started.
	Pod string
	// Code is the exit code, or -1 if a signal ended the process.
	Code int
	// Killed reports that the pod was SIGKILLed because it had not exited
	// within [Config.Grace].
	Killed bool
	// AfterTerm is the time from the SIGTERM to the exit.
	AfterTerm time.Duration
	// Status is the exit as the operating system reported it, such as
	// "exit status 0" or "signal: killed".
	Status string
	// DrainDelay and LastArrival are what the pod logged of its drain
	// delay, if it uses lameduck with slog's text or JSON handler: how
	// long the delay took, and how long after the SIGTERM the last new
	// connection reached it. Both are zero otherwise.
	DrainDelay, LastArrival time.Duration
}

// String describes the exit in one line, such as
// "pod-1 exit status 0 after 1.003s".
func (e PodExit) String() string {
	s := fmt.Sprintf("%s %s after %s", e.Pod, e.Status, e.AfterTerm.Round(time.Millisecond))
	if e.Killed {
		s += " (SIGKILLed at the grace period)"
	}
	return s
}

// Rollout runs cfg's server through cfg.Rollouts rolling updates under load
// and returns what the clients saw. It starts a pod, waits for its readiness
// probe, starts the load through the load balancer, then for each rollout
// starts a new pod, waits until it is ready, sends SIGTERM to the old one,
// keeps routing new connections to the old one for cfg.Lag, and waits for
// it to exit (SIGKILL after cfg.Grace). At the end it stops the load and
// sends the last pod SIGTERM too. A run takes a few seconds: about the
// server's drain delay per rollout and once more for the last pod, plus the
// pods' start-up times.
//
// Rollout calls t.Fatalf, with what to change, when cfg is invalid or the
// run cannot happen: a command that does not start, a pod that exits or
// does not turn ready within cfg.ReadyTimeout, no request that succeeds
// before the first rollout, or the test's deadline coming first. Failed
// requests and unclean exits are not errors: they are in the Result, for
// the test to judge.
//
// Every pod has stopped when Rollout returns. The pods' output is added to
// the test log when the test ends, if it failed or go test ran with -v. If
// the test failed, a record of the rolling update for a picture is
// written too (rollout.json), and the log says where and how to draw it:
// one lane per pod, the requests it served, every failed request by kind
// at the moment it failed, and the SIGTERM, removal from the load balancer,
// listener close and exit of each old pod. It goes to the test's artifact
// directory when go test runs with -artifacts (Go 1.26 and later), and
// otherwise to a new temporary directory, which is left for you to look
// at. Rollout skips the test on systems without SIGTERM.
func Rollout(t testing.TB, cfg Config) *Result {
	t.Helper()
	if !canSignal {
		t.Skipf("lameducktest: rolling updates need SIGTERM, which %s lacks", runtime.GOOS)
		return nil
	}
	rc, err := cfg.engineConfig()
	if err != nil {
		t.Fatalf("lameducktest: %v", err)
		return nil
	}
	out := &podOutput{}
	rc.PodLog = out
	var res *rollout.Result // what to draw if the test fails
	t.Cleanup(func() {
		t.Helper() // the log lines point at the call of Rollout
		if t.Failed() && res != nil {
			drawRollout(t, rc, res)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("lameducktest: output of the pods (%s):\n%s", rc, out)
		}
	})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var deadline time.Time
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok = d.Deadline(); ok {
			ctx, cancel = context.WithDeadline(ctx, deadline.Add(-deadlineMargin))
			defer cancel()
		}
	}

	res, err = rollout.Run(ctx, rc)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "rollout: ")
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			msg = fmt.Sprintf("the test's deadline (go test -timeout) is at %s, and the rolling update had not finished %s before it, so it was stopped; raise -timeout, or lower Rollouts, ReadyTimeout or Grace (%s)",
				deadline.Format(time.TimeOnly), deadlineMargin, msg)
		}
		if res != nil && len(res.Rollouts) > 0 {
			var b strings.Builder
			res.WriteText(&b)
			msg += "\nthe rollouts before the error:\n" + b.String()
		}
		t.Fatalf("lameducktest: %s", msg)
		return nil
	}
	return newResult(res)
}

// engineConfig checks cfg and returns the engine's configuration, with the
// defaults filled in.
func (cfg Config) engineConfig() (rollout.Config, error) {
	var errs []error
	cmd := cfg.Command
	switch {
	case len(cfg.Command) > 0 && cfg.CommandLine != "":
		errs = append(errs, errors.New("both Config.Command and Config.CommandLine are set; set one of them"))
	case cfg.CommandLine != "":
		var err error
		if cmd, err = rollout.ParseCommand(cfg.CommandLine); err != nil {
			errs = append(errs, fmt.Errorf("Config.CommandLine: %s", strings.TrimPrefix(err.Error(), "rollout: ")))
		}
	}
	spec := rollout.PodSpec{Command: cmd, Env: withGORACE(cfg.Env, os.Getenv("GORACE"))}
	if len(errs) > 0 {
		spec.Command = []string{rollout.AddrPlaceholder} // its error is above; check the rest
	}

	rc := rollout.Config{
		Pod:          spec,
		Cycles:       cfg.Rollouts,
		Lag:          cfg.Lag,
		Grace:        cfg.Grace,
		ReadyPath:    cfg.ReadyPath,
		ReadyTimeout: cfg.ReadyTimeout,
		Load:         rollout.LoadKind(cfg.Protocol),
		Client:       engineClient(cfg.Load),
		Conns:        cfg.Conns,
		Fresh:        cfg.Fresh,
		Late:         cfg.Late,
		Path:         cfg.Path,
	}
	rc, err := rc.Check(configNames)
	if err != nil {
		errs = append(errs, errors.Unwrap(err))
	}
	if len(errs) > 0 {
		return rc, fmt.Errorf("bad Config: %w", errors.Join(errs...))
	}
	return rc, nil
}

// configNames spells the simulator's settings as the fields of [Config]
// that set them, so that one place, the simulator, checks them all.
var configNames = rollout.Names{
	"Pod": "Config.Command", "Cycles": "Config.Rollouts", "Lag": "Config.Lag", "Grace": "Config.Grace",
	"ReadyPath": "Config.ReadyPath", "ReadyTimeout": "Config.ReadyTimeout", "Load": "Config.Protocol", "Client": "Config.Load",
	"Conns": "Config.Conns", "Fresh": "Config.Fresh", "Late": "Config.Late", "Path": "Config.Path",
}

// engineClient returns load as the engine's client of a protocol, or nil.
func engineClient(load Load) rollout.Protocol {
	if load == nil {
		return nil
	}
	return engineLoad{load}
}

// withGORACE returns env with GORACE=atexit_sleep_ms=0 added to the GORACE
// of env, or else of the test's environment (inherited), unless it sets
// atexit_sleep_ms already. A race-enabled program sleeps a second at exit
// by default, to let race reports be written.
func withGORACE(env []string, inherited string) []string {
	gorace := inherited
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace = v
		}
	}
	if strings.Contains(gorace, "atexit_sleep_ms") {
		return env
	}
	// Later entries win: this one replaces any earlier GORACE.
	return append(slices.Clip(env), "GORACE="+strings.TrimSpace(gorace+" atexit_sleep_ms=0"))
}

func newResult(res *rollout.Result) *Result {
	var b strings.Builder
	res.WriteText(&b)
	r := &Result{
		Requests:   res.Total.Requests,
		Failed:     res.Total.Failed(),
		Failures:   failures(res.Total),
		Departures: res.Total.Departures,
		Reconnects: res.Total.Reconnects,
		report:     b.String(),
	}
	for _, ro := range res.Rollouts {
		r.Rollouts = append(r.Rollouts, RolloutResult{
			Requests:       ro.Requests,
			Failed:         ro.Failed(),
			Failures:       failures(ro.Counts),
			Departures:     ro.Departures,
			Reconnects:     ro.Reconnects,
			PeakReconnects: ro.PeakReconnects,
			ReconnectSpan:  ro.ReconnectSpan,
			Exit: PodExit{
				Pod:         ro.OldPod.Pod,
				Code:        ro.OldPod.Code,
				Killed:      ro.OldPod.Killed,
				AfterTerm:   ro.OldPod.AfterTerm,
				Status:      ro.OldPod.Status,
				DrainDelay:  ro.OldPod.Drain.Delay,
				LastArrival: ro.OldPod.Drain.LastArrival,
			},
		})
	}
	return r
}

// failures counts c's failures by kind name; nil if there are none.
func failures(c rollout.Counts) map[string]int64 {
	var m map[string]int64
	for k, n := range c.Failures {
		if n > 0 {
			if m == nil {
				m = make(map[string]int64)
			}
			m[record.Kind(k).String()] = n
		}
	}
	return m
}
