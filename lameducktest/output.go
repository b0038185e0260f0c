package lameducktest

import (
	"fmt"
	"strings"
	"sync"
)

// Bounds of the pod output kept for the test log: the first lines show how
// the pods started, the last ones how they ended.
const (
	headLines = 200
	tailLines = 1800
)

// podOutput keeps the pods' output, line by line, for the test log: the
// first headLines lines and the last tailLines ones. The engine writes one
// whole line per Write, prefixed with the pod's name.
type podOutput struct {
	mu      sync.Mutex
	head    []string
	tail    []string // a ring once full; next is its oldest line
	next    int
	dropped int
}

func (o *podOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for line := range strings.Lines(string(p)) {
		o.add(strings.TrimSuffix(line, "\n"))
	}
	return len(p), nil
}

func (o *podOutput) add(line string) {
	switch {
	case len(o.head) < headLines:
		o.head = append(o.head, line)
	case len(o.tail) < tailLines:
		o.tail = append(o.tail, line)
	default:
		o.tail[o.next] = line
		o.next = (o.next + 1) % tailLines
		o.dropped++
	}
}

// String returns the lines kept, noting how many were left out.
func (o *podOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.head) == 0 {
		return "(the pods printed nothing)"
	}
	var b strings.Builder
	for _, line := range o.head {
		b.WriteString(line + "\n")
	}
	if o.dropped > 0 {
		fmt.Fprintf(&b, "... %d lines left out ...\n", o.dropped)
	}
	for i := range o.tail {
		b.WriteString(o.tail[(o.next+i)%len(o.tail)] + "\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}
