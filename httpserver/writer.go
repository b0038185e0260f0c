package httpserver

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/lameduck/lameduck"
	"github.com/lameduck/lameduck/inflight"
)

// serveHTTP counts the request in flight and hands the handler a
// ResponseWriter that adds "Connection: close" to the response header, when
// it is written, if the server is a lame duck by then.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.tracker.Start(inflight.Request)
	if s.arrivals.Begun() {
		s.arrival(r)
	}
	ww := writerPool.Get().(*writer)
	ww.w, ww.r, ww.s, ww.kind = w, r, s, inflight.Request
	defer ww.finish()
	if len(r.Header["Upgrade"]) > 0 || acceptsEventStream(r.Header["Accept"]) {
		r = ww.join(r)
	}
	if _, ok := w.(http.Hijacker); ok {
		s.handler.ServeHTTP(h1Writer{ww}, r)
	} else {
		s.handler.ServeHTTP(ww, r)
	}
}

// finish runs when the handler returns, or panics.
func (w *writer) finish() {
	// A hijacked connection is the handler's: what net/http had of the
	// response is gone.
	if !w.hijacked {
		// net/http writes the header after the handler returns if the
		// handler did not.
		w.commit()
	}
	if w.dep != nil {
		w.leave()
	}
	if !w.hijacked {
		if !w.askedToLeave && w.kind == inflight.Stream && w.r.ProtoMajor == 1 && w.s.lameDuck.Load() {
			// An event stream whose header went out before the lame duck:
			// the connection leaves with the response.
			if c, ok := w.r.Context().Value(connKey{}).(*conn); ok {
				c.leaveAfterResponse()
			}
		}
		w.s.tracker.Done(w.kind)
	}
	*w = writer{}
	writerPool.Put(w)
}

var (
	writerPool    = sync.Pool{New: func() any { return new(writer) }}
	connectionHdr = []string{"close"} // shared: net/http only reads it
)

// writer wraps a handler's ResponseWriter. Writers are pooled: the fields
// are cleared when the handler returns, so that a handler that keeps its
// ResponseWriter after returning fails loudly instead of writing to another
// request's response.
type writer struct {
	w    http.ResponseWriter
	r    *http.Request
	s    *Server
	kind inflight.Kind // Request, or Stream once flushed
	// committed is set once the header has been written, or is about to be.
	committed bool
	// askedToLeave is set if the lame duck had begun by then: the header
	// carries "Connection: close", or the HTTP/2 connection got a GOAWAY.
	askedToLeave bool
	// hijacked is set once the handler has taken the connection over: from
	// then on the connection is counted instead of the request.
	hijacked bool
	// dep is the request's place among the departures, if it is
	// long-lived (departures.go); cancel ends an event stream's context.
	dep    *lameduck.Departure
	cancel context.CancelCauseFunc
}

// commit is called just before the response header is written.
func (w *writer) commit() {
	if w.committed {
		return
	}
	w.committed = true
	if !w.s.lameDuck.Load() {
		return
	}
	w.askedToLeave = true
	if c, ok := w.r.Context().Value(connKey{}).(*conn); ok && c.h2c != nil {
		c.h2c.goAway()
		return
	}
	w.w.Header()["Connection"] = connectionHdr
}

func (w *writer) Header() http.Header { return w.w.Header() }

func (w *writer) WriteHeader(code int) {
	// An informational (1xx) response does not commit the final header.
	// Nor does a 101 Switching Protocols, after which the handler hijacks
	// the connection, as websocket libraries do: it must carry
	// "Connection: Upgrade" (RFC 9110, section 7.8), and clients that
	// follow RFC 6455 refuse it with "Connection: close".
	if code >= 200 {
		w.commit()
	}
	w.w.WriteHeader(code)
}

func (w *writer) Write(p []byte) (int, error) {
	w.commit()
	return w.w.Write(p)
}

// Flush sends what the handler wrote so far. A flushed response is counted
// as a stream: a long-lived response, such as server-sent events.
func (w *writer) Flush() {
	w.FlushError() //nolint:errcheck // http.Flusher has no error
}

// FlushError is Flush returning the error, for [http.ResponseController].
func (w *writer) FlushError() error {
	w.commit()
	if w.kind == inflight.Request {
		w.s.tracker.Move(inflight.Request, inflight.Stream)
		w.kind = inflight.Stream
	}
	return http.NewResponseController(w.w).Flush()
}

// Unwrap gives [http.ResponseController] the ResponseWriter underneath.
func (w *writer) Unwrap() http.ResponseWriter { return w.w }

// h1Writer is the writer of an HTTP/1 response, which can be hijacked and
// copied into with sendfile. Holding a single pointer, it is stored in an
// interface without allocating.
type h1Writer struct {
	*writer
}

// Hijack takes over the connection, for websockets and the like. From
// then on the connection, not the request, is counted in flight until it is
// closed, and Close closes it at the deadline.
func (w h1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.w).Hijack()
	if err == nil && !w.hijacked {
		// net/http has reported StateHijacked, which counted the
		// connection, before Hijack returned.
		w.hijacked = true
		w.s.tracker.Done(w.kind)
		w.handOver()
	}
	return c, rw, err
}

// ReadFrom lets io.Copy use sendfile, as with net/http's own writer.
func (w h1Writer) ReadFrom(src io.Reader) (int64, error) {
	w.commit()
	if rf, ok := w.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.w}, src)
}

// arrival counts the connection of r as an arrival (see Server.LameDuck)
// if it was accepted during the lame-duck phase, has not been counted yet,
// and r is not a probe.
func (s *Server) arrival(r *http.Request) {
	c, ok := r.Context().Value(connKey{}).(*conn)
	if !ok || !c.arrival.Expected() || s.isProbe(r) {
		return
	}
	s.arrivals.Arrive(&c.arrival)
}

// isProbe reports whether r is a probe, which says nothing about where the
// load balancer routes: a request of the kubelet's probes, or one that the
// server's [http.ServeMux] routes to a probe handler, such as the
// Coordinator's readiness and liveness handlers ([inflight.Prober]).
func (s *Server) isProbe(r *http.Request) bool {
	if inflight.IsProbe(r.UserAgent()) {
		return true
	}
	mux, ok := s.handler.(*http.ServeMux)
	if !ok {
		return false
	}
	h, _ := mux.Handler(r)
	_, probe := h.(inflight.Prober)
	return probe
}
