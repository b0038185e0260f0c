package rollout

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// The long-lived endpoints of the built-in pods, for the websocket and sse
// loads. Each sends a numbered sequence that depends on nothing but where
// the client asks it to start, so that a client resuming on another pod
// loses nothing, and a lost message is a gap in the numbers.
const (
	// WebSocketPath serves a websocket that sends the text messages "N",
	// "N+1", ... from ?from=N (0 without it), one every StreamInterval.
	WebSocketPath = "/ws"
	// EventsPath serves an event stream (server-sent events) whose events
	// have ids and data N+1, N+2, ... after the Last-Event-ID N of the
	// request (from 0 without it), one every StreamInterval.
	EventsPath = "/events"
	// StreamInterval is how often the built-in pods send a message on each
	// websocket or event stream.
	StreamInterval = 10 * time.Millisecond
)

// wsCloseWait bounds how long a pod that closed a websocket waits for its
// client's close frame before it closes the connection.
const wsCloseWait = time.Second

// handleStreams adds the long-lived endpoints to mux. leaving returns the
// channel closed at a websocket's turn to leave, or nil for a server that
// never tells one to leave.
func handleStreams(mux *http.ServeMux, leaving func(r *http.Request) <-chan struct{}) {
	mux.HandleFunc("GET "+WebSocketPath, func(w http.ResponseWriter, r *http.Request) { serveWebSocket(w, r, leaving(r)) })
	mux.HandleFunc("GET "+EventsPath, serveEvents)
}

// serveWebSocket sends the sequence from ?from= until leave is closed, when
// it closes the websocket with 1012 (service restart), or the client
// closes it or goes.
func serveWebSocket(w http.ResponseWriter, r *http.Request, leave <-chan struct{}) {
	from := int64(0)
	if s := r.URL.Query().Get("from"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "from must be a message number", http.StatusBadRequest)
			return
		}
		from = n
	}
	ws, err := acceptWebSocket(w, r)
	if err != nil {
		return
	}
	defer ws.conn.Close()
	// The client's close frame, or the end of its connection.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if op, _, err := ws.readMessage(); err != nil || op == wsClose {
				return
			}
		}
	}()
	tick := time.NewTicker(StreamInterval)
	defer tick.Stop()
	var buf []byte
	for n := from; ; n++ {
		ws.conn.SetWriteDeadline(time.Now().Add(DefaultRequestTimeout))
		if ws.writeFrame(wsText, strconv.AppendInt(buf[:0], n, 10)) != nil {
			return
		}
		select {
		case <-tick.C:
		case <-gone:
			ws.writeClose(wsNormal, "")
			return
		case <-leave:
			ws.writeClose(wsServiceRestart, "service restart")
			// The client answers with its own close frame; the server
			// closes the connection first (RFC 6455, section 7.1.1).
			t := time.NewTimer(wsCloseWait)
			defer t.Stop()
			select {
			case <-gone:
			case <-t.C:
			}
			return
		}
	}
}

// serveEvents streams the events after the request's Last-Event-ID until
// the request's context ends.
func serveEvents(w http.ResponseWriter, r *http.Request) {
	from := int64(0)
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "Last-Event-ID must be a message number", http.StatusBadRequest)
			return
		}
		from = n + 1
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(StreamInterval)
	defer tick.Stop()
	for n := from; ; n++ {
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %d\n\n", n, n); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		}
	}
}
