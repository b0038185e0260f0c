package rollout

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// The least of RFC 6455 that the websocket load and the built-in pods
// need, written here because the root module depends on nothing but the
// standard library: the opening handshake, frames (masked from the client,
// unmasked from the server), text, close, ping and pong, and messages in
// fragments. No extensions, no subprotocols.

// Websocket opcodes (RFC 6455, section 5.2).
const (
	wsContinuation byte = 0x0
	wsText         byte = 0x1
	wsBinary       byte = 0x2
	wsClose        byte = 0x8
	wsPing         byte = 0x9
	wsPong         byte = 0xa
)

// Websocket close codes (RFC 6455, section 7.4, and the IANA registry).
const (
	wsNormal         = 1000
	wsGoingAway      = 1001
	wsNoStatus       = 1005 // a close frame without a code; never sent
	wsServiceRestart = 1012
)

// wsGUID is the key suffix of Sec-WebSocket-Accept (RFC 6455, section 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// maxWSMessage bounds a message, so a misbehaving peer cannot make the
// load or a pod allocate without limit.
const maxWSMessage = 1 << 20

// wsAccept returns the Sec-WebSocket-Accept of a Sec-WebSocket-Key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// errWSProtocol is a peer breaking RFC 6455.
var errWSProtocol = errors.New("websocket protocol error")

// wsConn is one websocket connection, either side.
type wsConn struct {
	conn   net.Conn
	br     *bufio.Reader
	client bool // masks the frames it writes, and expects unmasked ones

	wmu  sync.Mutex // one frame at a time
	wbuf []byte
}

// writeFrame writes one final frame.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], 0x80|op)
	mask := byte(0)
	if c.client {
		mask = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mask|byte(n))
	case n <= 0xffff:
		b = append(b, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if c.client {
		var key [4]byte
		rand.Read(key[:])
		b = append(b, key[:]...)
		start := len(b)
		b = append(b, payload...)
		for i := range payload {
			b[start+i] ^= key[i%4]
		}
	} else {
		b = append(b, payload...)
	}
	c.wbuf = b
	_, err := c.conn.Write(b)
	return err
}

// writeClose writes a close frame with code and reason.
func (c *wsConn) writeClose(code int, reason string) error {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return c.writeFrame(wsClose, append(p, reason...))
}

// readFrame reads one frame and unmasks its payload.
func (c *wsConn) readFrame() (fin bool, op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return false, 0, nil, err
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0f
	if h[0]&0x70 != 0 {
		return false, 0, nil, fmt.Errorf("%w: reserved bits set without an extension", errWSProtocol)
	}
	masked := h[1]&0x80 != 0
	if masked == c.client {
		return false, 0, nil, fmt.Errorf("%w: a frame from the %s must be %smasked", errWSProtocol,
			map[bool]string{true: "server", false: "client"}[c.client], map[bool]string{true: "un", false: ""}[c.client])
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return false, 0, nil, noEOF(err)
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return false, 0, nil, noEOF(err)
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if op >= wsClose && (n > 125 || !fin) {
		return false, 0, nil, fmt.Errorf("%w: control frame of %d bytes or fragmented", errWSProtocol, n)
	}
	if n > maxWSMessage {
		return false, 0, nil, fmt.Errorf("%w: frame of %d bytes", errWSProtocol, n)
	}
	var key [4]byte
	if masked {
		if _, err := io.ReadFull(c.br, key[:]); err != nil {
			return false, 0, nil, noEOF(err)
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return false, 0, nil, noEOF(err)
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return fin, op, payload, nil
}

// noEOF turns an EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readMessage reads the next text or binary message, joining its
// fragments, or a close frame (op wsClose, its payload as sent). It
// answers pings with pongs and skips pongs.
func (c *wsConn) readMessage() (op byte, msg []byte, err error) {
	for {
		fin, fop, p, err := c.readFrame()
		if err != nil {
			return 0, nil, err
		}
		switch fop {
		case wsPing:
			if err := c.writeFrame(wsPong, p); err != nil {
				return 0, nil, err
			}
			continue
		case wsPong:
			continue
		case wsClose:
			return wsClose, p, nil
		case wsText, wsBinary:
			if op != 0 {
				return 0, nil, fmt.Errorf("%w: a new message inside a fragmented one", errWSProtocol)
			}
			op = fop
		case wsContinuation:
			if op == 0 {
				return 0, nil, fmt.Errorf("%w: a continuation frame without a message", errWSProtocol)
			}
		default:
			return 0, nil, fmt.Errorf("%w: opcode %#x", errWSProtocol, fop)
		}
		if len(msg)+len(p) > maxWSMessage {
			return 0, nil, fmt.Errorf("%w: message longer than %d bytes", errWSProtocol, maxWSMessage)
		}
		msg = append(msg, p...)
		if fin {
			return op, msg, nil
		}
	}
}

// closeCode returns the code of a close frame's payload, wsNoStatus if it
// has none, and its reason.
func closeCode(p []byte) (int, string) {
	if len(p) < 2 {
		return wsNoStatus, ""
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:])
}

// hasToken reports whether any of a header's values lists token, as
// Connection and Upgrade do, case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// acceptWebSocket completes a websocket's opening handshake on the server
// side: it checks the request, hijacks the connection and writes the 101
// response itself, as gorilla/websocket does. It answers a bad request
// with 400 and returns an error.
func acceptWebSocket(w http.ResponseWriter, r *http.Request) (*wsConn, error) {
	key := r.Header.Get("Sec-WebSocket-Key")
	switch {
	case r.Method != http.MethodGet, !hasToken(r.Header["Upgrade"], "websocket"),
		!hasToken(r.Header["Connection"], "upgrade"), key == "":
		http.Error(w, "a websocket needs GET with Upgrade: websocket, Connection: Upgrade and Sec-WebSocket-Key", http.StatusBadRequest)
		return nil, errors.New("not a websocket handshake")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "unsupported websocket version", http.StatusUpgradeRequired)
		return nil, errors.New("unsupported websocket version")
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot hijack the connection", http.StatusInternalServerError)
		return nil, err
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept(key) + "\r\n\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		conn.Close()
		return nil, err
	}
	return &wsConn{conn: conn, br: rw.Reader}, nil
}
