package rollout_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// A run's record has every setting of the run, its defaults filled in, a
// lag of none as zero, and the run's exact totals and timeline.
func TestResultRecord(t *testing.T) {
	cfg, err := rollout.Config{Pod: rollout.PodSpec{Command: []string{"server", "-addr", "{ADDR}"}, Env: []string{"A=b"}}, Lag: -1, Late: 8}.Check(nil)
	require.NoError(t, err)
	cfg.PodLog = os.Stderr
	tl := record.Timeline{
		Interval: rollout.TimelineBucket, LoadStart: time.Millisecond, LoadEnd: 3 * time.Second,
		Pods:     []record.Pod{{Name: "pod-1", Term: record.Never, Removed: record.Never, ListenerClosed: record.Never, Exited: record.Never}},
		Failures: []record.Failure{{At: 1500 * time.Millisecond, Pod: -1, Kind: record.KindRefused}},
	}
	res := &rollout.Result{
		Config:   cfg,
		Total:    rollout.Counts{Requests: 10, Failures: record.KindCounts{record.KindRefused: 2, record.KindEOF: 1}},
		Timeline: tl,
	}
	assert.Equal(t, record.Run{
		Name: "server", Note: "TestRollingUpdate",
		Settings: record.Settings{
			PodCommand: []string{"server", "-addr", "{ADDR}"}, PodEnv: []string{"A=b"},
			Rollouts: 1, Replicas: 1, Lag: 0, Grace: 10 * time.Second, ProbePeriod: 100 * time.Millisecond,
			ReadyPath: "/readyz", ReadyTimeout: 10 * time.Second, Warmup: 500 * time.Millisecond,
			Load: "http1", Conns: 32, WorkersPerConn: 2, Fresh: 0, Late: 8, Path: "/",
			RequestTimeout: 5 * time.Second, ListenAddr: "127.0.0.1:0",
		},
		Requests: 10,
		Failures: record.KindCounts{record.KindRefused: 2, record.KindEOF: 1},
		Timeline: tl,
	}, res.Record("server", "TestRollingUpdate"))

	cfg.Lag, cfg.Warmup = 300*time.Millisecond, -1
	res.Config = cfg
	settings := res.Record("server", "").Settings
	assert.Equal(t, 300*time.Millisecond, settings.Lag)
	assert.Zero(t, settings.Warmup, "no warm-up")
}
