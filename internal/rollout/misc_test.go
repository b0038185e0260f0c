package rollout_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"./server -addr {ADDR}", []string{"./server", "-addr", "{ADDR}"}},
		{"  a\tb\n c  ", []string{"a", "b", "c"}},
		{`sh -c 'echo "$X" {ADDR}'`, []string{"sh", "-c", `echo "$X" {ADDR}`}},
		{`a "b c" d\ e "x\"y" ''`, []string{"a", "b c", "d e", `x"y`, ""}},
		{`a'b'"c"`, []string{"abc"}},
	}
	for _, tt := range tests {
		got, err := rollout.ParseCommand(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
	}
	for _, bad := range []string{"", "   ", `a 'b`, `a "b`, `a \`} {
		_, err := rollout.ParseCommand(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestCounts(t *testing.T) {
	var c rollout.Counts
	c.Add(rollout.Counts{Requests: 10, Failures: record.KindCounts{record.KindRefused: 2}, Samples: [record.NumKinds]string{record.KindRefused: "first"}})
	c.Add(rollout.Counts{Requests: 5, Failures: record.KindCounts{record.KindRefused: 1, record.KindTimeout: 1}, Samples: [record.NumKinds]string{record.KindRefused: "second"}, Codes: map[string]int64{"Unavailable": 1}})
	assert.Equal(t, int64(15), c.Requests)
	assert.Equal(t, int64(4), c.Failed())
	assert.Equal(t, "first", c.Samples[record.KindRefused])
	assert.Equal(t, map[string]int64{"Unavailable": 1}, c.Codes)
	assert.Equal(t, "requests=15 failed=4 refused=3 timeout=1", c.Summary())
}

func TestKind(t *testing.T) {
	var names []string
	for k := range record.NumKinds {
		names = append(names, k.String())
	}
	assert.Equal(t, []string{"refused", "reset", "eof", "5xx", "timeout", "other"}, names)
	assert.Equal(t, "Kind(42)", record.Kind(42).String())

	err := fmt.Errorf("wrapped: %w", &rollout.Failure{Kind: record.KindEOF, Err: errors.New("boom")})
	assert.Equal(t, record.KindEOF, rollout.KindOf(err))
	assert.Equal(t, record.KindOther, rollout.KindOf(errors.New("plain")))
	assert.EqualError(t, &rollout.Failure{Kind: record.KindRefused, Code: "Unavailable", Err: errors.New("x")}, "refused (grpc Unavailable): x")

	// Recorded timelines name the kinds.
	b, err := json.Marshal([]record.Kind{record.KindRefused, record.Kind5xx})
	require.NoError(t, err)
	assert.JSONEq(t, `["refused", "5xx"]`, string(b))
	var kinds []record.Kind
	require.NoError(t, json.Unmarshal(b, &kinds))
	assert.Equal(t, []record.Kind{record.KindRefused, record.Kind5xx}, kinds)
	assert.ErrorContains(t, json.Unmarshal([]byte(`["lost"]`), &kinds), `unknown failure kind "lost"`)
	_, err = json.Marshal(record.Kind(42))
	assert.ErrorContains(t, err, "no such kind 42")
}

// A pod that serves its probes on a port of its own ({PROBE_ADDR}, as gRPC
// servers do) is probed there: the built-in pods then answer /readyz only on
// the probe port, so the run could not start otherwise.
func TestRunProbeAddr(t *testing.T) {
	cfg := builtinConfig(t, rollout.BuiltinNaive, time.Second)
	cfg.Pod.Command = append(cfg.Pod.Command, "-probe-addr", rollout.ProbeAddrPlaceholder)
	cfg.Cycles, cfg.Conns, cfg.Warmup, cfg.Lag = 1, 2, -1, -1
	res, err := rollout.Run(t.Context(), cfg)
	require.NoError(t, err, "pod output:\n%s", cfg.PodLog)
	require.Len(t, res.Rollouts, 1)
	assert.NotEmpty(t, res.PodLog)
}

func TestRunLoadThatNeverSucceeds(t *testing.T) {
	cfg := builtinConfig(t, rollout.BuiltinNaive, time.Second)
	cfg.Path = "/missing"
	cfg.RequestTimeout = 200 * time.Millisecond
	cfg.Conns, cfg.Warmup = 2, -1
	res, err := rollout.Run(t.Context(), cfg)
	assert.ErrorContains(t, err, "no request succeeded")
	assert.ErrorContains(t, err, "unexpected status 404")
	require.NotNil(t, res)
	assert.Positive(t, res.Total.Failures[record.KindOther], "the failed requests still count")
}

// cancelOn is a pod log that cancels a run when a line containing trigger
// is written, and remembers the pods' process ids.
type cancelOn struct {
	syncBuffer
	trigger string
	cancel  context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.trigger) {
		c.cancel()
	}
	return c.syncBuffer.Write(p)
}

func TestRunCancelStopsEverything(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Textbook pods would take their drain delay to exit on SIGTERM; a
	// cancelled run must not wait for that.
	cfg := builtinConfig(t, rollout.BuiltinTextbook, time.Minute)
	log := &cancelOn{trigger: "pod-2: textbook", cancel: cancel}
	cfg.PodLog = log
	start := time.Now()
	_, err := rollout.Run(ctx, cfg)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 5*time.Second)
	pids := regexp.MustCompile(`started pid (\d+)`).FindAllStringSubmatch(log.String(), -1)
	require.NotEmpty(t, pids)
	for _, m := range pids {
		pid, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "pod pid %d still runs", pid)
	}
}

// FuzzParseCommand checks that ParseCommand never panics, and that it
// splits back any list of words quoted as a shell would quote them.
func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{"server -addr {ADDR}", `a 'b c' "d\"e"`, `x\`, `'open`, "tab\tsep\nline", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rollout.ParseCommand(s) //nolint:errcheck // only must not panic
		if !utf8.ValidString(s) {
			return // ParseCommand reads runes: invalid bytes do not survive
		}
		words := strings.Fields(s)
		if len(words) == 0 {
			return // an empty command is an error, checked in TestParseCommand
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		got, err := rollout.ParseCommand(strings.Join(quoted, " "))
		if err != nil {
			t.Fatalf("ParseCommand(%q): %v", strings.Join(quoted, " "), err)
		}
		if !slices.Equal(words, got) {
			t.Fatalf("ParseCommand(%q) = %q, want %q", strings.Join(quoted, " "), got, words)
		}
	})
}
