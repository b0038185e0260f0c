package httpserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/await"
)

// usage is what a process holds between shutdown cycles.
type usage struct {
	goroutines int
	fds        int // -1 where /proc/self/fd does not exist
	heap       uint64
}

// measureUsage waits, as goleak does, for goroutines and descriptors
// closing in the background (net/http lingers 500 ms before closing a
// connection it ended) to fall to at most limit, then measures.
func measureUsage(t *testing.T, limit usage) usage {
	t.Helper()
	var u usage
	deadline := time.Now().Add(waitTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		u.goroutines, u.fds = runtime.NumGoroutine(), openFDs(t)
		if u.goroutines <= limit.goroutines && u.fds <= limit.fds || time.Now().After(deadline) {
			break
		}
		time.Sleep(wait)
	}
	// Twice: the first collection moves pooled objects to the victim
	// cache, the second frees them.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	u.heap = m.HeapAlloc
	return u
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// keepAliveClient sends requests on one connection at a time, as a
// load generator that does not hide failures would, and opens a new
// connection when a response carries Connection: close. It reports every
// response on served and stops at stop.
func keepAliveClient(addr string, stop <-chan struct{}, served chan<- struct{}) error {
	var c *rawConn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		if c == nil {
			nc, err := net.DialTimeout("tcp", addr, waitTimeout)
			if err != nil {
				return err
			}
			c = &rawConn{Conn: nc, r: bufio.NewReader(nc)}
		}
		resp, body, err := c.get("/")
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || body != "ok" {
			return fmt.Errorf("%s %q", resp.Status, body)
		}
		select {
		case served <- struct{}{}:
		default:
		}
		if resp.Close {
			c.Close()
			c = nil
		}
	}
}

// soakCycle runs one process through start, serve, signal and drain with
// concurrent HTTP/1 and HTTP/2 clients, none of which may fail.
func soakCycle(t *testing.T) {
	t.Helper()
	p := start(t, config{delay: time.Second, handler: okHandler, ready: true})
	h2 := h2cClient()
	defer h2.CloseIdleConnections()
	stop := make(chan struct{})
	served := make(chan struct{}, 1000)
	errs := make(chan error, 5)
	var clients sync.WaitGroup
	for range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			errs <- keepAliveClient(p.addr, stop, served)
		}()
	}
	clients.Add(1)
	go func() {
		defer clients.Done()
		for {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			resp, err := h2.Get("http://" + p.addr + "/")
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			select {
			case served <- struct{}{}:
			default:
			}
		}
	}()
	awaitServed := func(n int) {
		t.Helper()
		timeout := time.After(waitTimeout)
		for range n {
			select {
			case <-served:
			case <-timeout:
				t.Fatalf("fewer than %d responses", n)
			}
		}
	}
	awaitServed(50)
	p.sigterm(t)
	awaitServed(50) // during the drain delay
	close(stop)
	await.Wait(t, &clients, "the clients to stop")
	close(errs)
	for err := range errs {
		require.NoError(t, err, "no request fails")
	}
	p.endDelay(t, time.Second)
	require.NoError(t, p.wait(t))
}

func TestSoakManyShutdownCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; skipped with -short")
	}
	const cycles, warmUp = 30, 5
	baseline := measureUsage(t, usage{goroutines: runtime.NumGoroutine(), fds: openFDs(t)})
	var early usage
	for i := range cycles {
		soakCycle(t)
		if i == warmUp-1 {
			early = measureUsage(t, baseline)
		}
	}
	late := measureUsage(t, early)
	t.Logf("after %d cycles: %+v; after %d: %+v", warmUp, early, cycles, late)
	assert.LessOrEqual(t, late.goroutines, early.goroutines+2, "goroutines grow with cycles")
	if early.fds >= 0 {
		assert.LessOrEqual(t, late.fds, early.fds+2, "file descriptors grow with cycles")
	}
	assert.LessOrEqual(t, late.heap, early.heap+1<<20, "the heap grows with cycles")
}
