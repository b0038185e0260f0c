package httpserver_test

import (
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck"
)

// breakListener makes the listening socket bound to addr fail, as a
// listener whose socket the kernel tears down would: accept returns EINVAL.
func breakListener(t *testing.T, addr string) {
	t.Helper()
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	require.NoError(t, err)
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		in4, ok := sa.(*syscall.SockaddrInet4)
		if !ok || in4.Port != tcp.Port || !net.IP(in4.Addr[:]).Equal(tcp.IP) {
			continue
		}
		if listening, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || listening != 1 {
			continue // a connection accepted on that port
		}
		require.NoError(t, syscall.Shutdown(fd, syscall.SHUT_RD))
		return
	}
	t.Fatalf("no listening socket on %s", addr)
}

func TestServeFailingMidRunLetsRequestsInFlightFinish(t *testing.T) {
	h := newBlocking()
	p := start(t, config{delay: time.Second, handler: h, ready: true})
	c := dialRaw(t, p.addr)
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		_, body, err := c.get("/")
		got <- result{body, err}
	}()
	h.awaitArrival(t)

	breakListener(t, p.addr)
	p.await(t, lameduck.PhaseLameDuck)
	select {
	case <-p.ld.Entered(lameduck.PhaseLameDuck):
	default:
		t.Error("readiness must turn off at once")
	}
	p.endDelay(t, time.Second)
	close(h.release)
	select {
	case r := <-got:
		require.NoError(t, r.err, "the request in flight finishes")
		assert.Len(t, r.body, 100_000)
	case <-time.After(waitTimeout):
		t.Fatal("the request in flight never finished")
	}
	err := p.wait(t)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "httpserver: serving "+p.addr)
	assert.Contains(t, err.Error(), "invalid argument")
	assert.NotErrorIs(t, err, lameduck.ErrCut, "nothing was cut")
}
