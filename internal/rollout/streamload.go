package rollout

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// The websocket and sse loads: each client holds one subscription, a
// websocket or an event stream, through the load balancer to a pod, and
// receives numbered messages. When the pod ends the subscription the way
// that means "reconnect elsewhere" (a close frame with 1012 or 1001; the end
// of an event stream, after its retry field), the client reconnects
// through the load balancer and resumes after the last message it got; any
// other end is a failure, and so is a gap in the numbers.

// errStopping ends a subscription because the load is stopping.
var errStopping = errors.New("the load is stopping")

// streamClient is one client of a stream load.
type streamClient struct {
	l  *Load
	ln *lane
	// next is the number of the next message expected: the resume point.
	next int64
	// subscribed says an earlier subscription got through its handshake,
	// so that the next one is a reconnection.
	subscribed bool
	// retry is the event stream's reconnection time, as its last retry
	// field set it.
	retry time.Duration
}

// startStreams starts the clients of the websocket or sse load, one per
// connection slot.
func (l *Load) startStreams() {
	// Subscriptions last until the load stops, not one request each: they
	// end when it does.
	ctx, cancel := context.WithCancel(l.ctx)
	go func() {
		defer cancel()
		select {
		case <-l.stop:
		case <-l.ctx.Done():
		}
	}()
	for range l.cfg.Conns {
		c := &streamClient{l: l, ln: &lane{}}
		l.lanes = append(l.lanes, c.ln)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c.run(ctx)
		}()
	}
}

// freshStream is the request of a Fresh client of a stream load: a
// subscription of its own until its first message.
func (l *Load) freshStream(ctx context.Context) (net.Addr, error) {
	c := &streamClient{l: l}
	return c.subscribe(ctx, true)
}

// run subscribes again and again until ctx ends, counting every message
// and every failure.
func (c *streamClient) run(ctx context.Context) {
	pause := time.NewTimer(0)
	defer pause.Stop()
	for ctx.Err() == nil {
		local, err := c.subscribe(ctx, false)
		if ctx.Err() != nil {
			return // aborted: not the server's failure
		}
		if err == nil {
			continue
		}
		pod := c.l.podOf(local)
		c.l.rec.failure(err, pod, time.Since(c.l.cfg.Epoch))
		pause.Reset(failurePause)
		select {
		case <-pause.C:
		case <-ctx.Done():
			return
		}
	}
}

// podOf returns the pod a connection from local went to, or -1.
func (l *Load) podOf(local net.Addr) int {
	if local == nil || l.cfg.Route == nil {
		return -1
	}
	return l.cfg.Route(local)
}

// subscribe holds one subscription from its handshake to its end, and
// returns the connection's local address (that of its dial, if that
// failed) and nil if the pod ended it to send its client elsewhere, or
// the failure. With once, it returns after the first message.
func (c *streamClient) subscribe(ctx context.Context, once bool) (net.Addr, error) {
	l := c.l
	timeout := l.cfg.Timeout
	dialed := time.Since(l.cfg.Epoch)
	conn, local, err := dial(ctx, net.Dialer{Timeout: timeout}, "tcp", l.cfg.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return local, ctx.Err()
		}
		return local, &Failure{Kind: classifyIOError(err, true, false), Err: fmt.Errorf("dial %s: %w", l.cfg.Addr, err)}
	}
	defer conn.Close()
	cr := &countReader{r: conn}
	// The pod is known once the load balancer has routed the connection,
	// which it may do after the dial has returned: at the handshake.
	s := &subscription{c: c, conn: conn, cr: cr, br: bufio.NewReaderSize(cr, 4<<10), pod: -1, once: once, dialed: dialed}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopped = true
		conn.SetDeadline(aLongTimeAgo)
	})
	defer stop()
	if l.cfg.Kind == LoadWebSocket {
		err = s.websocket()
	} else {
		err = s.events(ctx)
	}
	switch {
	case err == errStopping:
		return conn.LocalAddr(), nil
	case err == nil || ctx.Err() != nil:
		return conn.LocalAddr(), err
	}
	var f *Failure
	if !errors.As(err, &f) {
		f = &Failure{Kind: classifyIOError(err, !s.answered, cr.n > 0), Err: err}
		if !s.answered {
			f.Err = fmt.Errorf("handshake: %w", err)
		} else if l.cfg.Kind == LoadWebSocket && f.Kind == record.KindEOF {
			f.Err = fmt.Errorf("closed without a close frame (1006, abnormal closure): %w", err)
		} else if f.Kind == record.KindEOF {
			f.Err = fmt.Errorf("event stream cut without its final chunk: %w", err)
		}
	}
	return conn.LocalAddr(), f
}

// subscription is one connection of a streamClient.
type subscription struct {
	c    *streamClient
	conn net.Conn
	cr   *countReader
	br   *bufio.Reader
	pod  int
	once bool
	// dialed is when the client dialed: a reconnection counts from then,
	// when it reached the load balancer, and not from when a busy pod
	// got round to answering it.
	dialed time.Duration
	// answered says the pod answered the handshake: the subscription is
	// on.
	answered bool

	mu      sync.Mutex
	stopped bool // the load is stopping: the deadline stays in the past
}

// deadline bounds the next read, or the handshake: a pod that goes silent
// for the load's timeout fails the subscription.
func (s *subscription) deadline() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.conn.SetDeadline(time.Now().Add(s.c.l.cfg.Timeout))
	}
}

// target returns the request target with query parameter k=v added.
func (s *subscription) target(k, v string) string {
	p := s.c.l.cfg.Path
	sep := "?"
	if strings.Contains(p, "?") {
		sep = "&"
	}
	if k == "" {
		return p
	}
	return p + sep + k + "=" + v
}

// request writes a GET request with extra header lines and reads the
// response's head.
func (s *subscription) request(target, extra string) (*http.Response, error) {
	s.deadline()
	req := "GET " + target + " HTTP/1.1\r\nHost: " + s.c.l.cfg.Addr + "\r\nUser-Agent: lameduck-rollout\r\n" + extra + "\r\n"
	if _, err := io.WriteString(s.conn, req); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		if s.cr.n > 0 && !isTimeout(err) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
			return nil, &Failure{Kind: record.KindOther, Err: fmt.Errorf("malformed response: %w", err)}
		}
		return nil, err
	}
	return resp, nil
}

// statusFailure classifies a response that is not the one asked for.
func statusFailure(resp *http.Response, want string) error {
	kind := record.KindOther
	if resp.StatusCode >= 500 {
		kind = record.Kind5xx
	}
	return &Failure{Kind: kind, Err: fmt.Errorf("handshake: status %d, want %s", resp.StatusCode, want)}
}

// opened records the subscription's handshake: a reconnection, unless it
// is the client's first.
func (s *subscription) opened() {
	s.answered = true
	s.pod = s.c.l.podOf(s.conn.LocalAddr())
	if s.c.subscribed && !s.once {
		s.c.l.rec.reconnect(s.pod, s.dialed)
	}
	s.c.subscribed = true
}

// got counts message n, and returns a failure if messages were lost
// before it, or it came out of order. A Fresh client's subscription
// counts as one request, by its caller, and not its message.
func (s *subscription) got(n int64) error {
	c := s.c
	want := c.next
	c.next = n + 1
	if n != want {
		what := fmt.Sprintf("messages %d to %d lost", want, n-1)
		if n == want+1 {
			what = fmt.Sprintf("message %d lost", want)
		}
		if n < want {
			what = fmt.Sprintf("message %d again, after %d", n, want-1)
		}
		return &Failure{Kind: record.KindOther, Err: fmt.Errorf("%s: a gap in the numbers", what)}
	}
	if s.once {
		return nil
	}
	at := time.Since(c.l.cfg.Epoch)
	c.l.rec.success()
	if s.pod >= 0 {
		c.ln.add(int(at/TimelineBucket), s.pod)
	} else {
		c.ln.leftOut++
	}
	return nil
}

// left records that the pod ended the subscription to send its client
// elsewhere.
func (s *subscription) left() {
	s.c.l.rec.departure(s.pod, time.Since(s.c.l.cfg.Epoch))
}

// websocket holds a websocket subscription.
func (s *subscription) websocket() error {
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	target := s.target("", "")
	if s.c.subscribed || s.c.next > 0 {
		target = s.target("from", strconv.FormatInt(s.c.next, 10))
	}
	resp, err := s.request(target, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n")
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode != http.StatusSwitchingProtocols:
		return statusFailure(resp, "101 Switching Protocols")
	case !hasToken(resp.Header["Upgrade"], "websocket") || !hasToken(resp.Header["Connection"], "upgrade"):
		return &Failure{Kind: record.KindOther, Err: fmt.Errorf("handshake: 101 with Upgrade %q and Connection %q, want websocket and Upgrade (RFC 6455, section 4.1)",
			resp.Header.Get("Upgrade"), resp.Header.Get("Connection"))}
	case resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key):
		return &Failure{Kind: record.KindOther, Err: errors.New("handshake: wrong Sec-WebSocket-Accept")}
	}
	s.opened()
	ws := &wsConn{conn: s.conn, br: s.br, client: true}
	for {
		s.deadline()
		op, msg, err := ws.readMessage()
		if err != nil {
			if errors.Is(err, errWSProtocol) {
				return &Failure{Kind: record.KindOther, Err: err}
			}
			return err
		}
		if op == wsClose {
			code, reason := closeCode(msg)
			// Answer with the same code, as RFC 6455 (section 5.5.1) asks;
			// the pod closes the connection.
			ws.writeClose(code, "")
			if code == wsServiceRestart || code == wsGoingAway {
				s.left()
				return nil
			}
			return &Failure{Kind: record.KindOther, Err: fmt.Errorf("closed with %d %q, which does not ask the client to reconnect (1012 or 1001)", code, reason)}
		}
		n, err := strconv.ParseInt(string(msg), 10, 64)
		if err != nil {
			return &Failure{Kind: record.KindOther, Err: fmt.Errorf("message %.20q is not a number", msg)}
		}
		if err := s.got(n); err != nil {
			return err
		}
		if s.once {
			ws.writeClose(wsNormal, "")
			return errStopping
		}
	}
}

// events holds an event stream subscription.
func (s *subscription) events(ctx context.Context) error {
	extra := "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
	if s.c.subscribed || s.c.next > 0 {
		extra += "Last-Event-ID: " + strconv.FormatInt(s.c.next-1, 10) + "\r\n"
	}
	resp, err := s.request(s.target("", ""), extra)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusFailure(resp, "200")
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return &Failure{Kind: record.KindOther, Err: fmt.Errorf("Content-Type %q, want text/event-stream", ct)}
	}
	s.opened()
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	body := bufio.NewReader(resp.Body)
	var id, data []byte
	var hasID, retried bool
	for {
		s.deadline()
		line, err := body.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 && (chunked || retried) {
			// The pod ended the stream: reconnect after its retry.
			s.left()
			return s.wait(ctx, s.c.retry)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
				if !chunked {
					err = errors.New("the connection closed without a retry field, as a stream that is cut does")
				}
				return &Failure{Kind: record.KindEOF, Err: fmt.Errorf("event stream ended in the middle: %w", err)}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return &Failure{Kind: record.KindOther, Err: errors.New("event stream line too long")}
			}
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			// The end of an event.
			if data != nil || hasID {
				if !hasID {
					return &Failure{Kind: record.KindOther, Err: fmt.Errorf("event %.20q has no id", data)}
				}
				n, err := strconv.ParseInt(string(id), 10, 64)
				if err != nil || string(data) != string(id) {
					return &Failure{Kind: record.KindOther, Err: fmt.Errorf("event id %.20q with data %.20q, want a message number in both", id, data)}
				}
				if err := s.got(n); err != nil {
					return err
				}
				if s.once {
					return errStopping
				}
			}
			id, data, hasID = nil, nil, false
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			id, hasID = append(id[:0], value...), true
		case "data":
			data = append(data[:0], value...)
		case "retry":
			if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
				s.c.retry = time.Duration(ms) * time.Millisecond
				retried = true
			}
		}
	}
}

// wait waits d, as an EventSource waits its reconnection time, unless
// ctx ends first.
func (s *subscription) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	s.conn.Close()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
