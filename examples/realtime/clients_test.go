package main_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
)

// A session follows the sequence on one connection to the server at addr,
// resuming after last (0: from the start). It passes each number to got,
// and closes the connection itself once got returns false. It returns how
// the connection ended.
type session func(ctx context.Context, addr string, last int64, got func(int64) bool) ending

// An ending is how a session ended.
type ending struct {
	at time.Time // when the client saw it
	// byClient: the client closed, got had enough.
	byClient bool
	// code is a websocket's close code, or a gRPC stream's status code;
	// zero for an event stream.
	code int
	// rpc: a gRPC stream's ending, whose code is a status code.
	rpc bool
	// reason is a websocket's close reason, or a gRPC status' message.
	reason string
	// retry is the last "retry:" field of an event stream, in
	// milliseconds; -1 when there was none.
	retry int
	// err is what else went wrong: a failed handshake, a websocket that
	// ended without a close frame (1006), a stream cut short.
	err error
}

// left reports whether the server sent the client away as it should: a
// websocket with 1012 (service restart), an event stream with a clean end
// that sets a reconnection time, a gRPC stream with UNAVAILABLE.
func (e ending) left() bool {
	switch {
	case e.byClient || e.err != nil:
		return false
	case e.rpc:
		return e.code == int(codes.Unavailable)
	default:
		return e.code == int(websocket.StatusServiceRestart) || e.code == 0 && e.retry >= 0
	}
}

func (e ending) String() string {
	switch {
	case e.err != nil:
		return "error: " + e.err.Error()
	case e.byClient:
		return "closed by the client"
	case e.rpc:
		return fmt.Sprintf("status %v %q", codes.Code(e.code), e.reason)
	case e.code != 0:
		return fmt.Sprintf("close %d %q", e.code, e.reason)
	default:
		return fmt.Sprintf("end of stream, retry %d ms", e.retry)
	}
}

// coderSession is a websocket client of github.com/coder/websocket.
func coderSession(ctx context.Context, addr string, last int64, got func(int64) bool) ending {
	c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws?from=%d", addr, last+1), nil)
	if err != nil {
		return ending{at: time.Now(), err: fmt.Errorf("coder/websocket dial: %w", err)}
	}
	defer c.CloseNow()
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			e := ending{at: time.Now(), code: int(websocket.CloseStatus(err))}
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				e.reason = ce.Reason
			} else {
				e.err = fmt.Errorf("coder/websocket read: %w", err)
			}
			return e
		}
		n, err := strconv.ParseInt(string(msg), 10, 64)
		if err != nil {
			return ending{at: time.Now(), err: fmt.Errorf("message %q: %w", msg, err)}
		}
		if !got(n) {
			c.Close(websocket.StatusNormalClosure, "")
			return ending{at: time.Now(), byClient: true}
		}
	}
}

// gorillaSession is a websocket client of github.com/gorilla/websocket.
func gorillaSession(ctx context.Context, addr string, last int64, got func(int64) bool) ending {
	c, resp, err := gorilla.DefaultDialer.DialContext(ctx, fmt.Sprintf("ws://%s/ws?from=%d", addr, last+1), nil)
	if err != nil {
		return ending{at: time.Now(), err: fmt.Errorf("gorilla/websocket dial: %w", err)}
	}
	resp.Body.Close()
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			var ce *gorilla.CloseError
			if errors.As(err, &ce) && gorilla.IsCloseError(err, gorilla.CloseServiceRestart) {
				return ending{at: time.Now(), code: ce.Code, reason: ce.Text}
			}
			return ending{at: time.Now(), err: fmt.Errorf("gorilla/websocket read: %w", err)}
		}
		n, err := strconv.ParseInt(string(msg), 10, 64)
		if err != nil {
			return ending{at: time.Now(), err: fmt.Errorf("message %q: %w", msg, err)}
		}
		if !got(n) {
			c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return ending{at: time.Now(), byClient: true}
		}
	}
}

// sseSession is an event stream client, as EventSource is one: it asks
// for text/event-stream and resumes with Last-Event-ID.
func sseSession(ctx context.Context, addr string, last int64, got func(int64) bool) ending {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/events", nil)
	if err != nil {
		return ending{at: time.Now(), err: err}
	}
	req.Header.Set("Accept", "text/event-stream")
	if last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(last, 10))
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return ending{at: time.Now(), err: fmt.Errorf("event stream: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ending{at: time.Now(), err: fmt.Errorf("event stream: %s", resp.Status)}
	}
	e := ending{retry: -1}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		field, value, _ := strings.Cut(sc.Text(), ": ")
		switch field {
		case "data":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return ending{at: time.Now(), err: fmt.Errorf("event %q: %w", value, err)}
			}
			if !got(n) {
				return ending{at: time.Now(), byClient: true}
			}
		case "retry":
			if e.retry, err = strconv.Atoi(value); err != nil {
				return ending{at: time.Now(), err: fmt.Errorf("retry %q: %w", value, err)}
			}
		}
	}
	e.at = time.Now()
	if err := sc.Err(); err != nil { // io.ErrUnexpectedEOF: the stream was cut
		e.err = fmt.Errorf("event stream: %w", err)
	}
	return e
}

// A follower follows the sequence on one server until it is sent away,
// then on another, and checks that it misses no number on the way.
type follower struct {
	kind    string
	session session
	next    int64   // the number expected next
	gaps    []int64 // numbers missed or repeated
	lost    int64   // how many numbers were missed
	count   int     // numbers received on the current server
	// resumed is when it connected to the second server.
	resumed time.Time
}

func (f *follower) got(n int64) {
	if n != f.next {
		f.gaps = append(f.gaps, f.next)
	}
	if n > f.next {
		f.lost += n - f.next
	}
	f.next = n + 1
	f.count++
}

// follow follows the sequence on a until a sends it away, on b from then
// until it has had more numbers there, and returns how the sessions on a
// and b ended. It signals on ready once it has had two numbers from a. An event
// stream waits for its retry field's time before it reconnects, as
// EventSource does.
func (f *follower) follow(ctx context.Context, a, b string, more int, ready chan<- struct{}) (onA, onB ending) {
	f.next = 1
	onA = f.session(ctx, a, 0, func(n int64) bool {
		f.got(n)
		if f.count == 2 {
			ready <- struct{}{}
		}
		return true
	})
	if f.count < 2 {
		ready <- struct{}{} // the test finds out from the ending
	}
	if !onA.left() {
		return onA, ending{}
	}
	if onA.retry > 0 {
		t := time.NewTimer(time.Duration(onA.retry) * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	f.count = 0
	f.resumed = time.Now()
	onB = f.session(ctx, b, f.next-1, func(n int64) bool {
		f.got(n)
		return f.count < more
	})
	return onA, onB
}
