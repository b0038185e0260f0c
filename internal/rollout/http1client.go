package rollout

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/lameduck/lameduck/lameducktest/record"
)

// DefaultRequestTimeout is the per-request timeout when none is configured.
const DefaultRequestTimeout = 5 * time.Second

// maxHeaders bounds the header lines read per response, so a misbehaving
// server cannot keep a client reading forever within its timeout.
const maxHeaders = 256

// HTTP1Client is a minimal HTTP/1.1 keep-alive client written directly on a
// net.Conn, one connection at a time, for load that does not hide failures.
//
// net/http's client is not used on purpose: its Transport silently retries
// an idempotent request whose reused connection broke before any response
// byte, which is exactly the failure a badly drained server causes, so a
// load generator built on it reports zero failures for servers that do fail
// requests. This client never retries: every error is returned, classified
// as a [Failure] with a [record.Kind].
//
// It sends GET requests, reads the status line, headers and body (framed by
// Content-Length, chunked encoding, or the end of the connection), and
// reuses the connection unless the response says "Connection: close" (or is
// an HTTP/1.0 response without keep-alive). After a failure or a close it
// dials again on the next request.
//
// An HTTP1Client is not safe for concurrent use; use one per worker.
type HTTP1Client struct {
	// Addr is the host:port to dial (the load balancer).
	Addr string
	// Path is the request target; empty means "/".
	Path string
	// Host is the Host header; empty means Addr.
	Host string
	// Timeout bounds each request, from dial (if one is needed) to the last
	// body byte; zero means DefaultRequestTimeout.
	Timeout time.Duration

	conn    net.Conn
	cr      *countReader
	br      *bufio.Reader
	used    bool // the connection has carried a complete response
	request []byte
	// lastLocal is the local address of the last request's connection,
	// or of its dial if that failed.
	lastLocal net.Addr
}

// countReader counts the bytes read from the connection, to tell whether
// any byte of a response arrived before an error.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// aLongTimeAgo is a deadline in the past, to interrupt blocked I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// Get sends one GET request and reads the whole response. It returns the
// status code of a 2xx or 3xx response. Any other outcome is an error: a
// *[Failure] (5xx responses and unexpected statuses included) or, if ctx was
// cancelled, ctx.Err(), which is not a failure of the server.
func (c *HTTP1Client) Get(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	deadline := time.Now().Add(timeout)
	if c.request == nil {
		path, host := c.Path, c.Host
		if path == "" {
			path = "/"
		}
		if host == "" {
			host = c.Addr
		}
		c.request = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lameduck-rollout\r\nAccept: */*\r\n\r\n", path, host)
	}
	if c.conn == nil {
		conn, local, err := dial(ctx, net.Dialer{Deadline: deadline}, "tcp", c.Addr)
		// A failed dial is its own connection, not the one before.
		c.lastLocal = local
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, &Failure{Kind: classifyIOError(err, true, false), Err: fmt.Errorf("dial %s: %w", c.Addr, err)}
		}
		c.conn = conn
		c.cr = &countReader{r: conn}
		c.br = bufio.NewReaderSize(c.cr, 4<<10)
		c.used = false
	}
	conn := c.conn
	c.lastLocal = conn.LocalAddr()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	defer stop()

	fresh := !c.used
	start := c.cr.n - int64(c.br.Buffered())
	status, keep, err := c.roundTrip()
	if err != nil {
		received := c.cr.n > start
		c.drop()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		kind := record.KindOther
		var pe *protocolError
		if !errors.As(err, &pe) {
			kind = classifyIOError(err, fresh, received)
		}
		return 0, &Failure{Kind: kind, Err: err}
	}
	c.used = true
	if !keep {
		c.drop()
	}
	switch {
	case status >= 500:
		return status, &Failure{Kind: record.Kind5xx, Err: fmt.Errorf("status %d", status)}
	case status < 200 || status >= 400:
		return status, &Failure{Kind: record.KindOther, Err: fmt.Errorf("unexpected status %d", status)}
	}
	return status, nil
}

// LocalAddr returns the local address of the connection used by the last
// request (or of its dial, if that failed), or nil before the first. Tests
// use it to tell connections apart, and the load to trace a request to its
// pod.
func (c *HTTP1Client) LocalAddr() net.Addr { return c.lastLocal }

// Close closes the client's connection, if any.
func (c *HTTP1Client) Close() error {
	c.drop()
	return nil
}

func (c *HTTP1Client) drop() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.cr, c.br = nil, nil, nil
	}
}

// classifyIOError classifies a connection-level error. fresh says the
// connection had never carried a complete response; received says some byte
// of the current response had arrived.
func classifyIOError(err error, fresh, received bool) record.Kind {
	switch {
	case isTimeout(err):
		return record.KindTimeout
	case isRefused(err):
		return record.KindRefused
	case isReset(err):
		// A fresh connection reset before any response byte is a pod that
		// refused the load balancer's dial (or dropped the connection from
		// its accept queue): the request never reached a server.
		if fresh && !received {
			return record.KindRefused
		}
		return record.KindReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return record.KindEOF
	}
	return record.KindOther
}

// protocolError is a response that is not valid HTTP/1.x.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "malformed response: " + e.msg }

func protoErr(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// roundTrip writes the request and reads one final response, discarding
// its body. It returns the status and whether the connection may be reused.
func (c *HTTP1Client) roundTrip() (status int, keep bool, err error) {
	if _, err := c.conn.Write(c.request); err != nil {
		return 0, false, fmt.Errorf("write request: %w", err)
	}
	for {
		status, keep, err = c.readResponse()
		if err != nil {
			return 0, false, err
		}
		// Informational responses (100 Continue, 103 Early Hints) precede
		// the real one; 101 would switch protocols, which a GET never asks.
		if status >= 100 && status < 200 && status != 101 {
			continue
		}
		return status, keep, nil
	}
}

func (c *HTTP1Client) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, protoErr("line longer than %d bytes", c.br.Size())
		}
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func (c *HTTP1Client) readResponse() (status int, keep bool, err error) {
	line, err := c.readLine()
	if err != nil {
		return 0, false, fmt.Errorf("read status line: %w", err)
	}
	// "HTTP/1.1 200 OK"
	proto, rest, _ := strings.Cut(string(line), " ")
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return 0, false, protoErr("status line %q is not HTTP/1.x", line)
	}
	code, _, _ := strings.Cut(rest, " ")
	status, err = strconv.Atoi(code)
	if err != nil || len(code) != 3 || status < 100 {
		return 0, false, protoErr("status line %q has no valid status code", line)
	}
	keep = proto == "HTTP/1.1"

	contentLength := int64(-1)
	chunked := false
	for n := 0; ; n++ {
		if n > maxHeaders {
			return 0, false, protoErr("more than %d header lines", maxHeaders)
		}
		line, err := c.readLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, false, fmt.Errorf("read headers: %w", err)
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := strings.Cut(string(line), ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return 0, false, protoErr("header line %q", line)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || (contentLength >= 0 && n != contentLength) {
				return 0, false, protoErr("Content-Length %q", value)
			}
			contentLength = n
		case "transfer-encoding":
			codings := strings.Split(value, ",")
			chunked = strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked")
			if !chunked {
				// Another coding last: the body runs to the end of the
				// connection (RFC 9112, 6.3).
				keep = false
			}
		case "connection":
			for _, tok := range strings.Split(value, ",") {
				tok = strings.TrimSpace(tok)
				switch {
				case strings.EqualFold(tok, "close"):
					keep = false
				case strings.EqualFold(tok, "keep-alive") && proto == "HTTP/1.0":
					keep = true
				}
			}
		}
	}

	switch {
	case status < 200 || status == 204 || status == 304:
		return status, keep, nil
	case chunked:
		return status, keep, c.readChunked()
	case contentLength >= 0:
		if _, err := io.CopyN(io.Discard, c.br, contentLength); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, false, fmt.Errorf("read body (%d bytes): %w", contentLength, err)
		}
		return status, keep, nil
	default:
		// No framing: the body ends when the server closes the connection.
		if _, err := io.Copy(io.Discard, c.br); err != nil {
			return 0, false, fmt.Errorf("read body to EOF: %w", err)
		}
		return status, false, nil
	}
}

func (c *HTTP1Client) readChunked() error {
	for {
		line, err := c.readLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read chunk size: %w", err)
		}
		sizeText, _, _ := strings.Cut(string(line), ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeText), 16, 64)
		if err != nil || size < 0 {
			return protoErr("chunk size line %q", line)
		}
		if size == 0 {
			// Trailers, then the empty line that ends the message.
			for n := 0; ; n++ {
				if n > maxHeaders {
					return protoErr("more than %d trailer lines", maxHeaders)
				}
				line, err := c.readLine()
				if err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					return fmt.Errorf("read trailers: %w", err)
				}
				if len(line) == 0 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(io.Discard, c.br, size); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read chunk (%d bytes): %w", size, err)
		}
		line, err = c.readLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read chunk end: %w", err)
		}
		if len(line) != 0 {
			return protoErr("chunk not followed by CRLF")
		}
	}
}
