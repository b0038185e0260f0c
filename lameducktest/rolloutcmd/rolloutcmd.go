// Package rolloutcmd is the body of the rollout command, which replays
// Kubernetes rolling updates on loopback under load and counts the requests
// that fail. Run the command rather than import the package:
//
//	go run github.com/lameduck/lameduck/cmd/rollout@latest -compare
//	go run github.com/lameduck/lameduck/cmd/rollout@latest -draw rollout.json -report rollout.png
//
// The command's flags and examples are documented with it (go doc
// github.com/lameduck/lameduck/cmd/rollout, or rollout -h).
//
// [Main] is the command's main function. It takes the two parts whose
// dependencies stay out of this module, so that the services that require
// the module never build them: the gRPC client and the plotting library.
// The command's own module gives them, as a command built with
// golang.org/x/tools/go/analysis/singlechecker gives that package's Main
// its analyzer.
package rolloutcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// Main is the main function of the rollout command; it does not return.
// It serves a built-in pod if this process was started as one (the command
// runs its built-in servers by starting itself again), runs the command
// with os.Args[1:] until it ends or the process gets SIGINT or SIGTERM,
// and exits with its code: 0 if every run and report succeeded, 1 if one
// failed, 2 for bad flags or settings.
//
// grpc is the client of -load grpc, grpcload.Load(); nil refuses -load
// grpc. draw draws runs to path, a .png or .svg file, as the command's
// picture does; nil refuses -draw and -report FILE.png or .svg, and leaves
// the .json reports, which the command writes itself.
func Main(grpc lameducktest.Load, draw func(path string, runs ...record.Run) error) {
	// Built-in pods are this binary started again with rollout.PodEnv set.
	rollout.MaybeServePod()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, parts{grpc: grpc, draw: draw})
	stop()
	os.Exit(code)
}

// parts are what [Main] is given: the parts of the command that need
// dependencies this module does not have.
type parts struct {
	grpc lameducktest.Load
	draw func(path string, runs ...record.Run) error
}

// options are the command-line flags.
type options struct {
	cycles, conns, replicas, fresh, late int
	lag, grace, drainDelay, timeout      time.Duration
	drainMin, drainQuiet                 time.Duration
	departureWindow                      *time.Duration // nil: the library's default
	probePeriod, warmup                  time.Duration
	load, pod, readyPath, path, addr     string
	draw                                 string
	reports                              []string
	compare, verbose                     bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("rollout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: rollout [flags]
       rollout -compare [flags]
       rollout -draw FILE.json -report FILE.png

Replays Kubernetes rolling updates on loopback under load and counts the
requests that fail. Each rollout starts a new pod, waits for its readiness
probe, then sends SIGTERM to the oldest pod, whose endpoint stays in the load
balancer for -lag more (kube-proxy lagging), and SIGKILLs it after -grace.

Without -pod, the pod is the project's example server, built with "go build"
from the repository (run from inside it): examples/httpserver for http1 and h2c,
examples/grpcserver for grpc; for websocket and sse, this binary's built-in
lameduck server. -compare runs this binary's built-in servers
(naive, textbook, lameduck) one after the other instead. -draw draws
recorded runs (-report FILE.json, or lameducktest's record of a failed test)
and runs nothing.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.cycles, "cycles", rollout.DefaultCycles, "number of rollouts")
	fs.DurationVar(&o.lag, "lag", rollout.DefaultLag, "how long a terminating pod's endpoint stays in the load balancer after SIGTERM (0: removed at SIGTERM)")
	fs.DurationVar(&o.grace, "grace", rollout.DefaultGrace, "termination grace period: SIGKILL after it; also passed to pods as -grace-period")
	fs.IntVar(&o.conns, "c", rollout.DefaultConns, "number of client connections")
	fs.IntVar(&o.replicas, "replicas", 1, "pods serving at once; each rollout replaces one")
	fs.IntVar(&o.fresh, "fresh", 0, "extra clients that open a new connection for every request, about 100 a second each, as clients that come and go")
	fs.IntVar(&o.late, "late", 0, "new clients that arrive 100ms before each old pod's endpoint is removed, one request each, on connections of their own")
	fs.StringVar(&o.load, "load", string(rollout.LoadHTTP1), "load protocol: http1 (raw keep-alive HTTP/1.1), h2c (HTTP/2 prior knowledge), grpc (unary EmptyCall), websocket or sse (one long-lived subscription per connection, resumed after each departure)")
	fs.StringVar(&o.pod, "pod", "", "pod command template; {ADDR} becomes the pod's listen address, {PROBE_ADDR} a second address for the readiness probe (default: the project's example server for -load)")
	fs.StringVar(&o.readyPath, "ready-path", rollout.DefaultReadyPath, "readiness probe path (GET, 200 means ready)")
	fs.DurationVar(&o.probePeriod, "probe-period", rollout.DefaultProbePeriod, "readiness probe period")
	fs.DurationVar(&o.drainDelay, "drain-delay", rollout.DefaultDrainDelay, "drain delay passed as -drain-delay to the built-in and example pods; with -drain-quiet, the longest")
	fs.DurationVar(&o.drainMin, "drain-min", 0, "with -drain-quiet, the shortest drain delay, passed as -drain-min")
	fs.DurationVar(&o.drainQuiet, "drain-quiet", 0, "make lameduck's drain delay adaptive: it ends once no connection arrived for this long (passed as -drain-quiet; 0: a fixed delay)")
	fs.Func("departure-window", "the window over which the built-in lameduck pod sends its websockets and event streams away once its drain delay is over, passed as -departure-window (0: all at once; default: the library's)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errors.New("give a duration of zero or more, such as 2s")
		}
		o.departureWindow = &d
		return nil
	})
	fs.DurationVar(&o.timeout, "timeout", rollout.DefaultRequestTimeout, "per-request timeout")
	fs.DurationVar(&o.warmup, "warmup", rollout.DefaultWarmup, "load time before the first rollout (0: none)")
	fs.StringVar(&o.path, "path", "", "HTTP path the load requests (e.g. /?delay=50ms with the built-in pods; default /, or /ws and /events for -load websocket and sse)")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:0", "load balancer listen address (loopback only)")
	fs.BoolVar(&o.compare, "compare", false, "run the built-in naive, textbook and lameduck servers and print one line each")
	fs.BoolVar(&o.verbose, "v", false, "copy the pods' output to standard error")
	fs.Func("report", "draw the runs to this `file`: .png or .svg, or .json for the recorded data (may be repeated)", func(path string) error {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".png", ".svg", ".json":
		default:
			return fmt.Errorf("name the file .png, .svg or .json")
		}
		o.reports = append(o.reports, path)
		return nil
	})
	fs.StringVar(&o.draw, "draw", "", "draw the runs recorded in this JSON `file` (by -report FILE.json, or by lameducktest when a test fails) to each -report, and run nothing")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, fmt.Errorf("unexpected arguments %q: quote the -pod template as one argument", fs.Args())
	}
	if o.compare && o.pod != "" {
		return o, errors.New("-compare runs the built-in servers; drop -pod, or drop -compare to test your own")
	}
	if o.draw != "" && len(o.reports) == 0 {
		return o, errors.New("-draw needs -report FILE.png (or .svg) to draw to")
	}
	if o.draw != "" && (o.compare || o.pod != "") {
		return o, errors.New("-draw runs nothing; drop -compare and -pod")
	}
	if o.compare && o.load == string(rollout.LoadGRPC) {
		return o, errors.New("-compare's built-in servers speak HTTP only; use -load http1, h2c, websocket or sse")
	}
	return o, nil
}

// run runs the command with args, the arguments after its name, and
// returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, p parts) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = p.check(o)
	}
	if err != nil {
		fmt.Fprintln(stderr, "rollout:", err)
		return 2
	}
	if o.draw != "" {
		return drawRecorded(o, p, stderr)
	}
	cfg := o.config(p, stderr)
	if o.compare {
		return compare(ctx, cfg, o, p, stdout, stderr)
	}
	pod, cleanup, code, err := o.podSpec(ctx, cfg)
	defer cleanup()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return code
	}
	cfg.Pod = pod
	if cfg, err = cfg.Check(flagNames); err != nil {
		fmt.Fprintln(stderr, "rollout:", err)
		return 2
	}
	return runOne(ctx, cfg, o, p, stdout, stderr)
}

// drawRecorded draws the runs recorded in the file of -draw to each
// -report, and returns the exit code.
func drawRecorded(o options, p parts, stderr io.Writer) int {
	runs, err := record.ReadFile(o.draw)
	if err != nil {
		fmt.Fprintln(stderr, "rollout:", err)
		return 1
	}
	if p.writeReports(o.reports, stderr, runs...) != nil {
		return 1
	}
	return 0
}

// config returns the settings of the rollouts that o asks for, with no pod
// yet.
func (o options) config(p parts, stderr io.Writer) rollout.Config {
	cfg := rollout.Config{
		Cycles:         o.cycles,
		Replicas:       o.replicas,
		Lag:            o.lag,
		Grace:          o.grace,
		ProbePeriod:    o.probePeriod,
		ReadyPath:      o.readyPath,
		Warmup:         o.warmup,
		Load:           rollout.LoadKind(o.load),
		Conns:          o.conns,
		Fresh:          o.fresh,
		Late:           o.late,
		Path:           o.path,
		RequestTimeout: o.timeout,
		ListenAddr:     o.addr,
	}
	// On the command line 0 means none; in Config it means the default.
	if o.lag <= 0 {
		cfg.Lag = -1
	}
	if o.warmup <= 0 {
		cfg.Warmup = -1
	}
	if cfg.Load == rollout.LoadGRPC {
		cfg.Client = rollout.ClientOf(p.grpc)
	}
	if o.verbose {
		cfg.PodLog = stderr
	}
	return cfg
}

// podSpec returns the pod of a run that is not -compare: -pod's, or else
// the built-in lameduck pod for the websocket and sse loads, which the
// example servers do not serve, or else the example server of the load,
// built into a temporary directory that cleanup removes. Its error is
// ready to print, and code is the exit code that goes with it.
func (o options) podSpec(ctx context.Context, cfg rollout.Config) (pod rollout.PodSpec, cleanup func(), code int, err error) {
	cleanup = func() {}
	switch {
	case o.pod != "":
		argv, err := rollout.ParseCommand(o.pod)
		if err != nil {
			return pod, cleanup, 2, err // names the -pod problem
		}
		return rollout.PodSpec{Command: argv}, cleanup, 0, nil
	case cfg.Load == rollout.LoadWebSocket || cfg.Load == rollout.LoadSSE:
		exe, err := os.Executable()
		if err == nil {
			pod, err = rollout.BuiltinPod(rollout.BuiltinLameduck, exe, o.drainDelay, cfg.Grace)
		}
		if err != nil {
			return pod, cleanup, 1, fmt.Errorf("rollout: cannot run the built-in lameduck pod: %w", err)
		}
		pod.Command = append(pod.Command, o.podArgs()...)
		return pod, cleanup, 0, nil
	}
	dir, err := os.MkdirTemp("", "rollout-")
	if err != nil {
		return pod, cleanup, 1, fmt.Errorf("rollout: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	if pod, err = examplePod(ctx, dir, cfg.Load, o); err != nil {
		return pod, cleanup, 1, fmt.Errorf("rollout: %w", err)
	}
	return pod, cleanup, 0, nil
}

// runOne runs the rollouts of cfg, writes the text report and each
// -report, and returns the exit code.
func runOne(ctx context.Context, cfg rollout.Config, o options, p parts, stdout, stderr io.Writer) int {
	res, err := rollout.Run(ctx, cfg)
	code := 0
	if err != nil {
		// A partial report goes to stderr: its last line must not be
		// mistaken for the result of a complete run.
		if res != nil && len(res.Rollouts) > 0 {
			res.WriteText(stderr)
		}
		fmt.Fprintln(stderr, err) // Run's errors start with "rollout:"
		code = 1
	} else {
		res.WriteText(stdout)
	}
	if res != nil && p.writeReports(o.reports, stderr, res.Record(filepath.Base(cfg.Pod.Command[0]), "")) != nil {
		code = 1
	}
	return code
}

// flagNames spells the settings of rollout.Config as the flags that set
// them, for its errors.
var flagNames = rollout.Names{
	"Pod": "-pod", "Cycles": "-cycles", "Replicas": "-replicas", "Lag": "-lag", "Grace": "-grace",
	"ProbePeriod": "-probe-period", "ReadyPath": "-ready-path", "Warmup": "-warmup", "Load": "-load",
	"Conns": "-c", "Fresh": "-fresh", "Late": "-late", "Path": "-path", "RequestTimeout": "-timeout",
	"ListenAddr": "-addr",
}

// notes say what each built-in server does on SIGTERM, for the picture.
var notes = map[string]string{
	rollout.BuiltinNaive:    "Shutdown on SIGTERM",
	rollout.BuiltinTextbook: "readiness off, keep-alives off, delay, Shutdown",
	rollout.BuiltinLameduck: "this library",
}

// check refuses what needs a part that the command was not given.
func (p parts) check(o options) error {
	const cmd = "github.com/lameduck/lameduck/cmd/rollout"
	if p.grpc == nil && o.load == string(rollout.LoadGRPC) {
		return fmt.Errorf("-load grpc: this build of the command has no gRPC client; %s has one", cmd)
	}
	if p.draw != nil {
		return nil
	}
	if o.draw != "" {
		return fmt.Errorf("-draw: this build of the command draws no picture; %s does", cmd)
	}
	for _, path := range o.reports {
		if !isJSON(path) {
			return fmt.Errorf("-report %s: this build of the command draws no picture; name the file .json, or run %s", path, cmd)
		}
	}
	return nil
}

func isJSON(path string) bool { return strings.EqualFold(filepath.Ext(path), ".json") }

// writeReports writes runs to each of paths, as JSON or drawn, and says on
// stderr where, and how long it took.
func (p parts) writeReports(paths []string, stderr io.Writer, runs ...record.Run) error {
	var errs []error
	for _, path := range paths {
		start := time.Now()
		write := p.draw
		if isJSON(path) {
			write = record.WriteFile
		}
		if err := write(path, runs...); err != nil {
			fmt.Fprintln(stderr, "rollout:", err)
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stderr, "report: wrote %s in %s\n", path, time.Since(start).Round(time.Millisecond))
	}
	return errors.Join(errs...)
}

// compare runs each built-in server through the same rollouts.
func compare(ctx context.Context, cfg rollout.Config, o options, p parts, stdout, stderr io.Writer) (code int) {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "rollout: cannot find this binary to run the built-in servers:", err)
		return 1
	}
	var runs []record.Run
	defer func() {
		if len(runs) > 0 && p.writeReports(o.reports, stderr, runs...) != nil {
			code = 1
		}
	}()
	for _, name := range rollout.Builtins {
		cfg.Pod, err = rollout.BuiltinPod(name, exe, o.drainDelay, cfg.Grace)
		if err != nil {
			fmt.Fprintln(stderr, "rollout:", err)
			return 2
		}
		cfg.Pod.Command = append(cfg.Pod.Command, o.podArgs()...)
		if cfg, err = cfg.Check(flagNames); err != nil {
			fmt.Fprintln(stderr, "rollout:", err)
			return 2
		}
		fmt.Fprintf(stderr, "== server=%s\n", name)
		res, err := rollout.Run(ctx, cfg)
		if res != nil && len(res.Rollouts) > 0 {
			res.WriteDetails(stderr) // the totals go to stdout, once
		}
		if res != nil {
			runs = append(runs, res.Record(name, notes[name]))
		}
		if err != nil {
			fmt.Fprintf(stderr, "server=%s: %v\n", name, err)
			fmt.Fprintf(stdout, "server=%s error=%q\n", name, firstLine(err.Error()))
			code = 1
			if ctx.Err() != nil {
				return code
			}
			continue
		}
		fmt.Fprintf(stdout, "server=%s %s\n", name, res.Total.Summary())
	}
	return code
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// examplePod builds the project's example server for the load into dir and
// returns its pod spec. The examples take -addr, -drain-delay and
// -grace-period; the gRPC one serves its HTTP readiness probe on
// -probe-addr.
func examplePod(ctx context.Context, dir string, load rollout.LoadKind, o options) (rollout.PodSpec, error) {
	pkg, extra := "examples/httpserver", []string(nil)
	if load == rollout.LoadGRPC {
		pkg, extra = "examples/grpcserver", []string{"-probe-addr", rollout.ProbeAddrPlaceholder}
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/lameduck/lameduck/"+pkg)
	if out, err := build.CombinedOutput(); err != nil {
		return rollout.PodSpec{}, fmt.Errorf("build the default pod %s: %v\n%s\nrun from inside the lameduck repository with the go tool on PATH, or give your own server with -pod 'CMD ... {ADDR} ...' (or try -compare)",
			pkg, err, strings.TrimSpace(string(out)))
	}
	argv := append([]string{bin, "-addr", rollout.AddrPlaceholder}, extra...)
	argv = append(argv, "-drain-delay", o.drainDelay.String(), "-grace-period", o.grace.String())
	return rollout.PodSpec{Command: append(argv, o.adaptiveArgs()...)}, nil
}

// podArgs are the flags of a built-in pod: those of an adaptive drain
// delay and of a departure window, if asked for.
func (o options) podArgs() []string {
	args := o.adaptiveArgs()
	if o.departureWindow != nil {
		args = append(args, "-departure-window", o.departureWindow.String())
	}
	return args
}

// adaptiveArgs are the pod flags of an adaptive drain delay, if asked for.
func (o options) adaptiveArgs() []string {
	if o.drainQuiet == 0 {
		return nil
	}
	return []string{"-drain-min", o.drainMin.String(), "-drain-quiet", o.drainQuiet.String()}
}
