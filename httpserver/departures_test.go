package httpserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
)

// eventStream serves an event stream that ends when its client goes, as
// event stream handlers do: one event, then nothing until the context ends.
func eventStream(started chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "id: 1\ndata: hello\n\n")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-r.Context().Done()
	}
}

// upgraded hijacks the connection as gorilla/websocket does, writing its
// own 101, and at its turn to leave says goodbye and closes, as a
// websocket handler closing with 1012 does.
func upgraded(started chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		leaving := lameduck.Leaving(r.Context())
		if leaving == nil {
			http.Error(w, "no turn to leave", http.StatusInternalServerError)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		started <- struct{}{}
		<-leaving
		rw.WriteString("bye 1012\n")
		rw.Flush()
	}
}

// openStream opens an event stream on a connection of its own and reads
// its first event.
func openStream(t *testing.T, addr string) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	c.SetDeadline(time.Now().Add(waitTimeout))
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
	return c
}

// readStream reads an event stream's response to its end, and returns the
// retry field's value in milliseconds, or -1 if there was none.
func (c *rawConn) readStream() (retry int, err error) {
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	retry = -1
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "retry: "); ok {
			retry, _ = strconv.Atoi(v)
		}
	}
	return retry, sc.Err() // nil at a clean end: the last chunk came
}

// openUpgraded upgrades a connection of its own.
func openUpgraded(t *testing.T, addr string) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	c.SetDeadline(time.Now().Add(waitTimeout))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(c.r, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return c
}

func TestLongLivedResponsesLeaveAtTheirTurnsInTheDrain(t *testing.T) {
	const streams, upgrades = 20, 10
	started := make(chan struct{}, streams+upgrades)
	mux := http.NewServeMux()
	mux.Handle("/events", eventStream(started))
	mux.Handle("/ws", upgraded(started))
	p := start(t, config{delay: time.Second, ready: true, handler: mux, opts: []lameduck.Option{lameduck.WithDepartureWindow(time.Second)}})

	var wg sync.WaitGroup
	retries := make(chan int, streams)
	for range streams {
		c := openStream(t, p.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			retry, err := c.readStream()
			assert.NoError(t, err, "the stream ends cleanly")
			assert.True(t, c.closedByPeer(), "its connection ends with it: the reconnection goes through the load balancer")
			retries <- retry
		}()
	}
	byes := make(chan string, upgrades+1)
	for range upgrades {
		c := openUpgraded(t, p.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := c.r.ReadString('\n')
			assert.NoError(t, err)
			byes <- line
		}()
	}
	for range streams + upgrades {
		<-started
	}

	p.sigterm(t)
	late := openUpgraded(t, p.addr) // during the delay: a turn like the others
	wg.Add(1)
	go func() {
		defer wg.Done()
		line, err := late.r.ReadString('\n')
		assert.NoError(t, err)
		byes <- line
	}()
	<-started
	for i := 0; i < cap(byes); i++ {
		select {
		case <-byes:
			t.Fatal("told to leave during the drain delay, while the load balancer still routes here")
		default:
		}
	}
	p.endDelay(t, time.Second)
	// From turn to turn, as time passes: each timer of the departures
	// tells the next to leave.
	for p.ld.Status().Departures.Told < streams+upgrades+1 {
		p.clock.AdvanceToNext(t)
	}
	wg.Wait()
	close(retries)
	close(byes)
	for retry := range retries {
		assert.GreaterOrEqual(t, retry, 100, "a reconnection time of 100 ms or more")
		assert.Less(t, retry, 1000)
	}
	n := 0
	for line := range byes {
		assert.Equal(t, "bye 1012\n", line)
		n++
	}
	assert.Equal(t, upgrades+1, n)

	stopping := p.await(t, lameduck.PhaseStopping)
	assert.Zero(t, stopping.Cut.Total(), "nothing was left to cut")
	assert.Equal(t, lameduck.DepartureReport{Told: streams + upgrades + 1, Window: stopping.Departures.Window, PeakPerSecond: streams + upgrades + 1},
		stopping.Departures)
	require.NoError(t, p.wait(t))
}

func TestRequestsThatAreNotLongLivedHaveNoTurn(t *testing.T) {
	seen := make(chan bool, 1)
	p := start(t, config{delay: time.Second, ready: true, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- lameduck.Leaving(r.Context()) == nil
	})})
	resp, _, err := dialRaw(t, p.addr).get("/")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, <-seen)
	p.sigterm(t)
	p.endDelay(t, time.Second)
	require.NoError(t, p.wait(t))
}
