package httpserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoLine answers one line of the upgraded protocol with itself, and
// closes the connection.
func echoLine(t *testing.T, c net.Conn, rw *bufio.ReadWriter) {
	defer c.Close()
	line, err := rw.ReadString('\n')
	if err != nil {
		t.Error(err)
		return
	}
	rw.WriteString(line)
	if err := rw.Flush(); err != nil {
		t.Error(err)
	}
}

// A 101 Switching Protocols is not a final response: during the drain
// delay it goes out as its handler wrote it, with "Connection: Upgrade",
// which RFC 6455 clients require, and the hijacked connection is the
// handler's. coder/websocket writes the 101 through the ResponseWriter and
// then hijacks; gorilla/websocket hijacks and writes its own.
func TestUpgradesDuringTheDelayKeepConnectionUpgrade(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/through-writer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "echo")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		echoLine(t, c, rw)
	})
	mux.HandleFunc("/after-hijack", func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		if err := rw.Flush(); err != nil {
			t.Error(err)
		}
		echoLine(t, c, rw)
	})
	for _, path := range []string{"/through-writer", "/after-hijack"} {
		t.Run(path[1:], func(t *testing.T) {
			p := start(t, config{delay: time.Second, handler: mux, ready: true})
			p.sigterm(t)

			c := dialRaw(t, p.addr)
			c.SetDeadline(time.Now().Add(waitTimeout))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n", path)
			resp, err := http.ReadResponse(c.r, nil)
			require.NoError(t, err)
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, []string{"Upgrade"}, resp.Header["Connection"], "the 101 says Connection: Upgrade, and nothing else")
			assert.False(t, resp.Close)

			_, err = io.WriteString(c, "ping\n")
			require.NoError(t, err)
			line, err := c.r.ReadString('\n')
			require.NoError(t, err, "the upgraded connection works")
			assert.Equal(t, "ping\n", line)
			assert.True(t, c.closedByPeer(), "closed by its handler")

			p.endDelay(t, time.Second)
			require.NoError(t, p.wait(t))
		})
	}
}
