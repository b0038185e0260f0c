package lameducktest_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest"
)

// A server that sends its websockets and event streams away spread over a
// window loses no message across a rolling update: every client resumes
// on the new pod, and the reconnections come a few at a time.
func TestStreamsResumeOnTheNewPod(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	const conns = 60
	for _, protocol := range []lameducktest.Protocol{lameducktest.WebSocket, lameducktest.SSE} {
		t.Run(string(protocol), func(t *testing.T) {
			// The engine's built-in lameduck server (see TestMain).
			spec, err := rollout.BuiltinPod(rollout.BuiltinLameduck, exe, drainDelay, gracePeriod)
			require.NoError(t, err)
			res := lameducktest.Rollout(t, lameducktest.Config{
				Command:  append(spec.Command, "-departure-window", "1s"),
				Env:      spec.Env,
				Protocol: protocol,
				Conns:    conns,
				Lag:      lag,
				Grace:    gracePeriod,
			})
			t.Logf("\n%v", res)
			assert.Zero(t, res.Failed, "%d of %d messages failed:\n%v", res.Failed, res.Requests, res)
			assert.Greater(t, res.Requests, int64(conns))
			require.Len(t, res.Rollouts, 1)
			ro := res.Rollouts[0]
			// A client slow to make its first connection (on a loaded
			// machine, under -race) may find the new pod ready already.
			assert.Greater(t, ro.Departures, int64(conns*3/4), "the clients were sent away")
			assert.Equal(t, ro.Departures, ro.Reconnects, "and resumed")
			assert.Equal(t, res.Departures, ro.Departures)
			assert.Less(t, int64(ro.PeakReconnects), ro.Departures/3, "spread, not at once")
			assert.Positive(t, ro.ReconnectSpan)
			assert.Equal(t, 0, ro.Exit.Code, "%v", ro.Exit)
			assert.Less(t, ro.Exit.AfterTerm, gracePeriod-time.Second, "it exits once the last client is gone: %v", ro.Exit)
		})
	}
}
