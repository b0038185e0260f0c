package record_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/lameducktest/record"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorded is a run as a failed lameducktest records it: a pod that
// exited, its replacement that did not, a failure on the old pod's lane
// and one that reached no pod.
func recorded() record.Run {
	n := record.Never
	return record.Run{
		Name: "server", Note: "TestRollingUpdate",
		Settings: record.Settings{
			PodCommand: []string{"server", "-addr", "{ADDR}"}, PodEnv: []string{"A=b"},
			Rollouts: 1, Replicas: 1, Grace: 10 * time.Second, ProbePeriod: 100 * time.Millisecond,
			ReadyPath: "/readyz", ReadyTimeout: 10 * time.Second, Warmup: 500 * time.Millisecond,
			Load: "http1", Conns: 32, WorkersPerConn: 2, Late: 8, Path: "/",
			RequestTimeout: 5 * time.Second, ListenAddr: "127.0.0.1:0",
		},
		Requests: 10,
		Failures: record.KindCounts{record.KindRefused: 2, record.KindEOF: 1},
		Timeline: record.Timeline{
			Interval: 50 * time.Millisecond, LoadStart: time.Millisecond, LoadEnd: 3 * time.Second,
			Pods: []record.Pod{
				{Name: "pod-1", Started: 0, Ready: 200 * time.Millisecond, Joined: 201 * time.Millisecond, Term: time.Second,
					Removed: 1100 * time.Millisecond, ListenerClosed: 2 * time.Second, Exited: 2 * time.Second,
					Exit: record.Exit{Addr: "127.0.0.1:1", Status: "exit status 0", AfterTerm: time.Second,
						Drain: record.Drain{Seen: true, Delay: 900 * time.Millisecond, LastArrival: 12 * time.Millisecond, Ended: "min"}},
					Served: []int64{4, 4}},
				{Name: "pod-2", Started: 500 * time.Millisecond, Ready: 700 * time.Millisecond, Joined: 701 * time.Millisecond,
					Term: n, Removed: n, ListenerClosed: n, Exited: n},
			},
			Failures: []record.Failure{
				{At: 1500 * time.Millisecond, Pod: 0, Kind: record.KindRefused},
				{At: 1600 * time.Millisecond, Pod: -1, Kind: record.KindRefused},
				{At: 1700 * time.Millisecond, Pod: 1, Kind: record.KindEOF},
			},
		},
	}
}

// A record reads back as it was written: the rollout command draws what
// lameducktest wrote.
func TestWriteFileReadFile(t *testing.T) {
	run := recorded()
	assert.Equal(t, int64(3), run.Failed())
	path := filepath.Join(t.TempDir(), "rollout.json")
	require.NoError(t, record.WriteFile(path, run))
	runs, err := record.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []record.Run{run}, runs)

	assert.ErrorContains(t, record.WriteFile(filepath.Join(t.TempDir(), "missing", "rollout.json"), run), "no such file or directory")
	_, err = record.ReadFile(filepath.Join(t.TempDir(), "missing.json"))
	assert.ErrorContains(t, err, "no such file or directory")
}

// The JSON names every field and count, gives durations in seconds with
// the unit in the name, and records every setting of the run.
func TestTheJSONNamesEveryFieldAndUnit(t *testing.T) {
	b, err := json.Marshal(recorded())
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
		_, err := record.ReadFile(path)
		assert.ErrorContains(t, err, tt.want, tt.json)
	}
}

// The JSON does not change: testdata/runs.json, written before the record
// became a package of its own, reads as the runs it recorded and is
// written again byte for byte. Records that users keep, and the rollout
// command's -draw, depend on it.
func TestTheJSONStaysTheSame(t *testing.T) {
	const golden = "testdata/runs.json"
	ws := recorded()
	ws.Name, ws.Note = "lameduck", ""
	ws.Settings.Load, ws.Settings.Lag, ws.Settings.Warmup, ws.Settings.Path = "websocket", 300*time.Millisecond, 0, "/ws"
	ws.Settings.PodEnv = nil
	ws.Timeline.Pods = slices.Clone(ws.Timeline.Pods)
	p := &ws.Timeline.Pods[0]
	p.Exit = record.Exit{Addr: "127.0.0.1:1", Status: "signal: killed", Code: -1, Killed: true, AfterTerm: 10 * time.Second}
	p.Departures = []time.Duration{1200 * time.Millisecond, 1250 * time.Millisecond}
	ws.Timeline.Pods[1].Reconnects = []time.Duration{1210 * time.Millisecond, 1262 * time.Millisecond}
	ws.Timeline.FailuresLeftOut, ws.Timeline.ServedLeftOut = 7, 9
	want := []record.Run{recorded(), ws}

	runs, err := record.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, want, runs)

	path := filepath.Join(t.TempDir(), "runs.json")
	require.NoError(t, record.WriteFile(path, want...))
	wrote, err := os.ReadFile(path)
	require.NoError(t, err)
	b, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(b), string(wrote))
}

func TestPeak(t *testing.T) {
	ms := func(ts ...int) []time.Duration {
		var ds []time.Duration
		for _, t := range ts {
			ds = append(ds, time.Duration(t)*time.Millisecond)
		}
		return ds
	}
	for _, tt := range []struct {
		name  string
		times []time.Duration
		want  int
	}{
		{"none", nil, 0},
		{"one", ms(5), 1},
		{"all at once", ms(0, 1, 2, 3, 99), 5},
		{"a window is half-open", ms(0, 100, 200), 1},
		{"spread", ms(0, 60, 120, 180, 240), 2},
		{"a burst within a spread", ms(0, 150, 300, 310, 320, 399, 450), 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, record.Peak(tt.times))
		})
	}
}
