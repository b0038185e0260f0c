package lameducktest_test

import (
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest"
	"github.com/lameduck/lameduck/lameducktest/record"
)

const (
	examplePkg = "github.com/lameduck/lameduck/examples/httpserver"
	// The example server's drain delay and grace period in these tests:
	// the drain delay is longer than the load balancer's lag, and the
	// grace period leaves lameduck's hook timeout (3 s) and safety margin
	// (2 s) room to drain.
	drainDelay  = time.Second
	gracePeriod = 10 * time.Second
	lag         = 500 * time.Millisecond
)

// The project's example server goes through rolling updates without
// failing a request, and exits cleanly once its drain delay is over.
func TestExampleServer(t *testing.T) {
	bin := lameducktest.Build(t, examplePkg)
	for _, tt := range []struct {
		name string
		cfg  lameducktest.Config
	}{
		{"http1", lameducktest.Config{
			Command:  []string{bin, "-addr", "{ADDR}", "-drain-delay", drainDelay.String(), "-grace-period", gracePeriod.String()},
			Rollouts: 2,
		}},
		{"h2c", lameducktest.Config{
			CommandLine: bin + " -addr {ADDR} -drain-delay 1s -grace-period 10s",
			Protocol:    lameducktest.H2C,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Lag, cfg.Grace = lag, gracePeriod
			res := lameducktest.Rollout(t, cfg)
			t.Logf("\n%v", res)

			assert.Positive(t, res.Requests)
			assert.Zero(t, res.Failed, "%d of %d requests failed:\n%v", res.Failed, res.Requests, res)
			assert.Nil(t, res.Failures)
			assert.True(t, strings.HasSuffix(res.String(), "failed=0\n"), res.String())
			require.Len(t, res.Rollouts, max(cfg.Rollouts, 1))
			var sum int64
			for _, ro := range res.Rollouts {
				sum += ro.Requests
				assert.Positive(t, ro.Requests, "every rollout carries load")
				assert.Zero(t, ro.Failed)
				exit := ro.Exit
				assert.Equal(t, 0, exit.Code, "%v", exit)
				assert.False(t, exit.Killed, "%v", exit)
				assert.Equal(t, "exit status 0", exit.Status)
				assert.GreaterOrEqual(t, exit.AfterTerm, drainDelay, "the server keeps serving for its drain delay: %v", exit)
				assert.Less(t, exit.AfterTerm, drainDelay+time.Second, "and exits promptly once in-flight requests are done: %v", exit)
				assert.Regexp(t, `^pod-\d+ exit status 0 after \d`, exit.String())
				assert.Regexp(t, `^0 of \d+ requests failed while pod-\d+ was replaced; it exited with exit status 0 [\d.]+s after its SIGTERM, its drain delay over after [\d.]+s(, its last new connection [\d.]+m?s after the SIGTERM)?\.$`, ro.String())
			}
			assert.Equal(t, res.Requests, sum, "the rollouts cover the whole run")
		})
	}
}

// A server that calls http.Server.Shutdown on SIGTERM, as most recipes
// say, fails requests: new connections still arrive during the lag after
// it closed its listener. It exits 0 and fast all the same, which is why
// the exit alone says nothing.
func TestNaiveServerFails(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	// The engine's built-in naive server, run by re-executing this test
	// binary (see TestMain).
	spec, err := rollout.BuiltinPod(rollout.BuiltinNaive, exe, drainDelay, gracePeriod)
	require.NoError(t, err)
	res := lameducktest.Rollout(t, lameducktest.Config{Command: spec.Command, Env: spec.Env, Lag: lag, Grace: gracePeriod})
	t.Logf("\n%v", res)

	assert.Positive(t, res.Failed, "the naive server must fail requests:\n%v", res)
	assert.Positive(t, res.Failures["refused"], "connections routed to it after it stopped listening are refused: %v", res.Failures)
	require.Len(t, res.Rollouts, 1)
	assert.Equal(t, res.Failed, res.Rollouts[0].Failed)
	exit := res.Rollouts[0].Exit
	assert.Equal(t, 0, exit.Code, "%v", exit)
	assert.False(t, exit.Killed)
	assert.Less(t, exit.AfterTerm, lag, "it stops before the load balancer does: %v", exit)
}

// With an adaptive drain delay and clients that come and go, the example
// server measures the load balancer's lag and exits soon after it, long
// before the delay's maximum, failing nothing. The minimum covers the lag,
// as the documentation advises where traffic may be sparse: on a loaded
// machine the clients may pause for longer than the quiet period.
func TestExampleServerWithAnAdaptiveDelay(t *testing.T) {
	bin := lameducktest.Build(t, examplePkg)
	const minimum, quiet, maximum = lag, 300 * time.Millisecond, 5 * time.Second
	res := lameducktest.Rollout(t, lameducktest.Config{
		Command: []string{bin, "-addr", "{ADDR}", "-drain-delay", maximum.String(), "-drain-min", minimum.String(),
			"-drain-quiet", quiet.String(), "-grace-period", gracePeriod.String()},
		Fresh: 2,
		Lag:   lag,
		Grace: gracePeriod,
	})
	t.Logf("\n%v", res)
	assert.Zero(t, res.Failed, "%d of %d requests failed:\n%v", res.Failed, res.Requests, res)
	require.Len(t, res.Rollouts, 1)
	exit := res.Rollouts[0].Exit
	assert.Equal(t, 0, exit.Code)
	assert.Positive(t, exit.LastArrival, "connections arrived while the load balancer routed to the old pod")
	// The delay ends at the later of its minimum and a quiet period after
	// the last arrival; which one is later depends on how steadily the
	// fresh clients arrived until the load balancer's lag was over.
	assert.GreaterOrEqual(t, exit.DrainDelay, minimum, "the delay lasts its minimum")
	// LastArrival counts from the signal, DrainDelay from the lame duck a
	// moment later: half the quiet period is room enough for that moment.
	assert.Greater(t, exit.DrainDelay, exit.LastArrival+quiet/2, "and a quiet period past the last arrival")
	assert.LessOrEqual(t, exit.DrainDelay, exit.AfterTerm)
	assert.Less(t, exit.AfterTerm, maximum, "the delay ended once routing had caught up")
	assert.Regexp(t, `\((quiet|min)\), last arrival `, res.String())
}

// With keep-alive clients alone, nothing arrives at the old pod once they
// have moved off it, yet the load balancer still sends it the new clients
// that come near the end of its lag. The adaptive delay, set up as the
// README shows it (no minimum), must not read that silence as the end of
// routing: outside Kubernetes its minimum covers a typical lag, and the
// late clients hold it for a quiet period more.
func TestAdaptiveDelayWithKeepAliveClientsAndLateArrivals(t *testing.T) {
	bin := lameducktest.Build(t, examplePkg)
	const lag, maximum = 3 * time.Second, 6 * time.Second
	res := lameducktest.Rollout(t, lameducktest.Config{
		Command: []string{bin, "-addr", "{ADDR}", "-drain-delay", maximum.String(), "-drain-quiet", "500ms",
			"-grace-period", gracePeriod.String()},
		Late:  8,
		Lag:   lag,
		Grace: gracePeriod,
	})
	t.Logf("\n%v", res)
	assert.Zero(t, res.Failed, "%d of %d requests failed:\n%v", res.Failed, res.Requests, res)
	require.Len(t, res.Rollouts, 1)
	exit := res.Rollouts[0].Exit
	assert.Equal(t, 0, exit.Code)
	assert.Greater(t, exit.LastArrival, lag-time.Second, "the late clients reached the old pod")
	assert.Greater(t, exit.DrainDelay, exit.LastArrival, "and the delay outlasted them")
	assert.Less(t, exit.AfterTerm, maximum, "yet it ended before its maximum")
}

// Setup errors end the test with Fatalf and a message that says what to
// change; no pod outlives them.
func TestSetupErrors(t *testing.T) {
	bin := lameducktest.Build(t, examplePkg)
	cmd := func(args ...string) []string { return append([]string{bin, "-addr", "{ADDR}"}, args...) }
	for _, tt := range []struct {
		name string
		cfg  lameducktest.Config
		// deadline, if not zero, is the test's deadline from now.
		deadline time.Duration
		want     []string
		// startsPods says the error comes after a pod was started.
		startsPods bool
	}{
		{name: "no command", cfg: lameducktest.Config{},
			want: []string{"Config.Command is empty", "{ADDR}"}},
		{name: "no address", cfg: lameducktest.Config{Command: []string{bin}},
			want: []string{"has no {ADDR}", "-addr {ADDR}"}},
		{name: "two commands", cfg: lameducktest.Config{Command: cmd(), CommandLine: bin + " {ADDR}"},
			want: []string{"set one of them"}},
		{name: "bad command line", cfg: lameducktest.Config{CommandLine: "server -addr '{ADDR}"},
			want: []string{"Config.CommandLine", "unterminated ' quote"}},
		{name: "bad settings", cfg: lameducktest.Config{Command: cmd(), Protocol: "http3", Conns: -1, ReadyPath: "readyz"},
			want: []string{`Config.Protocol is "http3"; use one of http1 h2c grpc`, "Config.Conns is -1", `Config.ReadyPath is "readyz"; it must start with /`}},
		{name: "gRPC without its client", cfg: lameducktest.Config{Command: cmd(), Protocol: lameducktest.GRPC},
			want: []string{"Config.Protocol: the grpc load's client is in package github.com/lameduck/lameduck/grpcserver/grpcload", "set Config.Load to grpcload.Load()"}},
		{name: "a client for a built-in protocol", cfg: lameducktest.Config{Command: cmd(), Load: stubLoad{}},
			want: []string{"Config.Protocol: the http1 load is built in; leave Config.Load unset"}},
		{name: "no such program", cfg: lameducktest.Config{Command: []string{bin + "-missing", "{ADDR}"}},
			want: []string{"start pod pod-1", "no such file or directory", "check the pod command"}},
		{name: "exits at once",
			// lameduck refuses a drain delay that leaves no time to drain.
			cfg:        lameducktest.Config{Command: cmd("-drain-delay", "5s", "-grace-period", "5s")},
			want:       []string{"pod-1 exited before becoming ready (exit status 2)", "leaves no time to drain within the grace period of 5s"},
			startsPods: true},
		{name: "never ready",
			cfg:        lameducktest.Config{Command: cmd("-init-delay", "1h"), ReadyTimeout: time.Second},
			want:       []string{"pod-1 did not become ready within 1s", "GET http://127.0.0.1:", "/readyz: 503 Service Unavailable", "Config.ReadyPath"},
			startsPods: true},
		{name: "test deadline",
			cfg:        lameducktest.Config{Command: cmd("-init-delay", "1h")},
			deadline:   4 * time.Second, // the run stops 3 s before
			want:       []string{"the test's deadline (go test -timeout)", "raise -timeout"},
			startsPods: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := &fakeTB{TB: t}
			if tt.deadline > 0 {
				tb.deadline = time.Now().Add(tt.deadline)
			}
			start := time.Now()
			returned := tb.run(t, func(tb testing.TB) { lameducktest.Rollout(tb, tt.cfg) })
			elapsed := time.Since(start)

			require.False(t, returned, "Rollout must not return after Fatalf")
			assert.True(t, strings.HasPrefix(tb.fatal, "lameducktest: "), tb.fatal)
			for _, want := range tt.want {
				assert.Contains(t, tb.fatal, want)
			}
			t.Logf("after %s: %s", elapsed.Round(time.Millisecond), tb.fatal)
			if tt.startsPods {
				log := tb.log()
				assert.Contains(t, log, "output of the pods", "a failed test logs the pods' output")
				requireNoPodLeft(t, log)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tt := range []struct {
		name, pkg string
		flags     []string
		want      []string
	}{
		{"no such package", "./no/such/server", nil, []string{`lameducktest: Build("./no/such/server"): go build -o `, "exit status 1", "no/such/server"}},
		{"output flag", examplePkg, []string{"-o", "x"}, []string{"drop -o from the build flags"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := &fakeTB{TB: t}
			require.False(t, tb.run(t, func(tb testing.TB) { lameducktest.Build(tb, tt.pkg, tt.flags...) }))
			for _, want := range tt.want {
				assert.Contains(t, tb.fatal, want)
			}
		})
	}
}

// The pods' output goes to the test log only if the test fails (or with
// go test -v), and so does a record of the rolling update for a picture;
// no pod outlives Rollout.
func TestPodOutput(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	spec, err := rollout.BuiltinPod(rollout.BuiltinNaive, exe, drainDelay, gracePeriod)
	require.NoError(t, err)
	// A short run: two connections, the pod removed at SIGTERM.
	cfg := lameducktest.Config{Command: spec.Command, Env: spec.Env, Conns: 2, Lag: -1}

	t.Run("passing test", func(t *testing.T) {
		tb := &fakeTB{TB: t}
		require.True(t, tb.run(t, func(tb testing.TB) { lameducktest.Rollout(tb, cfg) }), tb.fatal)
		if !testing.Verbose() {
			assert.Empty(t, tb.log())
		}
		assert.NotContains(t, tb.log(), "picture", "a passing test records nothing")
	})
	t.Run("failing test", func(t *testing.T) {
		tb := &fakeTB{TB: t}
		require.True(t, tb.run(t, func(tb testing.TB) {
			res := lameducktest.Rollout(tb, cfg)
			tb.Errorf("a failed assertion of the test after %d requests", res.Requests)
		}), tb.fatal)
		log := tb.log()
		assert.Contains(t, log, "lameducktest: output of the pods (load=http1 conns=2 lag=none grace=10s rollouts=1):")
		assert.Contains(t, log, "pod-1: naive ")
		assert.Contains(t, log, "pod-2: naive ")
		requireNoPodLeft(t, log)

		// Without go test -artifacts, the record is in a directory of
		// its own, which outlives the test.
		path := recordPath(t, log)
		defer os.RemoveAll(filepath.Dir(path))
		assert.True(t, strings.HasPrefix(filepath.Base(filepath.Dir(path)), "lameducktest-TestPodOutput_failing_test-"), path)
		assert.Equal(t, "rollout.json", filepath.Base(path))
		requireRecord(t, path)
		assert.Contains(t, log, "draw it with: go run github.com/lameduck/lameduck/cmd/rollout@latest -draw "+path+" -report "+strings.TrimSuffix(path, ".json")+".png")
	})
	t.Run("failing test with -artifacts", func(t *testing.T) {
		if flag.Lookup("test.artifacts") == nil {
			t.Skip("go test -artifacts needs Go 1.26")
		}
		// As go test -artifacts would; restored before any other test
		// runs, as this one is not parallel.
		require.NoError(t, flag.Set("test.artifacts", "true"))
		defer flag.Set("test.artifacts", "false")
		tb := &fakeTB{TB: t, artifactDir: t.TempDir()}
		require.True(t, tb.run(t, func(tb testing.TB) {
			lameducktest.Rollout(tb, cfg)
			lameducktest.Rollout(tb, cfg)
			tb.Errorf("a failed assertion of the test")
		}), tb.fatal)
		log := tb.log()
		first := recordPath(t, log)
		assert.Equal(t, filepath.Join(tb.artifactDir, "rollout.json"), first, "the record goes to the artifact directory")
		requireRecord(t, first)
		require.FileExists(t, filepath.Join(tb.artifactDir, "rollout-2.json"), "each rolling update of the test is recorded")
	})
}

// recordPath returns the record the log names.
func recordPath(t *testing.T, log string) string {
	t.Helper()
	m := regexp.MustCompile(`lameducktest: the rolling update, recorded for a picture: (\S+)`).FindStringSubmatch(log)
	require.NotNil(t, m, "a failed test says where its record is:\n%s", log)
	return m[1]
}

// requireRecord checks that path holds the run, its pods and its load, as
// the rollout command's -draw reads it.
func requireRecord(t *testing.T, path string) {
	t.Helper()
	runs, err := record.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	assert.Equal(t, "lameducktest.test", runs[0].Name, "named after the server's binary")
	assert.Len(t, runs[0].Timeline.Pods, 2, "the first pod and its replacement")
	assert.Positive(t, runs[0].Requests)
	assert.Positive(t, runs[0].Timeline.LoadEnd)
}

// stubLoad is a [lameducktest.Load] that starts no client.
type stubLoad struct{}

func (stubLoad) Start(*lameducktest.Clients) error { return nil }

func (stubLoad) Fresh(*lameducktest.Clients) func(context.Context) (net.Addr, error) {
	return func(context.Context) (net.Addr, error) { return nil, nil }
}
