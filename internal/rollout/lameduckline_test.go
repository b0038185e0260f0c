package rollout

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/lameducktest/record"
)

// drainingLine runs a real Coordinator through a shutdown with a drain
// delay, logging with h, and returns its "lameduck: draining" line.
func drainingLine(t *testing.T, newHandler func(*bytes.Buffer) slog.Handler) string {
	t.Helper()
	var out bytes.Buffer
	ld, err := lameduck.New(lameduck.WithSignals(), lameduck.WithDrainDelay(20*time.Millisecond),
		lameduck.WithLogger(slog.New(newHandler(&out))))
	require.NoError(t, err)
	ld.MarkReady()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, ld.Run(ctx))
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "lameduck: draining") {
			return line
		}
	}
	t.Fatalf("no draining line in:\n%s", out.String())
	return ""
}

func TestLameDuckLineIsReadInBothSlogFormats(t *testing.T) {
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			r, ok := parseLameDuckLine(drainingLine(t, h))
			require.True(t, ok)
			assert.True(t, r.Seen)
			assert.Equal(t, "fixed", r.Ended)
			assert.GreaterOrEqual(t, r.Delay, 20*time.Millisecond)
			assert.Zero(t, r.LastArrival, "nothing arrived")
		})
	}
	r, ok := parseLameDuckLine(`time=2026-12-01T22:00:00Z level=INFO msg="lameduck: draining" drain_delay_took=1.502s ` +
		`drain_delay_ended=quiet arrivals=12 last_arrival=1.002s last_arrival_server="http 127.0.0.1:8080" previous_phase_took=1.502s`)
	require.True(t, ok)
	assert.Equal(t, record.Drain{Seen: true, Delay: 1502 * time.Millisecond, LastArrival: 1002 * time.Millisecond, Ended: "quiet"}, r)
	assert.Equal(t, "drain delay 1.502s (quiet), last arrival 1.002s", drainString(r))
	_, ok = parseLameDuckLine(`msg="lameduck: lame duck" drain_delay=5s`)
	assert.False(t, ok, "only the line that ends the delay")
}
