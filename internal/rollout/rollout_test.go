package rollout_test

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// builtinConfig returns a short run of built-in server name: pods are this
// test binary re-executed (TestMain calls MaybeServePod).
func builtinConfig(t *testing.T, name string, drainDelay time.Duration) rollout.Config {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	spec, err := rollout.BuiltinPod(name, exe, drainDelay, 5*time.Second)
	require.NoError(t, err)
	// Under -race the pods are race-enabled too, and would sleep a second
	// before exiting (to let reports finish), skewing their exit times.
	spec.Env = append(spec.Env, "GORACE=atexit_sleep_ms=0")
	return rollout.Config{
		Pod:         spec,
		Cycles:      2,
		Lag:         500 * time.Millisecond,
		Grace:       5 * time.Second,
		ProbePeriod: 50 * time.Millisecond,
		Warmup:      300 * time.Millisecond,
		Conns:       16,
		PodLog:      &syncBuffer{},
	}
}

// syncBuffer is a bytes.Buffer safe for the pods' concurrent output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkResult checks what holds for every complete run.
func checkResult(t *testing.T, cfg rollout.Config, res *rollout.Result) {
	t.Helper()
	require.Len(t, res.Rollouts, cfg.Cycles)
	var sum rollout.Counts
	for i, ro := range res.Rollouts {
		assert.Equal(t, i+1, ro.N)
		assert.Positive(t, ro.Requests, "rollout %d carried load", ro.N)
		assert.Equal(t, 0, ro.OldPod.Code, "rollout %d: %s", ro.N, ro.OldPod)
		assert.False(t, ro.OldPod.Killed)
		assert.Positive(t, ro.OldPod.AfterTerm)
		sum.Add(ro.Counts)
	}
	assert.Equal(t, sum.Requests, res.Total.Requests, "rollouts cover the whole run")
	assert.Equal(t, sum.Failed(), res.Total.Failed())

	checkTimeline(t, cfg, res)

	var text strings.Builder
	require.NoError(t, res.WriteText(&text))
	lines := strings.Split(strings.TrimSpace(text.String()), "\n")
	assert.Equal(t, res.Total.Summary(), lines[len(lines)-1], "the last line is the totals")
	assert.Regexp(t, `^requests=\d+ failed=\d+( (refused|reset|eof|5xx|timeout|other)=\d+)*$`, lines[len(lines)-1])
	assert.Equal(t, 1, strings.Count(text.String(), "requests="+strconv.FormatInt(res.Total.Requests, 10)+" failed=")-
		strings.Count(text.String(), ": requests="+strconv.FormatInt(res.Total.Requests, 10)+" failed="), "the totals are printed once")
	for k, s := range res.Total.Samples {
		if s != "" {
			assert.NotContains(t, s, record.Kind(k).String()+": ", "a sample does not repeat its kind")
		}
	}
	t.Logf("\n%s", text.String())
}

// checkTimeline checks what holds for the timeline of every complete run:
// it accounts for every request, in order, each with the pod that served
// it, and every pod's events come in the order a rollout makes them.
func checkTimeline(t *testing.T, cfg rollout.Config, res *rollout.Result) {
	t.Helper()
	tl := res.Timeline
	assert.Equal(t, rollout.TimelineBucket, tl.Interval)
	require.Len(t, tl.Pods, 1+cfg.Cycles, "one pod to start with, one more per rollout")
	assert.Positive(t, tl.LoadStart)
	assert.Greater(t, tl.LoadEnd, tl.LoadStart)
	assert.Less(t, tl.LoadEnd, res.Duration)

	var served int64
	for i, pt := range tl.Pods {
		assert.Equal(t, fmt.Sprintf("pod-%d", i+1), pt.Name)
		assert.GreaterOrEqual(t, pt.Started, time.Duration(0))
		assert.Greater(t, pt.Ready, pt.Started, pt.Name)
		assert.GreaterOrEqual(t, pt.Joined, pt.Ready, pt.Name)
		assert.Greater(t, pt.Term, pt.Joined, "%s: every pod is stopped in the end", pt.Name)
		assert.Greater(t, pt.Exited, pt.Term, pt.Name)
		for b, n := range pt.Served {
			served += n
			if n == 0 {
				continue
			}
			// A request counts when its response is complete: after the
			// pod joined, and at most an interval after it exited (bytes
			// still on their way through the load balancer).
			assert.Greater(t, time.Duration(b+1)*tl.Interval, pt.Joined, "%s served requests before it joined", pt.Name)
			assert.LessOrEqual(t, time.Duration(b)*tl.Interval, pt.Exited+tl.Interval, "%s served requests after it exited", pt.Name)
		}
	}
	for _, ro := range res.Rollouts {
		old := tl.Pods[ro.N-1]
		require.Equal(t, ro.OldPod.Pod, old.Name, "rollout %d replaces the oldest pod", ro.N)
		assert.Equal(t, ro.OldPod.Exit, old.Exit)
		assert.GreaterOrEqual(t, old.Removed-old.Term, cfg.Lag, "%s stays in the load balancer for the lag", old.Name)
		assert.InDelta(t, ro.OldPod.AfterTerm, old.Exited-old.Term, float64(time.Millisecond))
		if runtime.GOOS == "linux" {
			assert.GreaterOrEqual(t, old.ListenerClosed, old.Term, "%s: listener closed", old.Name)
			assert.LessOrEqual(t, old.ListenerClosed, old.Exited, "%s: listener closed", old.Name)
		}
	}
	last := tl.Pods[len(tl.Pods)-1]
	assert.Equal(t, record.Never, last.ListenerClosed, "the last pod is stopped after the load; nobody watched its listener")
	assert.Equal(t, res.Total.Requests-res.Total.Failed(), served+tl.ServedLeftOut, "every request served is on the timeline")
	assert.Zero(t, tl.ServedLeftOut, "every connection is traced to its pod")
	assert.Equal(t, res.Total.Failed(), int64(len(tl.Failures))+tl.FailuresLeftOut, "every failure is on the timeline")
	assert.True(t, slices.IsSortedFunc(tl.Failures, func(a, b record.Failure) int { return cmp.Compare(a.At, b.At) }), "failures in order of time")
	for _, f := range tl.Failures {
		assert.GreaterOrEqual(t, f.Pod, -1)
		assert.Less(t, f.Pod, len(tl.Pods))
		assert.Greater(t, f.At, tl.LoadStart)
		assert.LessOrEqual(t, f.At, tl.LoadEnd)
	}
}

// The naive server must visibly fail requests: the lag routes new
// connections to it after it closed its listener, and its Shutdown closes
// keep-alive connections under clients that are writing on them. A
// simulator that cannot show this is not faithful enough.
func TestRunNaiveFails(t *testing.T) {
	for _, load := range []rollout.LoadKind{rollout.LoadHTTP1, rollout.LoadH2C} {
		t.Run(string(load), func(t *testing.T) {
			cfg := builtinConfig(t, rollout.BuiltinNaive, time.Second)
			cfg.Load = load
			if load == rollout.LoadH2C {
				cfg.Cycles = 1
			}
			res, err := rollout.Run(t.Context(), cfg)
			require.NoError(t, err, "pod output:\n%s", cfg.PodLog)
			checkResult(t, cfg, res)
			assert.Positive(t, res.Total.Failed(), "the naive server must fail requests")
			assert.Positive(t, res.Proxy.DialFailed, "new connections must reach the pod after it stopped listening")
			assert.Positive(t, res.Total.Failures[record.KindRefused], "samples: %q", res.Total.Samples)
			if s := res.Total.Samples[record.KindRefused]; !strings.Contains(s, "refused") {
				assert.Contains(t, s, "the load balancer could not connect to the pod", "a refusal seen as a reset says why it counts as refused")
			}
			// A refused request went to a pod that had stopped listening
			// while the load balancer still routed to it: between that
			// pod's SIGTERM and its removal (and the client's noticing).
			// Zero in cfg means the default, as in Run.
			requestTimeout := cmp.Or(cfg.RequestTimeout, rollout.DefaultRequestTimeout)
			for _, f := range res.Timeline.Failures {
				if f.Kind != record.KindRefused {
					continue
				}
				require.GreaterOrEqual(t, f.Pod, 0, "a refused connection went to a pod")
				pod := res.Timeline.Pods[f.Pod]
				assert.GreaterOrEqual(t, f.At, pod.Term, "refused by %s before its SIGTERM", pod.Name)
				assert.LessOrEqual(t, f.At, pod.Removed+requestTimeout, "refused by %s long after its removal", pod.Name)
			}
			if load == rollout.LoadHTTP1 {
				// (Over HTTP/2, Shutdown lingers up to a second after its
				// GOAWAY: golang/go#18701.)
				for _, ro := range res.Rollouts {
					assert.Less(t, ro.OldPod.AfterTerm, cfg.Lag, "naive shuts down at once, before its endpoint is gone")
				}
			}
		})
	}
}

// The textbook server keeps listening through the drain delay, so nothing is
// refused; what remains is the race of SetKeepAlivesEnabled(false) closing
// idle connections, which the design notes measured at a few requests.
func TestRunTextbook(t *testing.T) {
	drain := time.Second
	cfg := builtinConfig(t, rollout.BuiltinTextbook, drain)
	res, err := rollout.Run(t.Context(), cfg)
	require.NoError(t, err, "pod output:\n%s", cfg.PodLog)
	checkResult(t, cfg, res)
	assert.Zero(t, res.Total.Failures[record.KindRefused], "a pod still listening refuses nothing")
	assert.Zero(t, res.Proxy.DialFailed)
	for _, ro := range res.Rollouts {
		assert.GreaterOrEqual(t, ro.OldPod.AfterTerm, drain, "textbook waits the drain delay")
	}
	assert.Contains(t, cfg.PodLog.(*syncBuffer).String(), "pod-1: textbook", "pod output goes to PodLog")
}

func TestRunSIGKILLAfterGrace(t *testing.T) {
	// A drain delay longer than the grace period: the pod is still
	// sleeping when the grace period ends.
	cfg := builtinConfig(t, rollout.BuiltinTextbook, time.Minute)
	cfg.Cycles, cfg.Grace, cfg.Conns = 1, 500*time.Millisecond, 2
	res, err := rollout.Run(t.Context(), cfg)
	require.NoError(t, err)
	require.Len(t, res.Rollouts, 1)
	exit := res.Rollouts[0].OldPod
	assert.True(t, exit.Killed, "%s", exit)
	assert.Equal(t, -1, exit.Code)
	assert.Contains(t, exit.Status, "killed")
	assert.GreaterOrEqual(t, exit.AfterTerm, cfg.Grace)
}

func TestRunPodThatExitsAtOnce(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	cfg := rollout.Config{
		Pod: rollout.PodSpec{
			Command: []string{exe, "-addr", rollout.AddrPlaceholder},
			Env:     []string{rollout.PodEnv + "=no-such-server"},
		},
		ProbePeriod: 50 * time.Millisecond,
	}
	res, err := rollout.Run(t.Context(), cfg)
	require.Error(t, err)
	assert.ErrorContains(t, err, "exited before becoming ready")
	assert.ErrorContains(t, err, "names no built-in server", "the error shows the pod's last output")
	require.NotNil(t, res)
	assert.Empty(t, res.Rollouts)
}

func TestRunPodNeverReady(t *testing.T) {
	cfg := builtinConfig(t, rollout.BuiltinNaive, time.Second)
	cfg.ReadyPath = "/?delay=nonsense" // the built-in pods answer 400
	cfg.ReadyTimeout = 500 * time.Millisecond
	_, err := rollout.Run(t.Context(), cfg)
	assert.ErrorContains(t, err, "did not become ready within 500ms")
	assert.ErrorContains(t, err, "400 Bad Request")
}

func TestRunRejectsBadConfig(t *testing.T) {
	_, err := rollout.Run(t.Context(), rollout.Config{})
	assert.ErrorContains(t, err, "rollout: bad settings: Pod is empty")
	_, err = rollout.Run(t.Context(), rollout.Config{Pod: rollout.PodSpec{Command: []string{"server"}}})
	assert.ErrorContains(t, err, `the pod command "server" has no {ADDR}`)
}

// Check names every bad setting at once, as the front end spells it, and
// says what to set it to; a good Config gets the one set of defaults.
func TestCheckNamesEveryBadSettingAsTheFrontEndSpellsIt(t *testing.T) {
	names := rollout.Names{"Cycles": "-cycles", "Conns": "-c", "ListenAddr": "-addr", "Load": "-load"}
	_, err := rollout.Config{
		Pod:        rollout.PodSpec{Command: []string{"server", "{ADDR}"}},
		ListenAddr: "0.0.0.0:8080",
		Cycles:     -1,
		Conns:      6000,
		Fresh:      -2,
		Grace:      -time.Second,
		ReadyPath:  "readyz",
		Load:       "http3",
	}.Check(names)
	require.Error(t, err)
	for _, want := range []string{
		"-cycles is -1; use 1 to 1000, or zero for 1",
		"-c is 6000; use 1 to 5000, or zero for 32",
		"Fresh is -2; use 0 to 5000",
		"Grace is -1s; it must be positive, or zero for 10s",
		`ReadyPath is "readyz"; it must start with /`,
		`-load is "http3"; use one of http1 h2c grpc`,
		"-addr: ",
		"loopback",
	} {
		assert.ErrorContains(t, err, want)
	}

	cfg, err := rollout.Config{Pod: rollout.PodSpec{Command: []string{"server", "{ADDR}"}}, Lag: -1}.Check(nil)
	require.NoError(t, err)
	assert.Equal(t, rollout.DefaultCycles, cfg.Cycles)
	assert.Equal(t, rollout.DefaultConns, cfg.Conns)
	assert.Equal(t, rollout.DefaultReadyTimeout, cfg.ReadyTimeout)
	assert.Equal(t, time.Duration(-1), cfg.Lag, "a negative lag means none, and stays")
	assert.Equal(t, rollout.DefaultReadyPath, cfg.ReadyPath)
	again, err := cfg.Check(nil)
	require.NoError(t, err)
	assert.Equal(t, cfg, again, "checking a checked Config changes nothing")
}

func TestBuiltinPodUnknown(t *testing.T) {
	_, err := rollout.BuiltinPod("fancy", "/bin/true", time.Second, time.Second)
	assert.ErrorContains(t, err, "unknown built-in server")
}
