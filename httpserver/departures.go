package httpserver

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// Departures returns the departures of the server's long-lived work, which
// [lameduck.Coordinator.Run] spreads over the departure window once the
// drain delay is over (see [lameduck.WithDepartureWindow]): the requests
// that ask for a websocket, or another protocol, with an Upgrade header,
// and those that accept an event stream (Accept: text/event-stream, which
// browsers' EventSource sends). At its turn:
//
//   - An upgraded connection's handler finds [lameduck.Leaving] of its
//     request's context closed, and closes the connection with a code
//     that asks its client to reconnect: 1012 (service restart) for a
//     websocket.
//   - An event stream's request context is canceled, which ends the
//     handlers that stop when their client goes, as event stream handlers
//     do. When the handler returns, the server sends a "retry:" field with
//     a reconnection time between 100 ms and 1 s, so that the clients of
//     streams that end together do not reconnect together, ends the
//     response, and closes the HTTP/1 connection, so that EventSource
//     reconnects, with Last-Event-ID, through the load balancer to another
//     pod.
//
// Other responses, streamed ones included, have no turn: they finish in
// the drain, or are cut at the deadline.
func (s *Server) Departures() *lameduck.Departures { return &s.departures }

// errLeaving is the cause of an event stream's context canceled at its
// turn to leave.
var errLeaving = errors.New("httpserver: the server is shutting down; reconnect to another")

// acceptsEventStream reports whether an Accept header's values name
// text/event-stream.
func acceptsEventStream(accept []string) bool {
	for _, v := range accept {
		if strings.Contains(v, "text/event-stream") {
			return true
		}
	}
	return false
}

// join adds r, a request for a long-lived response, to the departures,
// and returns it with a context that carries its departure.
func (w *writer) join(r *http.Request) *http.Request {
	ctx := r.Context()
	var leave func()
	if len(r.Header["Upgrade"]) == 0 {
		// An event stream: its context ends at its turn.
		ctx, w.cancel = context.WithCancelCause(ctx)
		cancel := w.cancel
		leave = func() { cancel(errLeaving) }
	}
	ctx, w.dep = w.s.departures.Join(ctx, leave)
	r = r.WithContext(ctx)
	w.r = r
	return r
}

// handOver makes the hijacked connection, not the request, hold the
// request's departure: a websocket handler may hand its connection to
// goroutines of its own and return.
func (w *writer) handOver() {
	if w.dep == nil {
		return
	}
	if c, ok := w.r.Context().Value(connKey{}).(*conn); ok {
		w.s.mu.Lock()
		closed := c.closed
		if !closed {
			c.dep = w.dep
		}
		w.s.mu.Unlock()
		if !closed {
			w.dep = nil
		}
	}
}

// leave ends the request's departure as its handler returns: an event
// stream told to leave gets its "retry:" field.
func (w *writer) leave() {
	told := inflight.IsClosed(w.dep.Leaving())
	if told && !w.hijacked && w.committed && isEventStream(w.w.Header()) {
		retry := 100*time.Millisecond + rand.N(900*time.Millisecond)
		var b [32]byte
		line := strconv.AppendInt(append(b[:0], "retry: "...), retry.Milliseconds(), 10)
		line = append(line, "\n\n"...)
		if _, err := w.w.Write(line); err == nil {
			http.NewResponseController(w.w).Flush() //nolint:errcheck // the stream ends anyway
		}
	}
	w.dep.Done()
	if w.cancel != nil {
		w.cancel(nil)
	}
}

// isEventStream reports whether a response header is that of an event
// stream.
func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}
