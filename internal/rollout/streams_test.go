package rollout_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// The lameduck pod sends every websocket and event stream away at its own
// turn, spread over the departure window once the drain delay is over:
// every client resumes on the new pod, no message is lost, nothing ends
// abnormally, and the reconnections come at a steady rate, not in a burst.
func TestRunLameduckStreamsLeaveSpread(t *testing.T) {
	const (
		conns  = 200
		window = 2 * time.Second
	)
	for _, load := range []rollout.LoadKind{rollout.LoadWebSocket, rollout.LoadSSE} {
		t.Run(string(load), func(t *testing.T) {
			cfg := builtinConfig(t, rollout.BuiltinLameduck, time.Second)
			cfg.Pod.Command = append(cfg.Pod.Command, "-departure-window", window.String())
			cfg.Load, cfg.Conns, cfg.Cycles = load, conns, 1
			res, err := rollout.Run(t.Context(), cfg)
			require.NoError(t, err, "pod output:\n%s", cfg.PodLog)
			checkResult(t, cfg, res)

			assert.Zero(t, res.Total.Failed(), "no message lost, no subscription ended abnormally: %q", res.Total.Samples)
			assert.Greater(t, res.Total.Requests, int64(conns), "messages flowed")
			old, next := res.Timeline.Pods[0], res.Timeline.Pods[1]
			// A client slow to make its first connection (on a loaded
			// machine, under -race) may find the new pod ready already.
			moved := len(old.Departures)
			assert.Greater(t, moved, conns*3/4, "the old pod sent its clients away")
			assert.Empty(t, next.Departures, "the new pod, stopped after the load, sent nobody away")
			assert.Len(t, next.Reconnects, moved, "every client sent away resumed on the new pod")
			assert.Empty(t, old.Reconnects)
			assert.Equal(t, int64(moved), res.Total.Departures)
			assert.Equal(t, int64(moved), res.Total.Reconnects)

			// The departures come once the load balancer has stopped
			// routing to the old pod (its drain delay is longer than the
			// lag), and the reconnections go to the new pod.
			require.NotEmpty(t, old.Departures)
			assert.Greater(t, old.Departures[0], old.Removed, "the first departure comes after the endpoint's removal")
			assert.Greater(t, next.Reconnects[0], next.Joined)

			// Spread: the departures and the reconnections, as the
			// clients see them, take most of the window, and the most
			// reconnections in any 100 ms are at most half of them (all
			// at once would be nearly all of them). The bound is loose on
			// purpose: a load generator starved of the CPU for half a
			// second, as on a loaded machine, sees the ends of the
			// streams of that half second at once; the benchmark of
			// examples/realtime measures the spread.
			peak := record.Peak(next.Reconnects)
			assert.Equal(t, peak, res.Rollouts[0].PeakReconnects)
			assert.LessOrEqual(t, peak, moved/2, "reconnects per 100 ms at most")
			assert.Greater(t, old.Departures[len(old.Departures)-1]-old.Departures[0], window/2, "the departures take most of the window")
			assert.Greater(t, res.Rollouts[0].ReconnectSpan, window/2, "the reconnections take most of the window")
		})
	}
}

// The naive pod leaves its websockets to the process's exit: they end
// without a close frame (1006), and the clients that reconnect while the
// load balancer still routes to it find no listener. A load that could not
// fail would prove nothing.
func TestRunNaiveWebSocketsFail(t *testing.T) {
	cfg := builtinConfig(t, rollout.BuiltinNaive, time.Second)
	cfg.Load, cfg.Cycles = rollout.LoadWebSocket, 1
	res, err := rollout.Run(t.Context(), cfg)
	require.NoError(t, err, "pod output:\n%s", cfg.PodLog)
	checkResult(t, cfg, res)
	assert.Positive(t, res.Total.Failures[record.KindEOF], "closed without a close frame: %q", res.Total.Samples)
	assert.Contains(t, res.Total.Samples[record.KindEOF], "1006")
	assert.Zero(t, res.Total.Departures, "nobody was told to leave")
	assert.Empty(t, res.Timeline.Pods[0].Departures)
}
