package main_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"

	"github.com/lameduck/lameduck/internal/await"
)

// kinds are the clients: two websocket libraries, and event streams.
var kinds = []struct {
	name    string
	session session
}{
	{"coder/websocket", coderSession},
	{"gorilla/websocket", gorillaSession},
	{"event stream", sseSession},
}

// A trip is one follower's: how A sent it away, and how it went on B.
type trip struct {
	f        *follower
	onA, onB ending
}

// travel starts k followers of every kind on a, each resuming on b once a
// sends it away, and returns once each has had two numbers from a (or
// failed), with a channel that gets their trips.
func travel(t *testing.T, a, b *proc, k int) <-chan trip {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), await.Timeout)
	t.Cleanup(cancel)
	trips := make(chan trip, k*len(kinds))
	ready := make(chan struct{}, k*len(kinds))
	for _, kind := range kinds {
		for range k {
			go func() {
				f := &follower{kind: kind.name, session: kind.session}
				onA, onB := f.follow(ctx, a.addr, b.addr, 3, ready)
				trips <- trip{f, onA, onB}
			}()
		}
	}
	for range cap(ready) {
		await.Recv(t, ready, "a follower's first numbers")
	}
	return trips
}

// checkTrip checks that a sent the follower away as its protocol says, and
// that it resumed on b without missing a number.
func checkTrip(t *testing.T, tr trip) {
	t.Helper()
	f := tr.f
	if assert.True(t, tr.onA.left(), "%s: sent away with 1012, or a clean end of stream with a retry field; got %v", f.kind, tr.onA) {
		if f.kind == "event stream" {
			assert.GreaterOrEqual(t, tr.onA.retry, 100, "a reconnection time of 100 ms or more")
			assert.Less(t, tr.onA.retry, 1000)
		} else {
			assert.Equal(t, int(websocket.StatusServiceRestart), tr.onA.code)
			assert.Contains(t, tr.onA.reason, "resume with ?from=")
		}
		assert.True(t, tr.onB.byClient, "%s: resumed on the next server; got %v", f.kind, tr.onB)
	}
	assert.Empty(t, f.gaps, "%s: no number missed or repeated", f.kind)
}

// TestClientsConnectingDuringTheDrainDelayAreServed is issue 25's first
// defect: a load balancer still routes new websockets and event streams to
// a pod during its drain delay, and they must be served. The 101 of a
// websocket then kept "Connection: close", and coder/websocket refused it
// (`Connection header "" does not contain Upgrade`). They are given turns
// to leave, like the others.
func TestClientsConnectingDuringTheDrainDelayAreServed(t *testing.T) {
	a := start(t, "-drain-delay", "2s", "-departure-window", "500ms", "-grace-period", "10s", "-interval", "20ms")
	b := start(t, "-grace-period", "10s", "-interval", "20ms")
	a.sigterm(t)
	a.awaitLine(t, "lameduck: lame duck")
	trips := travel(t, a, b, 1) // the fixed delay is long enough for all of them
	for range len(kinds) {
		checkTrip(t, await.Recv(t, trips, "a follower's trip"))
	}
	assert.Equal(t, 0, a.wait(t))
	assert.Contains(t, a.logText(), fmt.Sprintf("departures.told=%d departures.left=0", len(kinds)))
	assert.Contains(t, a.logText(), "cut=nothing")
}

// TestClientsMoveToTheNextServerAcrossSIGTERM follows k clients of each
// kind from instance A to instance B across A's SIGTERM.
func TestClientsMoveToTheNextServerAcrossSIGTERM(t *testing.T) {
	const (
		k     = 20
		delay = 500 * time.Millisecond
		// Turns are at most 10 ms apart: with 60 clients, a window of
		// 500 ms is spread over in full.
		window = 500 * time.Millisecond
	)
	a := start(t, "-drain-delay", delay.String(), "-departure-window", window.String(), "-grace-period", "20s", "-interval", "50ms")
	b := start(t, "-grace-period", "20s", "-interval", "50ms")
	trips := travel(t, a, b, k)
	a.sigterm(t)

	var all []trip
	var sentAway []time.Time // when each client saw its close or end
	codes := map[string]int{}
	for range k * len(kinds) {
		tr := await.Recv(t, trips, "a follower's trip")
		all = append(all, tr)
		sentAway = append(sentAway, tr.onA.at)
		codes[tr.f.kind+" "+code(tr.onA)]++
	}
	slices.SortFunc(sentAway, func(x, y time.Time) int { return x.Compare(y) })
	first, last := sentAway[0], sentAway[len(sentAway)-1]
	exit := a.wait(t)
	t.Logf("%d clients, A's endings: %v; sent away %v to %v after SIGTERM; A exited %v after the last was",
		len(all), codes, first.Sub(a.signaled).Round(time.Millisecond), last.Sub(a.signaled).Round(time.Millisecond),
		a.exitedAt.Sub(last).Round(time.Millisecond))

	t.Run("each client is sent away cleanly and misses nothing", func(t *testing.T) {
		for _, tr := range all {
			checkTrip(t, tr)
		}
	})
	t.Run("A exits cleanly once the last client has left", func(t *testing.T) {
		assert.Equal(t, 0, exit)
		assert.Contains(t, a.logText(), fmt.Sprintf("departures.told=%d departures.left=0", k*len(kinds)))
		assert.Contains(t, a.logText(), "cut=nothing")
		assert.True(t, a.exitedAt.After(last), "A exits after its last client was sent away")
		assert.True(t, a.exitedAt.Before(a.drainDeadline(t)), "A exits before its drain deadline: nothing waits for it")
	})
	t.Run("the departures spread over the window", func(t *testing.T) {
		assert.True(t, first.After(a.signaled.Add(delay)), "no client is sent away during the drain delay, while routing still comes here")
		// Generous bounds, for a loaded machine, where a starved client
		// sees its close late, bunched with the next ones': evenly spread,
		// the turns of 60 clients span 58/60 of the window, and the middle
		// half of them half of it.
		assert.Greater(t, last.Sub(first), window/2, "the turns span most of the window")
		n := len(sentAway)
		assert.Greater(t, sentAway[3*n/4].Sub(sentAway[n/4]), window/4, "the middle half of the turns is not one burst")
		most := 0
		for i, at := range sentAway {
			k := 0
			for _, later := range sentAway[i:] {
				if later.Sub(at) < window/10 {
					k++
				}
			}
			most = max(most, k)
		}
		t.Logf("middle half sent away over %v; at most %d of %d within a tenth of the window (%d when evenly spread)",
			sentAway[3*n/4].Sub(sentAway[n/4]).Round(time.Millisecond), most, n, (n+9)/10)
	})
}

// code names how a session ended, for the log.
func code(e ending) string {
	switch {
	case e.err != nil:
		return "error"
	case e.code != 0:
		return fmt.Sprint(e.code)
	case e.retry >= 0:
		return "retry"
	default:
		return "end without retry"
	}
}
