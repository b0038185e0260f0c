package rollout

import (
	"bytes"
	"io"
	"sync"
)

// logTailLines is how many lines of pod output a run keeps in memory for
// error messages and [Result.PodLog].
const logTailLines = 200

// podLog collects the output of every pod, line by line, each prefixed with
// the pod's name. It keeps the last lines in memory and copies every line to
// an optional sink, so output goes to the caller's log and never to the
// terminal unless the caller asks.
type podLog struct {
	mu    sync.Mutex
	sink  io.Writer
	lines []string // ring of the last logTailLines lines
	start int
}

func (l *podLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sink != nil {
		io.WriteString(l.sink, line+"\n")
	}
	if len(l.lines) < logTailLines {
		l.lines = append(l.lines, line)
		return
	}
	l.lines[l.start] = line
	l.start = (l.start + 1) % len(l.lines)
}

// tail returns the last n lines, oldest first, that start with prefix.
func (l *podLog) tail(prefix string, n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for i := len(l.lines) - 1; i >= 0 && len(out) < n; i-- {
		line := l.lines[(l.start+i)%len(l.lines)]
		if len(line) >= len(prefix) && line[:len(prefix)] == prefix {
			out = append(out, line)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// writer returns an io.Writer for one pod's stdout or stderr that splits
// its output into lines prefixed with "name: ".
func (l *podLog) writer(name string) *lineWriter {
	return &lineWriter{log: l, prefix: name + ": "}
}

// lineWriter buffers a partial line until its newline arrives. exec.Cmd
// copies a pipe with one goroutine per stream, so Write is never called
// concurrently on one lineWriter.
type lineWriter struct {
	log    *podLog
	prefix string
	buf    []byte
	onLine func(string) // called with each line, if set
}

// maxLine bounds a buffered line, so a pod printing without newlines cannot
// grow the buffer without limit.
const maxLine = 4 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) > maxLine {
				w.flush()
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

// Close flushes a last line that had no newline.
func (w *lineWriter) Close() error {
	if len(w.buf) > 0 {
		w.flush()
	}
	return nil
}

func (w *lineWriter) flush() {
	line := string(bytes.TrimRight(w.buf, "\r"))
	if w.onLine != nil {
		w.onLine(line)
	}
	w.log.add(w.prefix + line)
	w.buf = w.buf[:0]
}
