package httpserver

// The HTTP/2 connections as the adapter follows them, frame by frame: a
// workaround for how net/http's HTTP/2 server ends a connection. Its own
// GOAWAY, from Shutdown or for a response carrying "Connection: close",
// names the last stream it has read, so it refuses a stream the client
// opened a moment before receiving it, and the server then waits a second
// after the last stream before it closes the connection (golang/go#18701),
// while Go's client waits for the server to close an idle one. And
// net/http sends an idle connection a GOAWAY only from Shutdown, which
// would also drop the HTTP/1 requests read after it begins
// (golang/go#75591): it cannot be called at the signal. The adapter writes its own GOAWAY, PING and final
// GOAWAY between net/http's frames (see h2Conn): an HTTP/2 connection ends
// one round trip after its last response, and no stream its client could
// not know to retry is refused. How and why: docs/http.md.

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The TLSNextProto keys of net/http's HTTP/2 server: "h2" for HTTP/2 over
// TLS, and the key net/http uses to hand off an h2c connection, whose
// function serves an unencrypted net.Conn carried inside a *tls.Conn.
const (
	nextProtoH2          = "h2"
	nextProtoUnencrypted = "unencrypted_http2"
)

// wrapHTTP2 makes net/http's HTTP/2 server read and write every HTTP/2
// connection through an h2Conn, whose frames the adapter follows in
// plaintext, over TLS too. net/http fills TLSNextProto when Serve starts;
// the listener calls wrapHTTP2 from its first Accept, in Serve's goroutine,
// before any connection is served. It needs both entries, which net/http
// and golang.org/x/net/http2's ConfigureServer both set, and serve alike;
// with an HTTP/2 server that lacks the unencrypted one, connections are
// left as they are.
func (s *Server) wrapHTTP2() {
	next := s.srv.TLSNextProto
	serve, ok := next[nextProtoUnencrypted]
	if !ok || next[nextProtoH2] == nil {
		return
	}
	next[nextProtoUnencrypted] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		u, ok := tc.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		c := (*conn)(nil)
		if ok {
			c, _ = u.UnencryptedNetConn().(*conn)
		}
		if c == nil {
			serve(hs, tc, h) // not one of ours: net/http reports it
			return
		}
		serve(hs, tls.Client(plaintext{s.newH2Conn(c, c, nil)}, nil), h)
	}
	next[nextProtoH2] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		c := connOf(tc)
		if c == nil {
			tc.Close()
			return
		}
		// net/http's unencrypted entry serves any net.Conn; one with a
		// ConnectionState method is served as TLS, with the same checks of
		// the TLS version and cipher suite, and the same r.TLS, as when
		// net/http serves the *tls.Conn itself.
		serve(hs, tls.Client(plaintext{h2TLSConn{s.newH2Conn(c, tc, tc)}}, nil), h)
	}
}

// plaintext carries an HTTP/2 connection to net/http's unencrypted entry,
// which takes a *tls.Conn for historical reasons and unwraps it.
type plaintext struct {
	net.Conn // the h2Conn; tls.Client never uses it
}

func (p plaintext) UnencryptedNetConn() net.Conn { return p.Conn }

// h2TLSConn is an h2Conn over TLS: net/http's HTTP/2 server takes its TLS
// state from ConnectionState.
type h2TLSConn struct {
	*h2Conn
}

func (c h2TLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// h2Preface opens every HTTP/2 connection.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// pingData is the payload of the adapter's PING, told from any PING of
// net/http's by its content.
var pingData = [8]byte{'l', 'a', 'm', 'e', 'd', 'u', 'c', 'k'}

// goAwayThenPing is a GOAWAY, NO_ERROR, whose last stream ID is the largest
// there is, followed by a PING. The GOAWAY asks the client to open no more
// streams on the connection and refuses none, not even one already on its
// way, as RFC 9113 (section 6.8) recommends to begin a graceful shutdown;
// the PING's acknowledgement, which the client sends after processing the
// GOAWAY, tells when no stream can be on its way any more.
var goAwayThenPing = append(
	[]byte{0, 0, 8, frameGoAway, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0},
	append([]byte{0, 0, 8, framePing, 0, 0, 0, 0, 0}, pingData[:]...)...)

// HTTP/2 frame types and flags (RFC 9113, section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	framePing         = 0x6
	frameGoAway       = 0x7
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
)

// ackWait bounds how long, once the drain has begun and the GOAWAY is out,
// the adapter waits for a client to acknowledge its PING before it ends a
// connection with no stream open anyway: a client that does not read its
// idle connections, or does not answer PINGs, would otherwise hold the
// drain until the deadline. net/http waits as long after its own GOAWAY
// (golang/go#18701). A GOAWAY sent at the signal has had the whole delay.
const ackWait = time.Second

// lingerWait bounds how long a connection the adapter has half-closed
// waits for its client to close it in turn. Reading until then, rather than
// closing at once, keeps the kernel from answering the client's last
// frames with a TCP reset, which could destroy the end of a response still
// on its way (RFC 9112, section 9.6). The drain waits for it only while
// bytes are on their way (see endLocked).
const lingerWait = time.Second

// h2Conn is an HTTP/2 connection as net/http's HTTP/2 server reads and
// writes it: in plaintext, above TLS if any. It follows the frames both
// ways, to know which streams are open, and adds its own frames between
// two of the server's: a graceful GOAWAY followed by a PING once the
// client should leave, and, once the client has acknowledged the PING and
// no stream is open, a final GOAWAY naming the last stream it opened. It
// then half-closes the connection and reads until the client closes it.
//
// net/http's own GOAWAY, which it sends for a response carrying
// "Connection: close" and from Shutdown, names the last stream it has
// read, so a stream the client opened a moment before receiving it is
// refused; net/http then waits a second after the last stream before it
// closes the connection (golang/go#18701), and Go's client waits for the
// server to close it. The adapter's sequence refuses no stream the client
// could not know to retry, and ends the connection one round trip after
// its last response.
type h2Conn struct {
	net.Conn // the *conn itself for h2c, the *tls.Conn over it for TLS
	c        *conn
	tc       *tls.Conn // nil for h2c

	// preface is the part of the client's preface not read yet: net/http
	// reads it itself on h2c connections, and the adapter on TLS ones.
	// Only the reads touch it.
	preface int
	in      frameParser // the client's frames; only the reads touch it

	wmu sync.Mutex
	// Guarded by wmu.
	out   frameParser // the server's frames
	wrote bool        // the server has begun its output, which must open with its SETTINGS
	// endOnHeaders is the stream whose header block, being written, ends
	// it (END_STREAM without END_HEADERS); 0 if none.
	endOnHeaders uint32

	// want holds the frames asked for and not written yet (wantGoAway,
	// wantFinal); written by whoever holds wmu at a frame boundary.
	want atomic.Uint32

	smu sync.Mutex
	// Guarded by smu: the streams the client opened that the server has
	// not ended, and what the connection's shutdown has reached.
	open        map[uint32]struct{}
	lastOpened  uint32
	serverLast  uint32 // net/http's GOAWAY's last stream ID, if it sent one
	serverGone  bool   // net/http sent a GOAWAY
	goAwaySent  bool
	goAwayAt    time.Time
	acked       bool // the client acknowledged the PING that followed the GOAWAY
	ackOptional bool // the drain has waited ackWait for the acknowledgement
	final       bool // the final GOAWAY is out: nothing more is served
}

const (
	wantGoAway uint32 = 1 << iota
	wantFinal
)

func (s *Server) newH2Conn(c *conn, nc net.Conn, tc *tls.Conn) *h2Conn {
	h := &h2Conn{Conn: nc, c: c, tc: tc, open: make(map[uint32]struct{})}
	if tc != nil {
		h.preface = len(h2Preface)
	}
	h.ackOptional = s.acksOptional.Load()
	s.mu.Lock()
	c.h2 = true
	c.h2c = h
	s.mu.Unlock()
	// A connection opened during the delay is asked to leave after its
	// first response (see writer.commit), so that a client does not
	// reconnect in a loop; one opened after the drain began, at once.
	if s.draining.Load() {
		h.goAway()
	}
	return h
}

// goAway asks the client to open no more streams on the connection; once
// it has processed the GOAWAY and its streams have ended, the connection
// ends. It returns at once: the frames go out at the next frame boundary
// of the server's output, right away if it is between two frames, and
// never before the server's first frame, which the protocol requires to be
// its SETTINGS.
func (h *h2Conn) goAway() {
	h.smu.Lock()
	sent := h.goAwaySent
	if !sent {
		h.goAwaySent, h.goAwayAt = true, time.Now()
	}
	h.smu.Unlock()
	if sent {
		return
	}
	h.want.Or(wantGoAway)
	h.kick()
}

// waitedForAck reports whether the GOAWAY went out ackWait ago or more.
func (h *h2Conn) waitedForAck() bool {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.goAwaySent && time.Since(h.goAwayAt) >= ackWait
}

// stopWaitingForAck lets the connection end without the PING's
// acknowledgement (see ackWait).
func (h *h2Conn) stopWaitingForAck() {
	h.smu.Lock()
	h.ackOptional = true
	end := h.endableLocked()
	h.smu.Unlock()
	if end {
		h.want.Or(wantFinal)
		h.kick()
	}
}

// endableLocked reports whether the connection can end: the client has
// been asked to leave and has processed it, and no stream is open.
func (h *h2Conn) endableLocked() bool {
	return h.goAwaySent && (h.acked || h.ackOptional) && len(h.open) == 0 && !h.final
}

// kick writes the frames wanted if no write is in progress; otherwise the
// write in progress does, at its next frame boundary.
func (h *h2Conn) kick() {
	for h.want.Load() != 0 && h.wmu.TryLock() {
		wrote := h.writeWantedLocked()
		h.wmu.Unlock()
		if !wrote {
			return // the next write of the server's writes them
		}
	}
}

// writeWantedLocked writes the frames wanted, if the server's output is at
// a frame boundary, and reports whether it was.
func (h *h2Conn) writeWantedLocked() bool {
	if !h.wrote || !h.out.boundary() {
		return false
	}
	want := h.want.Swap(0)
	if want&wantGoAway != 0 {
		// A failed write means a broken connection, which the server
		// sees too: there is nothing to retry.
		h.Conn.Write(goAwayThenPing) //nolint:errcheck
	}
	if want&wantFinal != 0 {
		h.endLocked()
	}
	return true
}

// endLocked sends the final GOAWAY, unless a stream opened meanwhile, and
// half-closes the connection.
func (h *h2Conn) endLocked() {
	h.smu.Lock()
	end := h.endableLocked()
	if end {
		h.final = true
	}
	last := h.lastOpened
	h.smu.Unlock()
	if !end {
		return
	}
	// If the client has acknowledged every byte sent so far and sent
	// nothing unread, nothing is on its way either way: the connection
	// need not wait for the client's close (see lingerWait), which a
	// client that does not read its idle connections would never send.
	pending, known := unsent(h.c.Conn)
	quiet := known && pending == 0 && unread(h.c.Conn) == 0
	// The last stream ID tells the client that any stream it opened after
	// those was not, and will not be, processed: it retries it on a new
	// connection. From now on the reads hand no frame to net/http.
	var frame [17]byte
	copy(frame[:], []byte{0, 0, 8, frameGoAway, 0, 0, 0, 0, 0})
	binary.BigEndian.PutUint32(frame[9:], last)
	h.Conn.Write(frame[:]) //nolint:errcheck // as in writeWantedLocked
	if h.tc != nil {
		h.tc.CloseWrite() //nolint:errcheck // the TCP half-close follows anyway
	}
	if quiet {
		h.c.CloseWrite() //nolint:errcheck // as in writeWantedLocked
	} else {
		h.c.closeWriteTCP() //nolint:errcheck // as in writeWantedLocked
	}
	// Wait for the client's close, but not forever.
	h.Conn.SetReadDeadline(time.Now().Add(lingerWait)) //nolint:errcheck
}

// Write writes the server's output, following its frames, and adds the
// frames wanted at the first frame boundary.
func (h *h2Conn) Write(p []byte) (int, error) {
	h.wmu.Lock()
	n, err := h.writeLocked(p)
	h.wmu.Unlock()
	h.kick() // what was asked for while this write held the lock
	return n, err
}

func (h *h2Conn) writeLocked(p []byte) (int, error) {
	written := 0
	for {
		if h.want.Load() != 0 {
			h.writeWantedLocked()
		}
		h.smu.Lock()
		final := h.final
		h.smu.Unlock()
		if final {
			// The client has been told the connection is over and will
			// read nothing more: what net/http still writes (settings or
			// window updates) goes nowhere.
			return written + len(p), nil
		}
		if len(p) == 0 {
			return written, nil
		}
		n := len(p)
		if h.want.Load() != 0 {
			n = 0
		}
		n = h.followOut(p, n)
		m, err := h.Conn.Write(p[:n])
		written += m
		h.wrote = true
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
}

// followOut follows the server's frames in p, through at least min bytes
// and at most to the end of the frame after them, and returns how many
// bytes it followed: frames wanted are written at the boundary it stops
// at.
func (h *h2Conn) followOut(p []byte, min int) int {
	n := 0
	for n < len(p) {
		k, ended := h.out.feed(p[n:])
		n += k
		if ended {
			h.outFrame()
			if n >= min {
				break
			}
		}
	}
	return n
}

// outFrame records what a frame of the server's does to the streams.
func (h *h2Conn) outFrame() {
	f := &h.out
	id := f.stream()
	h.smu.Lock()
	defer h.smu.Unlock()
	switch f.typ() {
	case frameHeaders:
		if f.flags()&flagEndStream == 0 {
			return
		}
		if f.flags()&flagEndHeaders == 0 {
			h.endOnHeaders = id // the stream ends with its header block
			return
		}
		delete(h.open, id)
	case frameContinuation:
		if id != h.endOnHeaders || f.flags()&flagEndHeaders == 0 {
			return
		}
		h.endOnHeaders = 0
		delete(h.open, id)
	case frameData:
		if f.flags()&flagEndStream == 0 {
			return
		}
		delete(h.open, id)
	case frameRSTStream:
		delete(h.open, id)
	case frameGoAway:
		// net/http ignores the streams above its GOAWAY's last stream ID.
		last := binary.BigEndian.Uint32(f.payload()) & 0x7fffffff
		h.serverGone, h.serverLast = true, last
		for id := range h.open {
			if id > last {
				delete(h.open, id)
			}
		}
	default:
		return
	}
	if h.endableLocked() {
		h.want.Or(wantFinal)
	}
}

// errBadPreface ends a TLS connection whose client did not open HTTP/2 as
// the protocol requires.
var errBadPreface = errors.New("httpserver: bad HTTP/2 client preface")

// Read reads the client's frames for net/http, following them. Once the
// final GOAWAY is out, it hands net/http nothing more: it reads until the
// client closes the connection, and then reports the end of it.
func (h *h2Conn) Read(p []byte) (int, error) {
	if h.preface > 0 {
		var buf [len(h2Preface)]byte
		if _, err := io.ReadFull(h.Conn, buf[:h.preface]); err != nil {
			return 0, err
		}
		if !bytes.Equal(buf[:], []byte(h2Preface)) {
			return 0, errBadPreface
		}
		h.preface = 0
	}
	n, err := h.Conn.Read(p)
	if n > 0 && !h.followIn(p[:n]) {
		return 0, h.awaitClose(p)
	}
	return n, err
}

// awaitClose reads, and drops, what the client still sends until it
// closes the connection or lingerWait passes.
func (h *h2Conn) awaitClose(buf []byte) error {
	for {
		if _, err := h.Conn.Read(buf); err != nil {
			return io.EOF
		}
	}
}

// followIn follows the client's frames in p and reports whether net/http
// may have them: not once the final GOAWAY is out.
func (h *h2Conn) followIn(p []byte) bool {
	end := false
	h.smu.Lock()
	for n := 0; n < len(p) && !h.final; {
		k, ended := h.in.feed(p[n:])
		n += k
		if !ended {
			continue
		}
		f := &h.in
		switch f.typ() {
		case frameHeaders:
			id := f.stream()
			if id%2 == 1 && id > h.lastOpened && !(h.serverGone && id > h.serverLast) {
				h.lastOpened = id
				h.open[id] = struct{}{}
			}
		case frameRSTStream:
			delete(h.open, f.stream())
		case framePing:
			if f.flags()&flagAck != 0 && h.goAwaySent && [8]byte(f.payload()) == pingData {
				h.acked = true
			}
		default:
			continue
		}
		end = h.endableLocked()
	}
	final := h.final
	h.smu.Unlock()
	if end {
		h.want.Or(wantFinal)
		h.kick()
	}
	return !final
}

// SetReadDeadline passes net/http's deadline on, unless the connection is
// waiting for its client to close it.
func (h *h2Conn) SetReadDeadline(t time.Time) error {
	h.smu.Lock()
	final := h.final
	h.smu.Unlock()
	if final {
		return nil
	}
	return h.Conn.SetReadDeadline(t)
}

// frameParser follows a stream of HTTP/2 frames: each is a 9-byte header,
// whose first three bytes give the length of the payload that follows.
type frameParser struct {
	hdr  [9]byte
	hdrN int     // bytes of the current frame's header seen so far
	left int     // bytes of the current frame's payload still to come
	pay  [8]byte // the payload's first bytes
	payN int
}

// boundary reports whether the next byte starts a frame.
func (f *frameParser) boundary() bool { return f.hdrN == 0 && f.left == 0 }

// feed follows p up to the end of the current frame, or to the end of p,
// and returns how many bytes it followed and whether the frame ended; its
// header and first payload bytes can then be read until the next feed.
func (f *frameParser) feed(p []byte) (int, bool) {
	n := 0
	if f.hdrN < len(f.hdr) {
		if f.hdrN == 0 {
			f.payN = 0
		}
		k := copy(f.hdr[f.hdrN:], p)
		f.hdrN += k
		n += k
		if f.hdrN < len(f.hdr) {
			return n, false
		}
		f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
	}
	k := min(f.left, len(p)-n)
	if f.payN < len(f.pay) {
		f.payN += copy(f.pay[f.payN:], p[n:n+k])
	}
	f.left -= k
	n += k
	if f.left > 0 {
		return n, false
	}
	f.hdrN = 0
	return n, true
}

func (f *frameParser) typ() byte      { return f.hdr[3] }
func (f *frameParser) flags() byte    { return f.hdr[4] }
func (f *frameParser) stream() uint32 { return binary.BigEndian.Uint32(f.hdr[5:]) & 0x7fffffff }

// payload returns the payload's first 8 bytes, zeros past its end.
func (f *frameParser) payload() []byte {
	clear(f.pay[f.payN:])
	return f.pay[:]
}
