//go:build unix

package httpserver_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/await"
)

func TestThousandsOfIdleConnectionsDoNotHoldTheDrain(t *testing.T) {
	const talked, silent = 1500, 500
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	// Each connection takes two descriptors: the client's and the
	// server's.
	if need := uint64(2*(talked+silent) + 200); lim.Cur < need {
		t.Skipf("the open-file limit is %d; this test needs %d (raise it with ulimit -n)", lim.Cur, need)
	}
	var accepted atomic.Int32
	allAccepted := make(chan struct{})
	p := start(t, config{delay: time.Second, handler: okHandler, ready: true, connState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew && accepted.Add(1) == talked+silent {
			close(allAccepted)
		}
	}})

	conns := make([]*rawConn, talked+silent)
	errs := make(chan error, len(conns))
	var wg sync.WaitGroup
	const dialers = 16
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; i < len(conns); i += dialers {
				nc, err := net.DialTimeout("tcp", p.addr, waitTimeout)
				if err != nil {
					errs <- err
					return
				}
				c := &rawConn{Conn: nc, r: bufio.NewReader(nc)}
				conns[i] = c
				if i < talked {
					if resp, _, err := c.get("/"); err != nil || resp.Close {
						errs <- fmt.Errorf("request %d before the signal: %v", i, err)
						return
					}
				}
			}
		}()
	}
	await.Wait(t, &wg, "the dialers")
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	select {
	case <-allAccepted:
	case <-time.After(waitTimeout):
		t.Fatalf("only %d of %d connections accepted", accepted.Load(), talked+silent)
	}

	p.sigterm(t)
	p.endDelay(t, time.Second)
	require.NoError(t, p.wait(t), "idle connections are closed, not waited for nor counted as cut")
	for i, c := range conns {
		require.True(t, c.closedByPeer(), "connection %d", i)
	}
}
