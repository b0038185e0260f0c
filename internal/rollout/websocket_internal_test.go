package rollout

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The accept key of RFC 6455's own example (section 1.3).
func TestWSAcceptKey(t *testing.T) {
	assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", wsAccept("dGhlIHNhbXBsZSBub25jZQ=="))
}

// wsPair returns the two ends of a websocket on an in-memory connection.
func wsPair(t *testing.T) (client, server *wsConn) {
	t.Helper()
	c, s := net.Pipe()
	t.Cleanup(func() { c.Close(); s.Close() })
	return &wsConn{conn: c, br: bufio.NewReader(c), client: true}, &wsConn{conn: s, br: bufio.NewReader(s)}
}

// Frames of every length encoding go both ways, masked from the client
// only, and arrive as sent.
func TestWSFramesRoundTrip(t *testing.T) {
	client, server := wsPair(t)
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		msg := bytes.Repeat([]byte("x"), n)
		for _, dir := range []struct{ from, to *wsConn }{{client, server}, {server, client}} {
			go dir.from.writeFrame(wsText, msg)
			op, got, err := dir.to.readMessage()
			require.NoError(t, err, "%d bytes", n)
			assert.Equal(t, wsText, op)
			assert.Equal(t, string(msg), string(got), "%d bytes", n)
		}
	}
}

// A client frame is masked on the wire: the payload does not appear as
// written, and the mask bit is set.
func TestWSClientFramesAreMasked(t *testing.T) {
	var wire bytes.Buffer
	c := &wsConn{conn: writerConn{&wire}, client: true}
	require.NoError(t, c.writeFrame(wsText, []byte("hello websocket")))
	b := wire.Bytes()
	assert.Equal(t, byte(0x81), b[0], "FIN and text")
	assert.Equal(t, byte(0x80|15), b[1], "masked, 15 bytes")
	assert.NotContains(t, string(b), "hello websocket")

	wire.Reset()
	s := &wsConn{conn: writerConn{&wire}}
	require.NoError(t, s.writeFrame(wsText, []byte("hi")))
	assert.Equal(t, []byte{0x81, 2, 'h', 'i'}, wire.Bytes(), "a server frame is not masked")
}

// A ping inside a fragmented message is answered with a pong, and the
// fragments join; a close frame ends the reading with its code.
func TestWSFragmentsPingAndClose(t *testing.T) {
	client, server := wsPair(t)
	go func() {
		// Fragments written by hand: "ab", then a ping, then "c".
		server.conn.Write([]byte{0x01, 2, 'a', 'b', 0x89, 1, 'p', 0x80, 1, 'c'})
		server.writeClose(wsServiceRestart, "service restart")
	}()
	pong := make(chan string, 1)
	go func() {
		_, op, p, err := server.readFrame()
		if err == nil && op == wsPong {
			pong <- string(p)
		}
		close(pong)
	}()
	op, msg, err := client.readMessage()
	require.NoError(t, err)
	assert.Equal(t, wsText, op)
	assert.Equal(t, "abc", string(msg))
	op, msg, err = client.readMessage()
	require.NoError(t, err)
	assert.Equal(t, wsClose, op)
	code, reason := closeCode(msg)
	assert.Equal(t, wsServiceRestart, code)
	assert.Equal(t, "service restart", reason)
	assert.Equal(t, "p", <-pong, "the ping was answered with its payload")
}

// A server frame that is masked, a client frame that is not, and a frame
// cut short are errors of their own.
func TestWSRejectsBadFrames(t *testing.T) {
	read := func(client bool, wire []byte) error {
		c := &wsConn{br: bufio.NewReader(bytes.NewReader(wire)), client: client}
		_, _, err := c.readMessage()
		return err
	}
	assert.ErrorIs(t, read(true, []byte{0x81, 0x81, 1, 2, 3, 4, 'x'}), errWSProtocol, "masked from the server")
	assert.ErrorIs(t, read(false, []byte{0x81, 1, 'x'}), errWSProtocol, "unmasked from the client")
	assert.ErrorIs(t, read(true, []byte{0x81, 5, 'x'}), io.ErrUnexpectedEOF, "cut short")
	assert.ErrorIs(t, read(true, nil), io.EOF, "no frame at all: the connection ended")
	assert.ErrorIs(t, read(true, []byte{0x80, 1, 'x'}), errWSProtocol, "a continuation without a message")
}

func TestHasToken(t *testing.T) {
	assert.True(t, hasToken([]string{"keep-alive, Upgrade"}, "upgrade"))
	assert.False(t, hasToken([]string{"keep-alive"}, "upgrade"))
	assert.False(t, hasToken(strings.Fields("upgrades"), "upgrade"))
}

// writerConn is a net.Conn that only writes, to a buffer.
type writerConn struct{ w io.Writer }

func (c writerConn) Write(p []byte) (int, error)    { return c.w.Write(p) }
func (c writerConn) Read([]byte) (int, error)       { return 0, io.EOF }
func (writerConn) Close() error                     { return nil }
func (writerConn) LocalAddr() net.Addr              { return nil }
func (writerConn) RemoteAddr() net.Addr             { return nil }
func (writerConn) SetDeadline(_ time.Time) error    { return nil }
func (writerConn) SetReadDeadline(time.Time) error  { return nil }
func (writerConn) SetWriteDeadline(time.Time) error { return nil }
