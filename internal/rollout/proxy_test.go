package rollout_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lameduck/lameduck/internal/rollout"
	"github.com/lameduck/lameduck/lameducktest/record"
)

func newProxy(t *testing.T, endpoints ...string) *rollout.Proxy {
	t.Helper()
	p, err := rollout.NewProxy("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	for _, ep := range endpoints {
		p.AddEndpoint(ep)
	}
	return p
}

// nameServer answers each line with "name: line", so a client can tell
// which backend its connection is pinned to.
func nameServer(t *testing.T, name string) *scriptServer {
	return newScriptServer(t, func(_ int, c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, name+": "+line); err != nil {
				return
			}
		}
	})
}

func ask(t *testing.T, c net.Conn, br *bufio.Reader, msg string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := io.WriteString(c, msg+"\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSuffix(line, "\n")
}

func TestProxyRoundRobinAndPinning(t *testing.T) {
	a, b := nameServer(t, "a"), nameServer(t, "b")
	p := newProxy(t, a.addr(), b.addr())
	assert.Equal(t, []string{a.addr(), b.addr()}, p.Endpoints())

	c1, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c1.Close()
	br1 := bufio.NewReader(c1)
	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()
	br2 := bufio.NewReader(c2)

	first, second := ask(t, c1, br1, "hi"), ask(t, c2, br2, "hi")
	assert.ElementsMatch(t, []string{"a: hi", "b: hi"}, []string{first, second}, "round-robin spreads new connections")
	// Each connection's route is known by the client's address, the
	// endpoints numbered in the order they were first added.
	ordinal := map[string]int{"a": 0, "b": 1}
	assert.Equal(t, ordinal[first[:1]], p.RouteOf(c1.LocalAddr()))
	assert.Equal(t, ordinal[second[:1]], p.RouteOf(c2.LocalAddr()))
	assert.Equal(t, -1, p.RouteOf(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}), "a port that never connected")
	assert.Equal(t, -1, p.RouteOf(&net.UnixAddr{Name: "x", Net: "unix"}))

	// Removing an endpoint moves no open connection (conntrack), only new ones.
	p.RemoveEndpoint(a.addr())
	assert.Equal(t, first[:1]+": again", ask(t, c1, br1, "again"))
	assert.Equal(t, second[:1]+": again", ask(t, c2, br2, "again"))
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err)
		assert.Equal(t, "b: new", ask(t, c, bufio.NewReader(c), "new"))
		c.Close()
	}
	assert.Equal(t, int64(5), p.Stats().Conns)

	// An endpoint added again keeps its number.
	p.AddEndpoint(a.addr())
	for range 2 {
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err)
		answer := ask(t, c, bufio.NewReader(c), "back")
		assert.Equal(t, ordinal[answer[:1]], p.RouteOf(c.LocalAddr()), answer)
		c.Close()
	}
}

func TestProxyPropagatesHalfClose(t *testing.T) {
	gotFromClient := make(chan string, 1)
	backend := newScriptServer(t, func(_ int, c *net.TCPConn) {
		defer c.Close()
		io.WriteString(c, "bye")
		c.CloseWrite() // FIN from the pod
		// The other direction keeps flowing until the client's FIN.
		b, _ := io.ReadAll(c)
		gotFromClient <- string(b)
	})
	p := newProxy(t, backend.addr())
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))

	b, err := io.ReadAll(c) // ends with a clean EOF, not a reset
	require.NoError(t, err)
	assert.Equal(t, "bye", string(b))

	_, err = io.WriteString(c, "still here")
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	select {
	case got := <-gotFromClient:
		assert.Equal(t, "still here", got)
	case <-time.After(5 * time.Second):
		t.Fatal("the pod never got the client's bytes and FIN")
	}
}

func TestProxyPropagatesPodReset(t *testing.T) {
	backend := newScriptServer(t, func(_ int, c *net.TCPConn) {
		buf := make([]byte, 1)
		c.Read(buf)
		reset(c)
	})
	p := newProxy(t, backend.addr())
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(c, "x")
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	assert.Eventually(t, func() bool { return p.Stats().Resets == 1 }, 5*time.Second, time.Millisecond)
}

func TestProxyPropagatesClientReset(t *testing.T) {
	podErr := make(chan error, 1)
	backend := newScriptServer(t, func(_ int, c *net.TCPConn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hello")
		_, err := io.ReadAll(c)
		podErr <- err
	})
	p := newProxy(t, backend.addr())
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 5))
	require.NoError(t, err)
	reset(c.(*net.TCPConn))
	select {
	case err := <-podErr:
		assert.ErrorIs(t, err, syscall.ECONNRESET)
	case <-time.After(5 * time.Second):
		t.Fatal("the pod never saw the client's reset")
	}
}

func TestProxyRefusedDialResetsClient(t *testing.T) {
	p := newProxy(t, closedPortAddr(t))
	c, err := net.Dial("tcp", p.Addr())
	if err == nil {
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = c.Read(make([]byte, 1))
	}
	assert.ErrorIs(t, err, syscall.ECONNRESET, "a refused dial must reach the client as a reset, not an EOF")
	assert.Equal(t, int64(1), p.Stats().DialFailed)

	// The raw HTTP/1 client counts it as refused: the request never
	// reached a server.
	client := &rollout.HTTP1Client{Addr: p.Addr(), Timeout: 5 * time.Second}
	defer client.Close()
	_, err = client.Get(t.Context())
	assert.Equal(t, record.KindRefused, kindOf(t, err))
}

func TestProxyNoEndpointResets(t *testing.T) {
	p := newProxy(t)
	client := &rollout.HTTP1Client{Addr: p.Addr(), Timeout: 5 * time.Second}
	defer client.Close()
	_, err := client.Get(t.Context())
	assert.Equal(t, record.KindRefused, kindOf(t, err))
	assert.Equal(t, int64(1), p.Stats().NoEndpoint)
}

func TestProxyCloseEndsOpenConnections(t *testing.T) {
	backend := nameServer(t, "a")
	p, err := rollout.NewProxy("127.0.0.1:0")
	require.NoError(t, err)
	p.AddEndpoint(backend.addr())
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	assert.Equal(t, "a: x", ask(t, c, br, "x"))
	require.NoError(t, p.Close())
	_, err = br.ReadString('\n')
	assert.Error(t, err)
}

func TestProxyRefusesNonLoopback(t *testing.T) {
	_, err := rollout.NewProxy("0.0.0.0:0")
	assert.ErrorContains(t, err, "loopback")
	_, err = rollout.NewProxy("localhost:0")
	assert.ErrorContains(t, err, "loopback")
}
