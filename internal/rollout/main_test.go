package rollout_test

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lameduck/lameduck/internal/await"
	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

func TestMain(m *testing.M) {
	// The end-to-end tests run built-in pods by re-executing this test
	// binary with rollout.PodEnv set.
	rollout.MaybeServePod()
	goleak.VerifyTestMain(m)
}

// scriptServer is a TCP server on loopback whose n-th accepted connection
// (from 0) is handled by script(n, conn). It exists to misbehave on purpose.
type scriptServer struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted int
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newScriptServer(t *testing.T, script func(n int, c *net.TCPConn)) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &scriptServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			n := s.accepted
			s.accepted++
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				script(n, c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { s.close(t) })
	return s
}

func (s *scriptServer) addr() string { return s.ln.Addr().String() }

func (s *scriptServer) acceptedConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

func (s *scriptServer) close(t *testing.T) {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	await.Wait(t, &s.wg, "the script server's goroutines")
}

// readRequest reads one request head (up to the blank line) and reports
// whether it got one.
func readRequest(br *bufio.Reader) bool {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" {
			return true
		}
	}
}

// reset closes c with a RST.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// closedPortAddr returns a loopback address nothing listens on.
func closedPortAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func kindOf(t *testing.T, err error) record.Kind {
	t.Helper()
	var f *rollout.Failure
	require.True(t, errors.As(err, &f), "want a *rollout.Failure, got %T: %v", err, err)
	return f.Kind
}
