package report_test

import (
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

// A record reads back as it was written: the rollout command draws what
// lameducktest wrote.
func TestWriteFileReadFile(t *testing.T) {
	res := &rollout.Result{
		Lag:   time.Second,
		Total: rollout.Counts{Requests: 10, Failures: [rollout.NumKinds]int64{rollout.KindRefused: 2}},
		Timeline: rollout.Timeline{
			Bucket: rollout.TimelineBucket, LoadStart: time.Millisecond, LoadEnd: 3 * time.Second,
			Pods: []rollout.PodTimeline{{Name: "pod-1", Term: time.Second, Exited: 2 * time.Second,
				Exit: rollout.PodExit{Pod: "pod-1", Status: "exit status 0"}, Served: []int64{4, 4}}},
			Failures: []rollout.FailureAt{{At: 1500 * time.Millisecond, Pod: 0, Kind: rollout.KindRefused}},
		},
	}
	run := report.FromResult("server", "TestRollingUpdate", res)
	assert.Equal(t, int64(2), run.Failed())
	path := filepath.Join(t.TempDir(), "rollout.json")
	require.NoError(t, report.WriteFile(path, run))
	runs, err := report.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []report.Run{run}, runs)

	assert.ErrorContains(t, report.WriteFile(filepath.Join(t.TempDir(), "missing", "rollout.json"), run), "no such file or directory")
	_, err = report.ReadFile(filepath.Join(t.TempDir(), "missing.json"))
	assert.ErrorContains(t, err, "no such file or directory")
}
