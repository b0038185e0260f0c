package report_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/internal/rollout/report"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorded is a run as a failed lameducktest records it: a pod that
// exited, its replacement that did not, a failure on the old pod's lane
// and one that reached no pod.
func recorded(t *testing.T) report.Run {
	t.Helper()
	cfg, err := rollout.Config{Pod: rollout.PodSpec{Command: []string{"server", "-addr", "{ADDR}"}, Env: []string{"A=b"}}, Lag: -1, Late: 8}.Check(nil)
	require.NoError(t, err)
	cfg.PodLog = os.Stderr
	n := rollout.Never
	res := &rollout.Result{
		Config: cfg,
		Total:  rollout.Counts{Requests: 10, Failures: rollout.KindCounts{rollout.KindRefused: 2, rollout.KindEOF: 1}},
		Timeline: rollout.Timeline{
			Bucket: rollout.TimelineBucket, LoadStart: time.Millisecond, LoadEnd: 3 * time.Second,
			Pods: []rollout.PodTimeline{
				{Name: "pod-1", Started: 0, Ready: 200 * time.Millisecond, Joined: 201 * time.Millisecond, Term: time.Second,
					Removed: 1100 * time.Millisecond, ListenerClosed: 2 * time.Second, Exited: 2 * time.Second,
					Exit: rollout.PodExit{Pod: "pod-1", Addr: "127.0.0.1:1", Status: "exit status 0", AfterTerm: time.Second,
						LameDuck: rollout.LameDuckReport{Seen: true, DelayTook: 900 * time.Millisecond, LastArrival: 12 * time.Millisecond, Ended: "min"}},
					Served: []int64{4, 4}},
				{Name: "pod-2", Started: 500 * time.Millisecond, Ready: 700 * time.Millisecond, Joined: 701 * time.Millisecond,
					Term: n, Removed: n, ListenerClosed: n, Exited: n},
			},
			Failures: []rollout.FailureAt{
				{At: 1500 * time.Millisecond, Pod: 0, Kind: rollout.KindRefused},
				{At: 1600 * time.Millisecond, Pod: -1, Kind: rollout.KindRefused},
				{At: 1700 * time.Millisecond, Pod: 1, Kind: rollout.KindEOF},
			},
		},
	}
	return report.FromResult("server", "TestRollingUpdate", res)
}

// A record reads back as it was written: the rollout command draws what
// lameducktest wrote.
func TestWriteFileReadFile(t *testing.T) {
	run := recorded(t)
	assert.Equal(t, int64(3), run.Failed())
	assert.Nil(t, run.Settings.PodLog, "a writer is no setting to record")
	path := filepath.Join(t.TempDir(), "rollout.json")
	require.NoError(t, report.WriteFile(path, run))
	runs, err := report.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []report.Run{run}, runs)

	assert.ErrorContains(t, report.WriteFile(filepath.Join(t.TempDir(), "missing", "rollout.json"), run), "no such file or directory")
	_, err = report.ReadFile(filepath.Join(t.TempDir(), "missing.json"))
	assert.ErrorContains(t, err, "no such file or directory")
}

// The JSON names every field and count, gives durations in seconds with
// the unit in the name, and records every setting of the run.
func TestTheJSONNamesEveryFieldAndUnit(t *testing.T) {
	b, err := json.Marshal(recorded(t))
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))

	assert.Equal(t, map[string]any{"refused": 2.0, "reset": 0.0, "eof": 1.0, "5xx": 0.0, "timeout": 0.0, "other": 0.0}, got["failures"])
	assert.Equal(t, 3.0, got["failed"])
	settings := got["settings"].(map[string]any)
	assert.Equal(t, map[string]any{
		"pod_command": []any{"server", "-addr", "{ADDR}"}, "pod_env": []any{"A=b"},
		"rollouts": 1.0, "replicas": 1.0, "lag_seconds": 0.0, "grace_seconds": 10.0, "probe_period_seconds": 0.1,
		"ready_path": "/readyz", "ready_timeout_seconds": 10.0, "warmup_seconds": 0.5, "load": "http1",
		"conns": 32.0, "workers_per_conn": 2.0, "fresh": 0.0, "late": 8.0, "path": "/",
		"request_timeout_seconds": 5.0, "listen_addr": "127.0.0.1:0",
	}, settings)

	tl := got["timeline"].(map[string]any)
	assert.Equal(t, 0.05, tl["interval_seconds"])
	pods := tl["pods"].([]any)
	old, running := pods[0].(map[string]any), pods[1].(map[string]any)
	assert.Equal(t, 1.0, old["term_seconds"])
	assert.Equal(t, map[string]any{"addr": "127.0.0.1:1", "status": "exit status 0", "code": 0.0, "killed": false,
		"after_term_seconds": 1.0, "drain_delay_seconds": 0.9, "drain_delay_ended": "min", "last_arrival_seconds": 0.012}, old["exit"])
	assert.NotContains(t, running, "term_seconds", "an event that did not happen has no time")
	assert.NotContains(t, running, "exit")
	assert.Equal(t, []any{
		map[string]any{"at_seconds": 1.5, "pod": "pod-1", "kind": "refused"},
		map[string]any{"at_seconds": 1.6, "kind": "refused"},
		map[string]any{"at_seconds": 1.7, "pod": "pod-2", "kind": "eof"},
	}, tl["failures"])
}

// A record that contradicts itself is refused with what is wrong.
func TestReadFileRejectsAContradiction(t *testing.T) {
	for _, tt := range []struct{ json, want string }{
		{`[{"name":"x","failed":3,"failures":{"refused":2}}]`, `run "x": failed is 3 but its failures by kind add up to 2`},
		{`[{"name":"x","failures":{"lost":2}}]`, `unknown failure kind "lost"`},
		{`[{"name":"x","timeline":{"failures":[{"at_seconds":1,"pod":"pod-9","kind":"eof"}]}}]`, `names pod "pod-9", which is not among its pods`},
	} {
		path := filepath.Join(t.TempDir(), "rollout.json")
		require.NoError(t, os.WriteFile(path, []byte(tt.json), 0o644))
		_, err := report.ReadFile(path)
		assert.ErrorContains(t, err, tt.want, tt.json)
	}
}
